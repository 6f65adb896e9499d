"""Datasets for fusion-nas trials, shaped to fit a search space.

:func:`load_dataset` returns train / val / test :class:`~torch.utils.data.TensorDataset` s whose
inputs have exactly the shape the search space asks for: ``(N, channels, L)`` for kind
``"sequence"`` and ``(N, channels, H, W)`` for kind ``"image"``; inputs are float32, labels int64.

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
- ``folder:PATH``: images in ``PATH/train/<class>/*.png|jpg|jpeg|bmp`` and optionally
  ``PATH/test/<class>/...``; class names sorted; any size, grey or RGB.

Images are scaled to [0, 1], resized (bilinear) to the space's size and converted to its
channels (grey replicated to 3). Every dataset is then normalised per channel with the mean/std
of its training data. The validation split is carved from the training data by a seeded
permutation; the test split is never mixed into train or val.
"""

from __future__ import annotations

import functools
import gzip
import math
import numbers
import os
import random
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from fusion_nas.errors import DatasetError, allowed, one_line
from fusion_nas.model.space import SearchSpace, parse_space

__all__ = ["DATASETS", "DataSplits", "load_dataset", "read_idx"]

DATASETS: tuple[str, ...] = ("mnist1d", "fashion-mnist", "digits", "synthetic")
KINDS: tuple[str, ...] = ("sequence", "image")
FOLDER_PREFIX = "folder:"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")

# idx type code (third magic byte) -> big-endian numpy dtype
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_MNIST1D_LENGTH = 40
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_TEST_SEED = 0  # fixed: the digits test split must never change with the `seed` argument
_SYNTHETIC_TRAIN, _SYNTHETIC_TEST = 600, 200
_SYNTHETIC_SEED = 20240917  # fixed: the synthetic task is the same in every process
# Bytes per input value at the peak of loading: float32 held about four times (raw, normalised,
# split); generating the synthetic task also holds float64 noise and (N, H, W) temporaries.
_BYTES_PER_VALUE = 16
_SYNTHETIC_BYTES_PER_VALUE = 48
MAX_IMAGE_PIXELS = 2**26  # pixels of one image file of a folder dataset (8192 x 8192)


@dataclass(frozen=True)
class DataSplits:
    """Train / validation / test splits of one dataset, shaped for one search space.

    ``train`` and ``val`` both come from the dataset's training data (a search scores on
    ``val``); ``test`` is the dataset's own test split (``None`` if it has none), read only by
    the final retraining. The built-in datasets are ``TensorDataset`` objects of ``(x float32,
    y int64)``; a user's own splits may be any torch ``Dataset`` of ``(x, y)`` pairs whose ``x``
    has the space's input shape, e.g. ``DataSplits(train_ds, val_ds, test_ds)``.
    """

    train: Dataset
    val: Dataset
    test: Dataset | None = None
    name: str = "custom"  # what the store records as the dataset
    classes: int | None = None  # None: not stated (a user's data); the space's classes rule


@dataclass(frozen=True)
class _Space:
    """The input a search space expects: ``kind``, ``channels`` and ``size`` (L,) or (H, W)."""

    kind: str
    channels: int
    size: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.kind} space with {self.channels} channel(s) and size {self.size}"


@dataclass(frozen=True)
class _Raw:
    """A dataset already in the space's shape but not yet normalised or split."""

    x_train: torch.Tensor  # (N, C, *size) float32; C may be 1 for grey images in a 3-channel space
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    classes: int


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

    ``kind`` is ``"sequence"`` (``size=(L,)``, x of shape ``(N, channels, L)``) or ``"image"``
    (``size=(H, W)``, x of shape ``(N, channels, H, W)``); ``classes`` must equal the
    dataset's class count. ``data_dir`` is the idx directory for ``fashion-mnist``.
    ``val_fraction`` of the training data (at least one sample), chosen by a permutation seeded
    with ``seed``, becomes ``val``; ``train_subset`` then keeps at most that many samples of
    the rest. Raises :class:`DatasetError` on a bad argument or unreadable data.
    """
    space = _check_space(kind, channels, size)
    _check_int("classes", classes, minimum=1)
    _check_int("seed", seed)
    if train_subset is not None:
        _check_int("train_subset", train_subset, minimum=1)
    if isinstance(val_fraction, bool) or not (
        isinstance(val_fraction, numbers.Real) and 0 < val_fraction < 1
    ):
        raise DatasetError(f"val_fraction {val_fraction!r} is out of range; it must be > 0 and < 1")

    key, loader = _resolve(name, data_dir, classes)
    raw = loader(space)
    if raw.classes != classes:
        raise DatasetError(
            f"dataset '{key}' has {raw.classes} classes but the search space has {classes}; "
            f"set the space's classes to {raw.classes}"
        )
    x, x_test = _normalise(raw.x_train, raw.x_test)
    train_idx, val_idx = _split_indices(len(raw.y_train), val_fraction, seed, train_subset, key)
    c = space.channels
    train = TensorDataset(_match_channels(x[train_idx], c), raw.y_train[train_idx])
    val = TensorDataset(_match_channels(x[val_idx], c), raw.y_train[val_idx])
    test = None if x_test is None else TensorDataset(_match_channels(x_test, c), raw.y_test)
    return DataSplits(name=key, train=train, val=val, test=test, classes=raw.classes)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (MNIST format, optionally ``.gz``) into a native-endian numpy array.

    Raises :class:`DatasetError` if the file is missing, not gzip, has a bad magic number or its
    size does not match its header.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"idx file '{path}' not found") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"cannot read idx file '{path}': {one_line(e, typed=False)}") from e

    # magic: 0x00 0x00 <type code> <number of dimensions>, then one big-endian uint32 per dim
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetError(
            f"idx file '{path}' is corrupt: bad magic number 0x{data[:4].hex()}; expected "
            f"0x0000TTDD with type code TT in {allowed(f'{t:02x}' for t in _IDX_DTYPES)}"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DatasetError(f"idx file '{path}' is corrupt: truncated header ({ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = math.prod(dims)
    if len(data) - header != count * dtype.itemsize:
        raise DatasetError(
            f"idx file '{path}' is corrupt: {len(data) - header} data bytes but its header "
            f"(shape {dims}, {dtype.itemsize}-byte items) needs {count * dtype.itemsize}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # copy: writable and native-endian


# ---------------------------------------------------------------------------------------------
# argument checks and dispatch


def _check_int(what: str, value: object, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DatasetError(f"{what} {value!r} is not an integer")
    if minimum is not None and value < minimum:
        raise DatasetError(f"{what} {value!r} is too small; it must be >= {minimum}")


def _check_space(kind: str, channels: int, size: tuple[int, ...]) -> _Space:
    if kind not in KINDS:
        raise DatasetError(f"kind {kind!r} is not allowed; allowed: {allowed(KINDS)}")
    _check_int("channels", channels, minimum=1)
    dims = 1 if kind == "sequence" else 2
    try:
        size = tuple(size)
    except TypeError:
        size = (size,)
    if len(size) != dims or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in size
    ):
        shape = "(L,)" if kind == "sequence" else "(H, W)"
        raise DatasetError(
            f"size {size!r} does not fit kind '{kind}'; it needs {dims} positive integer(s) {shape}"
        )
    return _Space(kind, int(channels), tuple(int(s) for s in size))


def _resolve(
    name: str, data_dir: str | Path | None, classes: int
) -> tuple[str, Callable[[_Space], _Raw]]:
    """Map a dataset name to its canonical key and a loader taking the space."""
    if isinstance(name, str) and name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX) :]
        return name, functools.partial(_load_folder, path)
    key = name.strip().lower() if isinstance(name, str) else name
    if key == "mnist1d":
        return key, _load_mnist1d
    if key == "fashion-mnist":
        return key, functools.partial(_load_idx_dir, data_dir)
    if key == "digits":
        return key, _load_digits
    if key == "synthetic":
        return key, functools.partial(_load_synthetic, classes)
    raise DatasetError(
        f"unknown dataset {name!r}; allowed: {allowed((*DATASETS, FOLDER_PREFIX + 'PATH'))}"
    )


# ---------------------------------------------------------------------------------------------
# shared shaping, normalisation and splitting


def _fit_images(x: torch.Tensor, space: _Space, name: str) -> torch.Tensor:
    """Resize images ``(N, C, H0, W0)`` in [0, 1] to the space's size.

    Grey images stay 1-channel here even for a 3-channel space: :func:`_match_channels`
    replicates them after normalising and splitting, which is 3x cheaper on 60k images.
    """
    n, c, h, w = x.shape
    if space.kind != "image":
        raise DatasetError(
            f"dataset '{name}' holds {h}x{w} images but the search space is kind "
            f"'{space.kind}'; use an image space (kind 'image', size (H, W))"
        )
    _check_fits(name, n, space)  # before resizing to the space's size
    if c != space.channels and not (c == 1 and space.channels == 3):
        raise DatasetError(
            f"dataset '{name}' holds {c}-channel images but the search space has "
            f"{space.channels} channels; allowed: {allowed((c, 3) if c == 1 else (c,))}"
        )
    if (h, w) != space.size and n > 0:
        x = _resize(x, space.size)
    return x.contiguous()


def _memory_bytes() -> int:
    """Physical memory of this machine (what loading a dataset may use at most)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not POSIX: no bound
        return 2**62


def _check_fits(name: str, n: int, space: _Space, per_value: int = _BYTES_PER_VALUE) -> None:
    """Refuse ``n`` samples shaped for ``space`` that would not fit in memory (before loading)."""
    need = n * space.channels * math.prod(space.size) * per_value
    have = _memory_bytes()
    if need > have:
        raise DatasetError(
            f"dataset '{name}' shaped for the {space.describe()} needs about "
            f"{need / 2**30:,.1f} GiB to load {n:,} samples; this machine has "
            f"{have / 2**30:,.1f} GiB; allowed: a smaller input size or fewer channels"
        )


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` to ``size``; antialiased only when shrinking."""
    # without antialias, shrinking aliases badly; when enlarging it changes nothing but is slower
    shrink = size[0] < x.shape[2] or size[1] < x.shape[3]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Replicate grey ``(N, 1, ...)`` to ``(N, channels, ...)``; other tensors pass unchanged."""
    if x.shape[1] == channels:
        return x
    return x.expand(-1, channels, *x.shape[2:]).contiguous()


def _normalise(
    x_train: torch.Tensor, x_test: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-channel standardisation with the training data's statistics.

    Works in place on the loaders' fresh tensors. The statistics come from all the training
    data (before the val split) so they do not depend on ``seed``; the test split never
    contributes.
    """
    dims = [0, *range(2, x_train.ndim)]  # every dim but channels
    std, mean = torch.std_mean(x_train, dim=dims, keepdim=True)  # (1, C, 1[, 1])
    std = std.clamp_min(1e-6)  # a constant channel stays finite
    # in place: the loaders hand over fresh tensors, and 60k images make copies costly
    if x_test is not None:
        x_test.sub_(mean).div_(std)
    return x_train.sub_(mean).div_(std), x_test


def _split_indices(
    n: int, val_fraction: float, seed: int, train_subset: int | None, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded permutation of the n training rows: the first ``n_val`` are val, the rest train."""
    if n < 2:
        raise DatasetError(
            f"dataset '{name}' has {n} training sample(s); it needs at least 2 (train and val)"
        )
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    # numpy's seeded Generator: the same split on every platform and torch version
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    train_idx, val_idx = perm[n_val:], perm[:n_val]
    if train_subset is not None:
        train_idx = train_idx[:train_subset]  # after the split: val does not change
    return train_idx, val_idx


# ---------------------------------------------------------------------------------------------
# mnist1d


@functools.cache
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Regenerate the published MNIST-1D data once per process: (x, y, x_test, y_test)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise DatasetError(
            f"dataset 'mnist1d' needs the mnist1d package ({one_line(e, typed=False)}); "
            "install it with 'pip install mnist1d'"
        ) from e
    # make_dataset generates (never downloads) but reseeds the global `random` and `numpy.random`
    # generators; put them back so loading data does not change other code's randomness
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = (
        np.asarray(data["x"], dtype=np.float32),  # (4000, 40)
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float32),  # (1000, 40)
        np.asarray(data["y_test"], dtype=np.int64),
    )
    for a in arrays:
        a.setflags(write=False)  # shared by every call
    return arrays


def _load_mnist1d(space: _Space) -> _Raw:
    if space.kind != "sequence" or space.channels != 1 or space.size != (_MNIST1D_LENGTH,):
        raise DatasetError(
            f"dataset 'mnist1d' is 1-D sequences of length {_MNIST1D_LENGTH} with 1 channel but "
            f"the search space is a {space.describe()}; use kind 'sequence', channels 1, "
            f"size ({_MNIST1D_LENGTH},)"
        )
    x, y, x_test, y_test = _mnist1d_arrays()
    return _Raw(
        x_train=torch.tensor(x).unsqueeze(1),  # (4000, 1, 40)
        y_train=torch.tensor(y),
        x_test=torch.tensor(x_test).unsqueeze(1),  # (1000, 1, 40)
        y_test=torch.tensor(y_test),
        classes=10,
    )


# ---------------------------------------------------------------------------------------------
# fashion-mnist and other idx directories


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """:func:`read_idx` kept in memory per file version (mtime and size are the cache key)."""
    array = read_idx(path)
    array.setflags(write=False)
    return array


def _idx_file(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"fashion-mnist file '{stem}.gz' is missing in '{directory}'; install Debian's package "
        f"with 'apt-get install dataset-fashion-mnist' or pass --data-dir DIR holding "
        f"{allowed(f'{s}.gz' for s in IDX_FILES)}"
    )


def _load_idx_dir(data_dir: str | Path | None, space: _Space) -> _Raw:
    directory = FASHION_MNIST_DIR if data_dir is None else Path(data_dir).expanduser()
    arrays = []
    for stem in IDX_FILES:
        path = _idx_file(directory, stem)
        stat = path.stat()
        arrays.append(_read_idx_cached(str(path), stat.st_mtime_ns, stat.st_size))
    x, y, x_test, y_test = arrays
    for images, labels, split in ((x, y, "train"), (x_test, y_test, "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"idx files for split '{split}' in '{directory}' do not match: images of shape "
                f"{images.shape} (need (N, H, W)), labels of shape {labels.shape} (need (N,))"
            )
    if len(y) == 0 or y.min() < 0 or (len(y_test) and y_test.min() < 0):
        raise DatasetError(f"idx labels in '{directory}' are empty or negative")
    classes = int(max(y.max(), y_test.max(initial=0))) + 1
    scale = 255.0 if x.dtype == np.uint8 else 1.0  # uint8 pixels -> [0, 1]
    return _Raw(
        x_train=_fit_images(
            torch.tensor(x, dtype=torch.float32)[:, None] / scale, space, "fashion-mnist"
        ),
        y_train=torch.tensor(y, dtype=torch.int64),
        x_test=_fit_images(
            torch.tensor(x_test, dtype=torch.float32)[:, None] / scale, space, "fashion-mnist"
        ),
        y_test=torch.tensor(y_test, dtype=torch.int64),
        classes=classes,
    )


# ---------------------------------------------------------------------------------------------
# digits


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits with a fixed stratified test split: (x, y, x_test, y_test)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetError(
            f"dataset 'digits' needs scikit-learn ({one_line(e, typed=False)}); "
            "install it with 'pip install scikit-learn'"
        ) from e
    x, y = load_digits(return_X_y=True)  # (1797, 64) values 0..16, (1797,)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = y.astype(np.int64)
    # stratified hold-out done here (not sklearn's splitter) so it cannot drift between versions
    rng = np.random.default_rng(_DIGITS_TEST_SEED)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        test[rng.permutation(members)[: round(_DIGITS_TEST_FRACTION * len(members))]] = True
    arrays = (x[~test], y[~test], x[test], y[test])
    for a in arrays:
        a.setflags(write=False)
    return arrays


def _load_digits(space: _Space) -> _Raw:
    x, y, x_test, y_test = _digits_arrays()
    return _Raw(
        x_train=_fit_images(torch.tensor(x), space, "digits"),  # (1437, C, H, W)
        y_train=torch.tensor(y),
        x_test=_fit_images(torch.tensor(x_test), space, "digits"),  # (360, C, H, W)
        y_test=torch.tensor(y_test),
        classes=10,
    )


# ---------------------------------------------------------------------------------------------
# synthetic


def _synthetic_sequences(
    rng: np.random.Generator, y: np.ndarray, channels: int, length: int, classes: int
) -> np.ndarray:
    """Class c: a bump centred near (c + 0.5) / classes plus a sinusoid of 1 + c % 3 cycles.

    Bump positions jitter into the neighbouring classes' range and the sinusoid is shared by
    every third class, so neither cue alone separates the classes; noise is iid Gaussian.
    """
    n = len(y)
    t = np.linspace(0.0, 1.0, length, dtype=np.float32)  # (L,)
    centre = (y + 0.5) / classes + rng.normal(0.0, 0.3 / classes, n)  # (N,)
    width = max(0.06, 1.0 / length)
    bump = np.exp(-0.5 * ((t - centre[:, None]) / width) ** 2)  # (N, L)
    cycles = 1 + (y % 3)
    phase = rng.uniform(0.0, 2 * np.pi, n)
    wave = 0.5 * np.sin(2 * np.pi * cycles[:, None] * t + phase[:, None])  # (N, L)
    signal = (bump + wave).astype(np.float32)[:, None, :]  # (N, 1, L)
    noise = rng.normal(0.0, 0.5, (n, channels, length)).astype(np.float32)
    return signal + noise  # (N, C, L)


def _synthetic_images(
    rng: np.random.Generator, y: np.ndarray, channels: int, size: tuple[int, ...], classes: int
) -> np.ndarray:
    """Class c: a bar at angle pi * c / classes, centred on a circle at angle 2 pi c / classes.

    Angle and position jitter, and a random intensity per channel, keep it from being trivial.
    """
    n = len(y)
    h, w = size
    gy, gx = np.meshgrid(
        np.linspace(-1.0, 1.0, h, dtype=np.float32),
        np.linspace(-1.0, 1.0, w, dtype=np.float32),
        indexing="ij",
    )  # (H, W) each
    where = 2 * np.pi * y / classes
    cx = (0.4 * np.cos(where) + rng.normal(0.0, 0.12, n)).astype(np.float32)  # (N,)
    cy = (0.4 * np.sin(where) + rng.normal(0.0, 0.12, n)).astype(np.float32)
    angle = (np.pi * y / classes + rng.normal(0.0, 0.25, n)).astype(np.float32)
    dx, dy = gx - cx[:, None, None], gy - cy[:, None, None]  # (N, H, W)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    along, across = dx * cos + dy * sin, dy * cos - dx * sin
    thick = max(0.12, 2.0 / max(h, w))  # at least about one pixel wide
    bar = np.exp(-0.5 * (along / 0.45) ** 2 - 0.5 * (across / thick) ** 2)  # (N, H, W)
    gain = rng.uniform(0.6, 1.4, (n, channels, 1, 1)).astype(np.float32)
    noise = rng.normal(0.0, 0.35, (n, channels, h, w)).astype(np.float32)
    return bar[:, None] * gain + noise  # (N, C, H, W)


def _load_synthetic(classes: int, space: _Space) -> _Raw:
    if classes < 2:
        raise DatasetError(f"dataset 'synthetic' needs classes >= 2, got {classes}")
    rng = np.random.default_rng(_SYNTHETIC_SEED)
    n = _SYNTHETIC_TRAIN + _SYNTHETIC_TEST
    _check_fits("synthetic", n, space, _SYNTHETIC_BYTES_PER_VALUE)
    y = rng.permutation(np.arange(n) % classes).astype(np.int64)  # balanced classes
    if space.kind == "sequence":
        x = _synthetic_sequences(rng, y, space.channels, space.size[0], classes)
    else:
        x = _synthetic_images(rng, y, space.channels, space.size, classes)
    x_t, y_t = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    return _Raw(
        x_train=x_t[:_SYNTHETIC_TRAIN],
        y_train=y_t[:_SYNTHETIC_TRAIN],
        x_test=x_t[_SYNTHETIC_TRAIN:],
        y_test=y_t[_SYNTHETIC_TRAIN:],
        classes=classes,
    )


# ---------------------------------------------------------------------------------------------
# folder:PATH


def _class_dirs(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    """The image files of one class folder, sorted."""
    return sorted(
        p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _read_image_tree(
    directory: Path, class_names: list[str], space: _Space
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``directory/<class>/*`` images as ``(N, C, H, W)`` in [0, 1] and labels ``(N,)``."""
    from PIL import Image, UnidentifiedImageError

    mode = "L" if space.channels == 1 else "RGB"
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for label, class_name in enumerate(class_names):
        class_dir = directory / class_name
        files = _image_files(class_dir)
        if not files:
            raise DatasetError(
                f"class folder '{class_dir}' holds no images; allowed suffixes: "
                f"{allowed(IMAGE_SUFFIXES)}"
            )
        for file in files:
            try:
                with warnings.catch_warnings():  # the size is checked below, before decoding
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    img = Image.open(file)
                with img:
                    w, h = img.size
                    if w * h > MAX_IMAGE_PIXELS:
                        raise DatasetError(
                            f"image '{file}' is {w}x{h} ({w * h:,} pixels), too large; "
                            f"allowed: at most {MAX_IMAGE_PIXELS:,} pixels"
                        )
                    pixels = np.asarray(img.convert(mode), dtype=np.uint8)
            except Image.DecompressionBombError:  # past Pillow's own limit: not even opened
                raise DatasetError(
                    f"image '{file}' is too large (over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} "
                    f"pixels); allowed: at most {MAX_IMAGE_PIXELS:,} pixels"
                ) from None
            except (OSError, UnidentifiedImageError, ValueError) as e:
                raise DatasetError(f"cannot read image '{file}': {one_line(e, typed=False)}") from e
            x = torch.from_numpy(pixels.copy()).float().div_(255.0)  # (H, W) or (H, W, 3)
            x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]  # (1, C, H, W)
            if tuple(x.shape[2:]) != space.size:
                x = _resize(x, space.size)
            images.append(x)
            labels.append(label)
    return torch.cat(images), torch.tensor(labels, dtype=torch.int64)


def _load_folder(path: str, space: _Space) -> _Raw:
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
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"folder dataset path '{root}' does not exist or is not a directory")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DatasetError(
            f"folder dataset '{root}' has no train/ folder; expected PATH/train/<class>/*.png "
            "and optionally PATH/test/<class>/*.png"
        )
    class_names = _class_dirs(train_dir)
    if not class_names:
        raise DatasetError(
            f"folder dataset '{train_dir}' has no class folders; expected train/<class>/*.png"
        )
    test_dir = root / "test"
    n = sum(
        len(_image_files(d / c))
        for d in (train_dir, test_dir)
        for c in class_names
        if (d / c).is_dir()
    )
    _check_fits(name, n, space)  # before reading any image
    x, y = _read_image_tree(train_dir, class_names, space)
    x_test = y_test = None
    if test_dir.is_dir():
        test_names = _class_dirs(test_dir)
        if test_names != class_names:
            raise DatasetError(
                f"folder dataset '{root}': test classes [{allowed(test_names)}] do not match "
                f"train classes [{allowed(class_names)}]"
            )
        x_test, y_test = _read_image_tree(test_dir, class_names, space)
    return _Raw(x_train=x, y_train=y, x_test=x_test, y_test=y_test, classes=len(class_names))


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
