"""Datasets for fusion-nas trials, shaped to fit a search space.

:func:`load_dataset` returns train / val / test datasets whose samples have exactly the shape
the search space asks for: ``(channels, L)`` for kind ``"sequence"``, ``(channels, H, W)``
for kind ``"image"`` and ``(channels, T, H, W)`` for kind ``"video"``; a sample's input is
float32 and normalised, its label int64.

Datasets:

- ``mnist1d``: MNIST-1D regenerated offline by ``mnist1d.data.make_dataset()`` with its default
  arguments (the published data): 4000 train / 1000 test sequences of length 40, 1 channel,
  10 classes. Generated once per process and kept in memory.
- ``fashion-mnist``: idx files (``train-images-idx3-ubyte.gz`` ...) from ``data_dir`` or Debian's
  package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``): 60000 train /
  10000 test grey 28x28 images, 10 classes. Any directory holding the same four idx files
  (MNIST, KMNIST) works through ``data_dir``.
- ``digits``: scikit-learn's ``load_digits``: 1797 grey 8x8 images, 10 classes; a fixed,
  stratified 20% of them is the test split.
- ``synthetic``: a small generated task for tests (600 train / 200 test) that fits any kind,
  channels, size and number of classes.
- ``video-glyphs``: procedural video clips for kind ``"video"`` (:mod:`.video`): three moving
  glyphs whose order of appearance is the class (6 classes), 6000 train / 1200 test clips of
  1 channel at the space's ``(T, H, W)`` (default 8 x 16 x 16); a network that averages frames
  is at chance. Generated offline from a fixed seed.
- ``folder:PATH``: images in ``PATH/train/<class>/*.png|jpg|jpeg|bmp`` and optionally
  ``PATH/test/<class>/...``; class names sorted; any size, grey or RGB, any number of files:
  decoded once (in loader workers) into a memory-mapped cache (:mod:`.folder`, :mod:`.cache`).
  With a video space: clips in ``PATH/train/<class>/<clip>``, each a directory of frame images
  or a short video file (``.gif``; ``.mp4`` and others with PyAV), held in memory as float
  (:mod:`.clips`).
- ``cifar10:PATH`` / ``cifar100:PATH``: the python-batches format of CIFAR-10 / CIFAR-100
  (:mod:`.cifar`).

Images are resized (bilinear) to the space's size and converted to its channels (grey
replicated to 3). Every dataset is normalised per channel with the mean/std of its training
data. Image data held as uint8 (Fashion-MNIST at 28x28, folders, CIFAR) stays uint8 and is
normalised per batch on the training device (:class:`~.images.ImageDataset`: bit-identical
numbers, a quarter of the memory); sequences and float data (MNIST-1D, digits, synthetic, a
resized Fashion-MNIST) are normalised once into float32 ``TensorDataset`` s. The validation split
is carved from the training data by a seeded permutation; the test split is never mixed into
train or val.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from fusion_nas.errors import DatasetError, allowed
from fusion_nas.model.space import SearchSpace, parse_space
from fusion_nas.training.data.base import (
    Raw,
    Space,
    check_fraction,
    check_int,
    check_space,
    match_channels,
    normalise_float,
    split_indices,
)
from fusion_nas.training.data.builtin import (
    FASHION_MNIST_DIR,
    IDX_FILES,
    load_digits,
    load_idx_dir,
    load_mnist1d,
    load_synthetic,
    read_idx,
)
from fusion_nas.training.data.cifar import CIFAR_PREFIXES, load_cifar
from fusion_nas.training.data.clips import load_clips
from fusion_nas.training.data.folder import FOLDER_PREFIX, FolderData, decoded_images, load_folder
from fusion_nas.training.data.images import (
    ArrayImages,
    FolderImages,
    ImageDataset,
    concat,
    pixel_stats,
    take,
)
from fusion_nas.training.data.video import VIDEO_GLYPHS, load_video_glyphs

__all__ = [
    "CIFAR_PREFIXES",
    "DATASETS",
    "FASHION_MNIST_DIR",
    "FOLDER_PREFIX",
    "IDX_FILES",
    "NATURAL_PREFIXES",
    "ArrayImages",
    "DataSplits",
    "FolderImages",
    "ImageDataset",
    "concat",
    "dataset_for",
    "decoded_images",
    "is_natural",
    "load_dataset",
    "read_idx",
    "stored_space",
    "take",
]

DATASETS: tuple[str, ...] = ("mnist1d", "fashion-mnist", "digits", "synthetic", VIDEO_GLYPHS)
# Datasets of natural images (photographs): random crop and flip are their default
# augmentation (fusion_nas.training.augment); every other dataset's default is none.
NATURAL_PREFIXES: tuple[str, ...] = (FOLDER_PREFIX, *CIFAR_PREFIXES)


@dataclass(frozen=True)
class DataSplits:
    """Train / validation / test splits of one dataset, shaped for one search space.

    ``train`` and ``val`` both come from the dataset's training data (a search scores on
    ``val``); ``test`` is the dataset's own test split (``None`` if it has none), read only by
    the final retraining. The built-in datasets are ``TensorDataset`` objects of ``(x float32,
    y int64)`` or :class:`~.images.ImageDataset` s (uint8 images normalised per batch; a
    sample read by index is the same normalised float32); a user's own splits may be any torch
    ``Dataset`` of ``(x, y)`` pairs whose ``x`` has the space's input shape, e.g.
    ``DataSplits(train_ds, val_ds, test_ds)``. ``skipped`` counts unreadable image files left
    out of a folder dataset (each logged once).
    """

    train: Dataset
    val: Dataset
    test: Dataset | None = None
    name: str = "custom"  # what the store records as the dataset
    classes: int | None = None  # None: not stated (a user's data); the space's classes rule
    skipped: int = 0


def is_natural(name: str) -> bool:
    """Whether dataset ``name`` holds natural images (``folder:``, ``cifar10:``, ``cifar100:``)."""
    return isinstance(name, str) and name.startswith(NATURAL_PREFIXES)


def load_dataset(
    name: str,
    *,
    kind: str,
    channels: int,
    size: tuple[int, ...],
    classes: int,
    data_dir: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    train_subset: int | None = None,
) -> DataSplits:
    """Load dataset ``name`` shaped for a search space and split it into train / val / test.

    ``kind`` is ``"sequence"`` (``size=(L,)``, x of shape ``(N, channels, L)``), ``"image"``
    (``size=(H, W)``, x of shape ``(N, channels, H, W)``) or ``"video"`` (``size=(T, H, W)``,
    x of shape ``(N, channels, T, H, W)``); ``classes`` must equal the
    dataset's class count. ``data_dir`` is the idx directory for ``fashion-mnist``.
    ``val_fraction`` of the training data (at least one sample), chosen by a permutation seeded
    with ``seed``, becomes ``val``; ``train_subset`` then keeps at most that many samples of
    the rest. Raises :class:`DatasetError` on a bad argument or unreadable data.
    """
    space = check_space(kind, channels, size)
    check_int("classes", classes, minimum=1)
    check_int("seed", seed)
    if train_subset is not None:
        check_int("train_subset", train_subset, minimum=1)
    check_fraction(val_fraction)

    key, loader = _resolve(name, data_dir, classes)
    raw = loader(space)
    if raw.classes != classes:
        raise DatasetError(
            f"dataset '{key}' has {raw.classes} classes but the search space has {classes}; "
            f"set the space's classes to {raw.classes}"
        )
    if isinstance(raw, Raw) and raw.x_train.dtype != torch.uint8:
        return _float_splits(key, raw, space, val_fraction, seed, train_subset)
    images = raw if isinstance(raw, FolderData) else _array_images(raw, space)
    train_idx, val_idx = split_indices(len(images.train), val_fraction, seed, train_subset, key)
    return DataSplits(
        name=key,
        train=images.train.subset(train_idx),
        val=images.train.subset(val_idx),
        test=images.test,
        classes=images.classes,
        skipped=images.skipped,
    )


def _float_splits(
    key: str, raw: Raw, space: Space, val_fraction: float, seed: int, train_subset: int | None
) -> DataSplits:
    """Float data: normalised once, split into ``TensorDataset`` s (as it always was)."""
    x, x_test = normalise_float(raw.x_train, raw.x_test)
    train_idx, val_idx = split_indices(len(raw.y_train), val_fraction, seed, train_subset, key)
    c = space.channels
    train = TensorDataset(match_channels(x[train_idx], c), raw.y_train[train_idx])
    val = TensorDataset(match_channels(x[val_idx], c), raw.y_train[val_idx])
    test = None if x_test is None else TensorDataset(match_channels(x_test, c), raw.y_test)
    return DataSplits(
        name=key, train=train, val=val, test=test, classes=raw.classes, skipped=raw.skipped
    )


def _array_images(raw: Raw, space: Space) -> FolderData:
    """uint8 images in memory as :class:`ArrayImages` with their training statistics."""
    mean, std = pixel_stats(raw.x_train)
    train = ArrayImages(raw.x_train, raw.y_train, mean, std, space.channels, natural=raw.natural)
    test = None
    if raw.x_test is not None and raw.y_test is not None:
        test = ArrayImages(raw.x_test, raw.y_test, mean, std, space.channels, natural=raw.natural)
    return FolderData(train, test, raw.classes, raw.skipped, 0.0)


def _load_folder(path: str, space: Space) -> Raw | FolderData:
    """``folder:PATH``: clips (:mod:`.clips`) for a video space, else images (:mod:`.folder`)."""
    return load_clips(path, space) if space.kind == "video" else load_folder(path, space)


def _resolve(
    name: str, data_dir: str | Path | None, classes: int
) -> tuple[str, Callable[[Space], Raw | FolderData]]:
    """Map a dataset name to its canonical key and a loader taking the space."""
    if isinstance(name, str) and name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX) :]
        return name, functools.partial(_load_folder, path)
    if isinstance(name, str) and name.startswith(CIFAR_PREFIXES):
        prefix, path = name.split(":", 1)
        return name, functools.partial(load_cifar, prefix + ":", path)
    key = name.strip().lower() if isinstance(name, str) else name
    if key == "mnist1d":
        return key, load_mnist1d
    if key == "fashion-mnist":
        return key, functools.partial(load_idx_dir, data_dir)
    if key == "digits":
        return key, load_digits
    if key == "synthetic":
        return key, functools.partial(load_synthetic, classes)
    if key == VIDEO_GLYPHS:
        return key, load_video_glyphs
    forms = (*DATASETS, FOLDER_PREFIX + "PATH", *(p + "PATH" for p in CIFAR_PREFIXES))
    raise DatasetError(f"unknown dataset {name!r}; allowed: {allowed(forms)}")


@functools.lru_cache(maxsize=8)
def stored_space(source: str) -> SearchSpace:
    """The space of a stored TOML source, parsed once per process."""
    return parse_space(source, source="<stored space>")


@functools.lru_cache(maxsize=4)
def dataset_for(
    dataset: str,
    space_source: str,
    data_dir: str | None,
    val_fraction: float,
    seed: int,
    subset: int | None,
) -> DataSplits:
    """Load (once per process) the splits of ``dataset`` shaped for the space."""
    space = stored_space(space_source)
    return load_dataset(
        dataset,
        kind=space.kind,
        channels=space.channels,
        size=space.size,
        classes=space.classes,
        data_dir=data_dir,
        val_fraction=val_fraction,
        seed=seed,
        train_subset=subset,
    )
