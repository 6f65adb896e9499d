"""The ``fusion-nas`` command line (typer): :mod:`~fusion_nas.cli.app` builds it from one module
per command group. It sits on top of the layers, beside :mod:`fusion_nas.web`."""
