"""CIFAR-10 and CIFAR-100 in their standard python-batches format (``cifar10:PATH``,
``cifar100:PATH``).

CIFAR-10's directory (``cifar-10-batches-py``) holds the pickles ``data_batch_1`` ...
``data_batch_5`` (50,000 training images) and ``test_batch`` (10,000); CIFAR-100's
(``cifar-100-python``) holds ``train`` and ``test`` and is read with its 100 fine labels. Each
pickle is a dict with ``data``, a uint8 array ``(N, 3072)`` (1024 red, then green, then blue
values of a 32x32 image, row by row), and ``labels`` (``fine_labels`` for CIFAR-100).

The pickles are read by an unpickler that rebuilds numpy arrays and plain containers only;
anything else in them (a class, a function call) is refused, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion_nas.errors import DatasetError, allowed, one_line
from fusion_nas.training.data.base import (
    UINT8_BYTES_PER_VALUE,
    Raw,
    Space,
    check_fits,
    check_image_channels,
    need_image_space,
    resize_uint8,
)

CIFAR_PREFIXES: tuple[str, ...] = ("cifar10:", "cifar100:")
# prefix -> (classes, training pickles, test pickle, label key)
_LAYOUT: dict[str, tuple[int, tuple[str, ...], str, str]] = {
    "cifar10:": (10, tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "labels"),
    "cifar100:": (100, ("train",), "test", "fine_labels"),
}
_SIDE = 32
_ROW = 3 * _SIDE * _SIDE  # values of one image in a batch's data array


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_scalar() -> Any:
    try:
        from numpy._core.multiarray import scalar  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import scalar
    return scalar


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, strings, bytes, numbers and numpy arrays; refuses any other
    global (the usual way a crafted pickle runs code)."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if name == "scalar" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_scalar()
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # bytes pickled by Python 3, protocol 2
            import codecs

            return codecs.encode
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def load_pickle(path: Path) -> dict:
    """A CIFAR pickle as a dict with ``str`` keys; one line if it is unreadable or unsafe."""
    try:
        data = path.read_bytes()
        obj = _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    except FileNotFoundError:
        raise DatasetError(f"CIFAR file '{path}' not found") from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DatasetError(f"cannot read CIFAR file '{path}': {one_line(e, typed=False)}") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"CIFAR file '{path}' holds a {type(obj).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path, label_key: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one pickle."""
    batch = load_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise DatasetError(
            f"CIFAR file '{path}' lacks key '{'data' if 'data' not in batch else label_key}'; "
            f"it has {allowed(sorted(map(str, batch)))}"
        )
    data, labels = batch["data"], np.asarray(batch[label_key])
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _ROW
    ):
        shape = getattr(data, "shape", None)
        raise DatasetError(
            f"CIFAR file '{path}': 'data' is {type(data).__name__} of shape {shape}; it must "
            f"be a uint8 array (N, {_ROW})"
        )
    if labels.ndim != 1 or len(labels) != len(data) or labels.dtype.kind not in "iu":
        raise DatasetError(
            f"CIFAR file '{path}': {len(labels)} labels for {len(data)} images; they must be "
            "integers, one per image"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DatasetError(
            f"CIFAR file '{path}': label {int(labels.max())} is out of range; allowed: "
            f"0..{classes - 1}"
        )
    return data.reshape(-1, 3, _SIDE, _SIDE), labels.astype(np.int64)


def load_cifar(prefix: str, path: str, space: Space) -> Raw:
    """CIFAR-10 (``prefix='cifar10:'``) or CIFAR-100 in ``path``, uint8, shaped for ``space``."""
    name = prefix + path
    classes, train_files, test_file, label_key = _LAYOUT[prefix]
    if not path:
        raise DatasetError(f"dataset '{prefix}' needs a path, e.g. '{prefix}/data/cifar'")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"CIFAR dataset path '{root}' does not exist or is not a directory")
    expected = (*train_files, test_file)
    for file in expected:
        if not (root / file).is_file():
            raise DatasetError(
                f"CIFAR directory '{root}' lacks '{file}'; expected {allowed(expected)} "
                "(the python version of the dataset)"
            )
    need_image_space(name, space, "32x32 RGB images")
    check_image_channels(name, 3, space)
    check_fits(name, 60_000, space, UINT8_BYTES_PER_VALUE)
    parts = [_read_batch(root / f, label_key, classes) for f in train_files]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))  # (50000, 3, 32, 32) uint8
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    x_test, y_test = _read_batch(root / test_file, label_key, classes)
    return Raw(
        x_train=resize_uint8(x, space.size),
        y_train=y,
        x_test=resize_uint8(torch.from_numpy(x_test.copy()), space.size),
        y_test=torch.from_numpy(y_test),
        classes=classes,
        natural=True,
    )
