"""``python -m fusion_nas``: the same command line as ``fusion-nas``."""

from fusion_nas.cli.app import main

if __name__ == "__main__":
    main()
