"""The cache of a folder dataset's decoded pixels: one memory-mapped ``.npy`` file.

The file holds every image of the folder (training images first, then test images) decoded
and resized to the space's size, as uint8 ``(N, C, H, W)``; a JSON file beside it holds the
unreadable files' rows and the training images' per-channel statistics, and marks the cache as
complete. Both are named by a key over the folder's path, every file's relative path, size,
modification time and label, and the decoded shape: changing, adding or removing a file, or
asking for another size, makes a new cache.

Where: ``PATH/.fusion-nas-cache/`` next to the data, else (a read-only data folder) the user's
cache directory (``$XDG_CACHE_HOME/fusion-nas/data``, default ``~/.cache/fusion-nas/data``).
``FUSION_NAS_DATA_CACHE`` overrides it: a directory, or ``off`` for no cache (the files are
then decoded whenever they are read). Processes that load the same folder at once build the
cache once: the others wait on a lock file and map what the first wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fusion_nas.errors import one_line

if TYPE_CHECKING:
    from fusion_nas.training.data.folder import Listing

CACHE_ENV = "FUSION_NAS_DATA_CACHE"
CACHE_DIR = ".fusion-nas-cache"
FORMAT = 1  # bump when the file layout or the decoding changes: old caches are then not used

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cached:
    """A complete cache, mapped: ``pixels`` (N, C, H, W) uint8 backed by the file at ``path``."""

    pixels: torch.Tensor
    bad: list[int]  # rows of unreadable files (left zero)
    mean: torch.Tensor  # (1, C, 1, 1) float32
    std: torch.Tensor
    path: Path


def locations(root: Path) -> list[Path]:
    """Where the cache of the folder ``root`` may live, in order of preference."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() == "off":
        return []
    if env:
        return [Path(env).expanduser()]
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [root / CACHE_DIR, user / "fusion-nas" / "data"]


def cache_key(listing: Listing, shape: tuple[int, ...], mode: str) -> str:
    """Hex key over the folder, its files (path, size, mtime, label) and the decoded shape."""
    h = hashlib.sha256()
    root = listing.root.resolve()
    h.update(json.dumps([FORMAT, str(root), list(shape), mode, listing.n_train]).encode())
    for file, label in zip(listing.files, listing.labels.tolist()):
        st = file.stat()
        h.update(
            f"{file.relative_to(listing.root)}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n".encode()
        )
    return h.hexdigest()[:32]


def map_pixels(path: Path) -> torch.Tensor:
    """The cache file's pixels, memory-mapped (copy-on-write: the file is never changed)."""
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def _open(directory: Path, key: str, n: int) -> Cached | None:
    meta_path = directory / f"{key}.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        path = directory / f"{key}.npy"
        pixels = map_pixels(path)
        if meta.get("format") != FORMAT or len(pixels) != n:
            return None
        c = pixels.shape[1]
        mean = torch.tensor(meta["mean"], dtype=torch.float32).reshape(1, c, 1, 1)
        std = torch.tensor(meta["std"], dtype=torch.float32).reshape(1, c, 1, 1)
        return Cached(pixels, [int(i) for i in meta["bad"]], mean, std, path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignored the unreadable data cache '%s': %s", meta_path, one_line(e))
        return None


def _writable(directory: Path, need: int) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    if not os.access(directory, os.W_OK):
        return False
    return shutil.disk_usage(directory).free > need + 2**26  # room for it, and 64 MiB to spare


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) while the block runs."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(
    directory: Path, key: str, listing: Listing, shape: tuple[int, ...], mode: str, workers: int
) -> Cached:
    from fusion_nas.training.data.folder import ChannelSums, decode_all

    n = len(listing.files)
    final = directory / f"{key}.npy"
    tmp = directory / f"{key}.{os.getpid()}.tmp.npy"
    sums = ChannelSums(shape[0])
    try:
        # the header only; the rows are written with pwrite, not through a mapping, so the
        # pages written count in the page cache and not in this process's memory
        header = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *shape))
        offset = header.offset
        del header
        row = math.prod(shape)
        fd = os.open(tmp, os.O_RDWR)
        try:

            def write(i: int, x: np.ndarray) -> None:
                os.pwrite(fd, x.tobytes(), offset + i * row)
                if i < listing.n_train:
                    sums.add(x)

            bad = decode_all(listing.files, mode, (shape[1], shape[2]), write, workers)
            os.fsync(fd)
        finally:
            os.close(fd)
        mean, std = sums.stats()
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {
        "format": FORMAT,
        "root": str(listing.root.resolve()),
        "shape": [n, *shape],
        "bad": bad,
        "mean": mean.flatten().tolist(),
        "std": std.flatten().tolist(),
    }
    meta_tmp = directory / f"{key}.{os.getpid()}.tmp.json"
    meta_tmp.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(meta_tmp, directory / f"{key}.json")  # last: its presence marks the cache complete
    log.info("cached %d decoded images in '%s'", n, final)
    return Cached(map_pixels(final), bad, mean, std, final)


def open_or_build(
    listing: Listing, shape: tuple[int, ...], mode: str, workers: int
) -> Cached | None:
    """The cache of ``listing`` decoded to ``shape`` (C, H, W): opened if it exists, else
    built in the first writable location; ``None`` when caching is off or nowhere fits."""
    dirs = locations(listing.root)
    if not dirs:
        return None
    n = len(listing.files)
    key = cache_key(listing, shape, mode)
    for directory in dirs:
        found = _open(directory, key, n)
        if found is not None:
            return found
    need = n * math.prod(shape)
    for directory in dirs:
        if not _writable(directory, need):
            continue
        try:
            with _locked(directory / f"{key}.lock"):
                found = _open(directory, key, n)  # built by another process meanwhile
                return (
                    found
                    if found is not None
                    else _build(directory, key, listing, shape, mode, workers)
                )
        except OSError as e:
            log.warning("cannot write the data cache in '%s': %s", directory, one_line(e))
    log.warning(
        "no place to cache the decoded images of '%s' (%s); they are decoded on every read",
        listing.root,
        ", ".join(map(str, dirs)),
    )
    return None
