"""``folder:PATH``: images in ``PATH/train/<class>/*`` (and optionally ``PATH/test/<class>/*``).

Every image is decoded once, resized to the space's size and kept as uint8. By default the
decoded pixels go into one memory-mapped cache file (:mod:`.cache`), so later trials and later
processes read no image file at all; without a cache (``FUSION_NAS_DATA_CACHE=off``, or nowhere
writable) the files are decoded again whenever they are read, in ``DataLoader`` workers.

The first pass (decoding every file, in loader workers) also computes the per-channel
statistics of the training images and finds unreadable files: each is skipped with one logged
line and counted (``DataSplits.skipped``). A class folder without images, or an image over
:data:`MAX_IMAGE_PIXELS`, is an error.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fusion_nas.errors import DatasetError, allowed, one_line
from fusion_nas.training.data import cache
from fusion_nas.training.data.base import Space, resize_uint8
from fusion_nas.training.data.images import ArrayImages, FolderImages, ImageDataset

FOLDER_PREFIX = "folder:"
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")
MAX_IMAGE_PIXELS = 2**26  # pixels of one image file of a folder dataset (8192 x 8192)
WORKERS_ENV = "FUSION_NAS_DATA_WORKERS"  # loader workers that decode images (default below)
_DECODE_BATCH = 64  # files per batch of the decoding pass
_PARALLEL_FROM = 512  # fewer files than this are decoded in this process (no workers to start)

log = logging.getLogger(__name__)
_decoded = 0  # image files decoded by this process's loads (what the benchmarks count)


class UnreadableImage(Exception):
    """An image file Pillow cannot decode (it is skipped, not fatal)."""


def decoded_images() -> int:
    """Image files decoded so far by folder loads in this process (and their loader workers)."""
    return _decoded


def decode(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """Decode one image file to uint8 ``(C, H, W)`` at ``size`` (``mode``: ``"L"`` or ``"RGB"``).

    Raises :class:`UnreadableImage` for a file Pillow cannot read, :class:`DatasetError` for
    one that is too large.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # the size is checked below, before decoding
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise DatasetError(
                    f"image '{path}' is {w}x{h} ({w * h:,} pixels), too large; "
                    f"allowed: at most {MAX_IMAGE_PIXELS:,} pixels"
                )
            pixels = np.array(img.convert(mode), dtype=np.uint8)  # a writable copy
    except Image.DecompressionBombError:  # past Pillow's own limit: not even opened
        raise DatasetError(
            f"image '{path}' is too large (over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} "
            f"pixels); allowed: at most {MAX_IMAGE_PIXELS:,} pixels"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise UnreadableImage(one_line(e, typed=False)) from e
    x = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, H, W)
    if x.shape[1:] != tuple(size):
        x = resize_uint8(torch.from_numpy(np.ascontiguousarray(x))[None], size)[0].numpy()
    return np.ascontiguousarray(x)


def class_dirs(directory: Path) -> list[str]:
    """The class folders of ``directory``, sorted by name (hidden ones left out)."""
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(class_dir: Path) -> list[Path]:
    """The image files of one class folder, sorted."""
    return sorted(
        p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


@dataclass(frozen=True)
class Listing:
    """The files of a folder dataset: training files first, then test files."""

    root: Path
    classes: list[str]
    files: list[Path]
    labels: np.ndarray  # (N,) int64
    n_train: int


def class_trees(path: str, item: str = "*.png") -> tuple[Path, list[str], list[Path]]:
    """The root, the class names (sorted) and the split folders (``train``, and ``test`` when
    present) of the folder dataset at ``path``; one line if its layout is wrong. ``item``
    names what a class folder holds, in the messages (``*.png``, ``<clip>``)."""
    if not path:
        raise DatasetError("dataset 'folder:' needs a path, e.g. 'folder:/data/shapes'")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"folder dataset path '{root}' does not exist or is not a directory")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DatasetError(
            f"folder dataset '{root}' has no train/ folder; expected PATH/train/<class>/{item} "
            f"and optionally PATH/test/<class>/{item}"
        )
    classes = class_dirs(train_dir)
    if not classes:
        raise DatasetError(
            f"folder dataset '{train_dir}' has no class folders; expected train/<class>/{item}"
        )
    test_dir = root / "test"
    trees = [train_dir]
    if test_dir.is_dir():
        test_names = class_dirs(test_dir)
        if test_names != classes:
            raise DatasetError(
                f"folder dataset '{root}': test classes [{allowed(test_names)}] do not match "
                f"train classes [{allowed(classes)}]"
            )
        trees.append(test_dir)
    return root, classes, trees


def list_folder(path: str, space: Space) -> Listing:
    """Check the folder's layout against ``space`` and list its images (nothing decoded)."""
    name = FOLDER_PREFIX + path
    if not path:
        raise DatasetError("dataset 'folder:' needs a path, e.g. 'folder:/data/shapes'")
    if space.kind != "image":
        raise DatasetError(
            f"dataset '{name}' holds images but the search space is kind '{space.kind}'; "
            "use an image space (kind 'image', size (H, W))"
        )
    if space.channels not in (1, 3):
        raise DatasetError(
            f"dataset '{name}' reads grey or RGB images but the search space has "
            f"{space.channels} channels; allowed: 1, 3"
        )
    root, classes, trees = class_trees(path)
    train_dir = trees[0]
    files: list[Path] = []
    labels: list[int] = []
    n_train = 0
    for tree in trees:
        for label, class_name in enumerate(classes):
            found = image_files(tree / class_name)
            if not found:
                raise DatasetError(
                    f"class folder '{tree / class_name}' holds no images; allowed suffixes: "
                    f"{allowed(IMAGE_SUFFIXES)}"
                )
            files += found
            labels += [label] * len(found)
        if tree is train_dir:
            n_train = len(files)
    return Listing(root, classes, files, np.asarray(labels, dtype=np.int64), n_train)


def decode_workers(n_files: int) -> int:
    """Loader workers for decoding ``n_files`` files: ``$FUSION_NAS_DATA_WORKERS``, else up to
    4 (one per core); none for a few files, or inside a daemonic process (a pool's worker),
    which may not start processes."""
    if multiprocessing.current_process().daemon:
        return 0
    raw = os.environ.get(WORKERS_ENV)
    if raw:
        try:
            return max(0, int(raw))
        except ValueError:
            raise DatasetError(f"{WORKERS_ENV}={raw!r} must be a whole number >= 0") from None
    if n_files < _PARALLEL_FROM:
        return 0
    return min(4, os.cpu_count() or 1)


class _DecodeFiles(Dataset):
    """Files decoded for the first pass: ``(index, pixels or None, error or None)``."""

    def __init__(self, files: list[Path], mode: str, size: tuple[int, int]) -> None:
        self.files, self.mode, self.size = files, mode, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return i, decode(self.files[i], self.mode, self.size), None
        except UnreadableImage as e:
            return i, None, str(e)
        except DatasetError as e:  # too large: fatal, raised again in the main process
            return i, None, f"!{e}"


def _keep(batch: list) -> list:
    return batch


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # each worker decodes one file at a time; no thread oversubscription


def decode_all(
    files: list[Path],
    mode: str,
    size: tuple[int, int],
    write: Callable[[int, np.ndarray], None] | None,
    workers: int,
) -> list[int]:
    """Decode every file (in ``workers`` loader workers), hand each image to ``write(i, x)``;
    return the indices of unreadable files (each logged in one line)."""
    global _decoded
    loader = DataLoader(
        _DecodeFiles(files, mode, size),
        batch_size=_DECODE_BATCH,
        num_workers=workers,
        collate_fn=_keep,
        worker_init_fn=_one_thread if workers else None,
    )
    bad: list[int] = []
    for batch in loader:
        for i, x, error in batch:
            if error is not None and error.startswith("!"):
                raise DatasetError(error[1:])
            if x is None:
                log.warning("skipped unreadable image '%s': %s", files[i], error)
                bad.append(i)
                continue
            _decoded += 1
            if write is not None:
                write(i, x)
    return bad


class ChannelSums:
    """Per-channel mean and std of uint8 images added one by one (float64 sums)."""

    def __init__(self, channels: int) -> None:
        self.total = torch.zeros(channels, dtype=torch.float64)
        self.squares = torch.zeros(channels, dtype=torch.float64)
        self.values = 0  # per channel

    def add(self, x: np.ndarray) -> None:
        """Add one image, uint8 ``(C, H, W)``."""
        part = torch.from_numpy(x).to(torch.float64)  # (C, H, W) in 0..255
        self.total.add_(part.sum(dim=(1, 2)))
        self.squares.add_(part.square().sum(dim=(1, 2)))
        self.values += x.shape[1] * x.shape[2]

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` of the images / 255, each ``(1, C, 1, 1)`` float32 (unbiased std)."""
        count = max(1, self.values)
        mean = self.total / count
        var = (self.squares - count * mean.square()).clamp_min(0) / max(1, count - 1)
        shape = (1, len(mean), 1, 1)
        return (
            (mean / 255.0).float().reshape(shape),
            (var.sqrt() / 255.0).float().reshape(shape).clamp_min(1e-6),
        )


@dataclass(frozen=True)
class FolderData:
    """A folder dataset's training and test images, before the validation split."""

    train: ImageDataset
    test: ImageDataset | None
    classes: int
    skipped: int
    seconds: float  # listing, and decoding or mapping the cache


def load_folder(path: str, space: Space) -> FolderData:
    """The folder dataset at ``path`` shaped for ``space`` (see the module's docstring)."""
    start = time.perf_counter()
    listing = list_folder(path, space)
    mode = "L" if space.channels == 1 else "RGB"
    c = 1 if mode == "L" else 3
    size = (space.size[0], space.size[1])
    workers = decode_workers(len(listing.files))
    stored = cache.open_or_build(listing, (c, *size), mode, workers)
    n_train = listing.n_train
    labels = torch.from_numpy(listing.labels)
    if stored is not None:
        pixels, bad, mean, std = stored.pixels, stored.bad, stored.mean, stored.std
        keep = np.ones(len(listing.files), dtype=bool)
        keep[bad] = False
        rows = torch.from_numpy(np.flatnonzero(keep))
        train_rows, test_rows = rows[rows < n_train], rows[rows >= n_train]
        skipped = len(bad)

        def part(r: torch.Tensor) -> ArrayImages:
            return ArrayImages(
                pixels,
                labels,
                mean,
                std,
                space.channels,
                r,
                natural=True,
                skipped=skipped,
                source=str(stored.path),
            )

        train: ImageDataset = part(train_rows)
        test: ImageDataset | None = part(test_rows) if len(listing.files) > n_train else None
    else:
        train_files = listing.files[:n_train]
        sums = ChannelSums(c)
        bad_train = decode_all(train_files, mode, size, lambda _, x: sums.add(x), workers)
        mean, std = sums.stats()
        bad_test = decode_all(listing.files[n_train:], mode, size, None, workers)
        skipped = len(bad_train) + len(bad_test)

        def files_of(offset: int, files: list[Path], bad: list[int]) -> FolderImages:
            drop = set(bad)
            idx = [i for i in range(len(files)) if i not in drop]
            return FolderImages(
                [str(files[i]) for i in idx],
                labels[[offset + i for i in idx]],
                mode,
                size,
                mean,
                std,
                space.channels,
                skipped=skipped,
                workers=workers,
            )

        train = files_of(0, train_files, bad_train)
        test_files = listing.files[n_train:]
        test = files_of(n_train, test_files, bad_test) if test_files else None
    if skipped:
        log.warning("folder dataset '%s': %d unreadable image(s) skipped", listing.root, skipped)
    return FolderData(train, test, len(listing.classes), skipped, time.perf_counter() - start)
