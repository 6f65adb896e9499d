"""The built-in datasets: ``mnist1d``, ``fashion-mnist`` (and any idx directory), ``digits``,
``synthetic``. Each loader takes the space and returns a :class:`~.base.Raw` dataset.

``video-glyphs`` lives in :mod:`.video`."""

from __future__ import annotations

import functools
import gzip
import math
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from fusion_nas.errors import DatasetError, allowed, one_line
from fusion_nas.training.data.base import (
    SYNTHETIC_BYTES_PER_VALUE,
    Raw,
    Space,
    check_fits,
    check_image_channels,
    need_image_space,
    resize,
)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
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


def fit_images(x: torch.Tensor, space: Space, name: str, check_only: bool = False) -> torch.Tensor:
    """Resize float images ``(N, C, H0, W0)`` in [0, 1] to the space's size.

    Grey images stay 1-channel here even for a 3-channel space: they are replicated after
    normalising and splitting, which is 3x cheaper on 60k images. ``check_only``: only check
    that they fit the space (kind, channels, memory) and return them unchanged.
    """
    n, c, h, w = x.shape
    need_image_space(name, space, f"{h}x{w} images")
    check_fits(name, n, space)  # before resizing to the space's size
    check_image_channels(name, c, space)
    if check_only:
        return x
    if (h, w) != space.size and n > 0:
        x = resize(x, space.size)
    return x.contiguous()


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


def load_mnist1d(space: Space) -> Raw:
    if space.kind != "sequence" or space.channels != 1 or space.size != (_MNIST1D_LENGTH,):
        raise DatasetError(
            f"dataset 'mnist1d' is 1-D sequences of length {_MNIST1D_LENGTH} with 1 channel but "
            f"the search space is a {space.describe()}; use kind 'sequence', channels 1, "
            f"size ({_MNIST1D_LENGTH},)"
        )
    x, y, x_test, y_test = _mnist1d_arrays()
    return Raw(
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


def load_idx_dir(data_dir: str | Path | None, space: Space) -> Raw:
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
    fit = functools.partial(fit_images, space=space, name="fashion-mnist")
    if x.dtype == np.uint8 and tuple(x.shape[1:]) == space.size:
        # uint8 at the space's size: kept as pixels, normalised per batch (the same numbers)
        pixels = torch.tensor(x)[:, None]  # (N, 1, H, W) uint8, a copy of the cached array
        pixels_test = torch.tensor(x_test)[:, None]
        fit(pixels, check_only=True)
        return Raw(
            x_train=pixels,
            y_train=torch.tensor(y, dtype=torch.int64),
            x_test=pixels_test,
            y_test=torch.tensor(y_test, dtype=torch.int64),
            classes=classes,
        )
    # resized (or not uint8): float, normalised once when loaded, as it always was
    scale = 255.0 if x.dtype == np.uint8 else 1.0  # uint8 pixels -> [0, 1]
    return Raw(
        x_train=fit(torch.tensor(x, dtype=torch.float32)[:, None] / scale),
        y_train=torch.tensor(y, dtype=torch.int64),
        x_test=fit(torch.tensor(x_test, dtype=torch.float32)[:, None] / scale),
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


def load_digits(space: Space) -> Raw:
    x, y, x_test, y_test = _digits_arrays()
    return Raw(
        x_train=fit_images(torch.tensor(x), space, "digits"),  # (1437, C, H, W)
        y_train=torch.tensor(y),
        x_test=fit_images(torch.tensor(x_test), space, "digits"),  # (360, C, H, W)
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


def _synthetic_video(
    rng: np.random.Generator, y: np.ndarray, channels: int, size: tuple[int, ...], classes: int
) -> np.ndarray:
    """Class c: the image task's bar (:func:`_synthetic_images`) in every frame, each frame with
    its own noise. A smoke test of the video path: a single frame suffices to classify it (use
    ``video-glyphs`` for a task where time matters)."""
    n = len(y)
    t, h, w = size
    still = _synthetic_images(rng, y, channels, (h, w), classes)  # (N, C, H, W), noise included
    noise = rng.normal(0.0, 0.35, (n, channels, t, h, w)).astype(np.float32)
    return still[:, :, None] + noise  # (N, C, T, H, W)


def load_synthetic(classes: int, space: Space) -> Raw:
    if classes < 2:
        raise DatasetError(f"dataset 'synthetic' needs classes >= 2, got {classes}")
    rng = np.random.default_rng(_SYNTHETIC_SEED)
    n = _SYNTHETIC_TRAIN + _SYNTHETIC_TEST
    check_fits("synthetic", n, space, SYNTHETIC_BYTES_PER_VALUE)
    y = rng.permutation(np.arange(n) % classes).astype(np.int64)  # balanced classes
    if space.kind == "sequence":
        x = _synthetic_sequences(rng, y, space.channels, space.size[0], classes)
    elif space.kind == "image":
        x = _synthetic_images(rng, y, space.channels, space.size, classes)
    else:
        x = _synthetic_video(rng, y, space.channels, space.size, classes)
    x_t, y_t = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    return Raw(
        x_train=x_t[:_SYNTHETIC_TRAIN],
        y_train=y_t[:_SYNTHETIC_TRAIN],
        x_test=x_t[_SYNTHETIC_TRAIN:],
        y_test=y_t[_SYNTHETIC_TRAIN:],
        classes=classes,
    )
