"""Output files of the commands: checked before the work, written whole or not at all.

Every command that writes files (``export``, ``retrain``, ``pareto``, ``explain``, ``quantize``)
calls :func:`check_outputs` before it reads or trains anything, so a folder given as a file, an
unwritable place or one path named twice is refused in one line with nothing done; the files are
then written through :func:`atomic_output` (a temporary file renamed over the target), so an
interrupted write leaves the old file or none, never half of one. Imports no torch.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from fusion_nas.errors import OutputError, one_line

__all__ = ["atomic_output", "check_folder", "check_outputs"]


def _nearest_folder(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_folder(folder: Path, flag: str) -> None:
    """Refuse (one line) an output folder that is not a folder or cannot be written, by
    creating and removing a probe file in it (or in its nearest existing ancestor)."""
    folder = Path(folder).expanduser()
    base = _nearest_folder(folder)
    if not base.is_dir():
        raise OutputError(
            f"{flag} {str(folder)!r}: {str(base)!r} is not a folder; allowed: a path in a "
            "writable folder"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".fusion-nas-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(
            f"{flag} {str(folder)!r} cannot be written ({str(base)!r}: "
            f"{exc.strerror or one_line(exc)}); allowed: a path in a writable folder"
        ) from None


def check_outputs(paths: Mapping[str, Path | str | None]) -> None:
    """Refuse (one line), before any work, output files that are folders, lie in a folder
    that cannot be written, or name the same file twice; ``paths`` maps option -> path."""
    seen: dict[str, str] = {}
    for flag, path in paths.items():
        if path is None:
            continue
        p = Path(path).expanduser()
        key = os.path.realpath(p)
        if key in seen:
            raise OutputError(
                f"{flag} {str(p)!r} is the same file as {seen[key]}; allowed: a distinct "
                "path for each output"
            )
        seen[key] = flag
        if p.is_dir():
            raise OutputError(f"{flag} {str(p)!r} is a folder; allowed: a file path")
        check_folder(p.parent, flag)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` if the body succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
