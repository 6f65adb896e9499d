"""Small CIFAR-10 / CIFAR-100 directories in the standard python-batches format, for tests.

The pickles are written as the originals are read: dicts with ``data`` (uint8 ``(N, 3072)``)
and ``labels`` / ``fine_labels``, with ``bytes`` keys, pickle protocol 2.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def _batch(rng: np.random.Generator, n: int, classes: int, label_key: bytes) -> dict:
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    # class c: a bright square whose colour depends on c, over noise
    data = rng.integers(0, 80, (n, 3, 32, 32), dtype=np.uint8)
    for i, c in enumerate(labels):
        data[i, c % 3, 8:24, 8:24] = 150 + (c * 37) % 100
    return {
        b"batch_label": b"generated",
        label_key: [int(c) for c in labels],
        b"data": data.reshape(n, 3072),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def make_cifar(root: Path, kind: str = "cifar10", per_batch: int = 20, seed: int = 0) -> Path:
    """Write a tiny ``kind`` (``cifar10`` or ``cifar100``) directory at ``root``; return it.

    CIFAR-10: ``data_batch_1`` .. ``data_batch_5`` of ``per_batch`` images and ``test_batch``;
    CIFAR-100: ``train`` (5 x ``per_batch`` images) and ``test``, with ``fine_labels``.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    if kind == "cifar10":
        files = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", per_batch)]
        classes, key = 10, b"labels"
    else:
        files = [("train", 5 * per_batch), ("test", per_batch)]
        classes, key = 100, b"fine_labels"
    for name, n in files:
        with open(root / name, "wb") as f:
            pickle.dump(_batch(rng, n, classes, key), f, protocol=2)
    return root
