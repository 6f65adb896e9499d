"""Tests for fusion_nas.training.data: shapes, splits, determinism, idx/folder readers and error
messages."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusion_nas.errors import DatasetError
from fusion_nas.training.data import (
    DATASETS,
    FASHION_MNIST_DIR,
    IDX_FILES,
    DataSplits,
    load_dataset,
    read_idx,
)
from fusion_nas.training.data import builtin as data

MNIST1D = dict(kind="sequence", channels=1, size=(40,), classes=10)
DIGITS = dict(kind="image", channels=1, size=(8, 8), classes=10)
SYN_SEQ = dict(kind="sequence", channels=2, size=(32,), classes=3)

fashion_files = pytest.mark.skipif(
    not all((FASHION_MNIST_DIR / f"{stem}.gz").is_file() for stem in IDX_FILES),
    reason=f"Fashion-MNIST idx files not in {FASHION_MNIST_DIR} "
    "(install Debian's package: apt-get install dataset-fashion-mnist)",
)


def row_hashes(ds: torch.utils.data.TensorDataset) -> set[bytes]:
    """One digest per input row; a set, so overlaps between splits show up as intersections."""
    x = ds.tensors[0].contiguous().numpy()
    return {hashlib.sha1(row.tobytes()).digest() for row in x}


def check_splits(splits: DataSplits, shape: tuple[int, ...], classes: int) -> None:
    for ds in (splits.train, splits.val, splits.test):
        x, y = ds.tensors
        assert tuple(x.shape[1:]) == shape
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert len(x) == len(y) > 0
        assert 0 <= int(y.min()) and int(y.max()) < classes
        assert torch.isfinite(x).all()
    assert splits.classes == classes


# ---------------------------------------------------------------------------------------------
# every dataset: shapes, sizes, dtypes


@pytest.mark.parametrize(
    ("name", "space", "shape", "n_train", "n_test"),
    [
        ("mnist1d", MNIST1D, (1, 40), 4000, 1000),
        ("digits", DIGITS, (1, 8, 8), 1438, 359),
        ("digits", dict(DIGITS, channels=3, size=(16, 12)), (3, 16, 12), 1438, 359),
        ("synthetic", SYN_SEQ, (2, 32), 600, 200),
        (
            "synthetic",
            dict(kind="image", channels=3, size=(12, 20), classes=5),
            (3, 12, 20),
            600,
            200,
        ),
        (
            "synthetic",
            dict(kind="image", channels=1, size=(28, 28), classes=10),
            (1, 28, 28),
            600,
            200,
        ),
    ],
)
def test_shapes_and_sizes(name, space, shape, n_train, n_test):
    splits = load_dataset(name, **space)
    check_splits(splits, shape, space["classes"])
    assert splits.name == name
    assert len(splits.train) + len(splits.val) == n_train
    assert len(splits.val) == round(0.2 * n_train)
    assert len(splits.test) == n_test


def test_all_classes_present_and_normalised():
    splits = load_dataset("digits", **DIGITS)
    x = torch.cat([splits.train.tensors[0], splits.val.tensors[0]])  # all training data
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    assert set(splits.train.tensors[1].tolist()) == set(range(10))
    assert set(splits.test.tensors[1].tolist()) == set(range(10))


def test_grey_replicated_to_three_channels():
    x = load_dataset("digits", **dict(DIGITS, channels=3)).train.tensors[0]
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert x.is_contiguous()


def test_synthetic_is_deterministic_and_learnable():
    a = load_dataset("synthetic", **SYN_SEQ)
    b = load_dataset("synthetic", **SYN_SEQ)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    # learnable: nearest class mean on the training data beats chance clearly on the test split
    x, y = a.train.tensors
    means = torch.stack([x[y == c].mean(0) for c in range(3)]).flatten(1)  # (classes, C*L)
    xt, yt = a.test.tensors
    pred = torch.cdist(xt.flatten(1), means).argmin(1)
    assert (pred == yt).float().mean() > 0.5  # chance is 1/3


@fashion_files
@pytest.mark.parametrize(
    ("channels", "size"),
    [(1, (28, 28)), (3, (32, 32))],
)
def test_fashion_mnist(channels, size):
    splits = load_dataset(
        "fashion-mnist", kind="image", channels=channels, size=size, classes=10, train_subset=5000
    )
    check_splits(splits, (channels, *size), 10)
    assert len(splits.train) == 5000
    assert len(splits.val) == 12000
    assert len(splits.test) == 10000
    assert torch.bincount(splits.test.tensors[1]).tolist() == [1000] * 10


# ---------------------------------------------------------------------------------------------
# splits


@pytest.mark.parametrize(
    ("name", "space"), [("mnist1d", MNIST1D), ("digits", DIGITS), ("synthetic", SYN_SEQ)]
)
def test_splits_disjoint_and_from_training_data(name, space):
    a = load_dataset(name, **space, seed=0)
    b = load_dataset(name, **space, seed=1)
    train, val, test = row_hashes(a.train), row_hashes(a.val), row_hashes(a.test)
    assert len(train) == len(a.train) and len(val) == len(a.val)  # rows are unique
    assert not train & val and not train & test and not val & test
    # both seeds carve train/val from the same training rows, never from test rows
    assert train | val == row_hashes(b.train) | row_hashes(b.val)


def test_same_seed_same_split_other_seed_other_split():
    a = load_dataset("synthetic", **SYN_SEQ, seed=3)
    b = load_dataset("synthetic", **SYN_SEQ, seed=3)
    c = load_dataset("synthetic", **SYN_SEQ, seed=4)
    for x, y in zip(a.train.tensors + a.val.tensors, b.train.tensors + b.val.tensors):
        assert torch.equal(x, y)
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    assert torch.equal(a.test.tensors[0], c.test.tensors[0])  # test never depends on seed


def test_digits_test_split_is_fixed():
    a = load_dataset("digits", **DIGITS, seed=0)
    b = load_dataset("digits", **DIGITS, seed=7, val_fraction=0.5)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    # stratified: every class holds out 20% of its images, rounded
    assert torch.bincount(a.test.tensors[1]).min() >= 35


def test_val_fraction():
    assert len(load_dataset("synthetic", **SYN_SEQ, val_fraction=0.5).val) == 300
    assert len(load_dataset("synthetic", **SYN_SEQ, val_fraction=1e-6).val) == 1  # at least 1
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(DatasetError, match="val_fraction .* must be > 0 and < 1"):
            load_dataset("synthetic", **SYN_SEQ, val_fraction=bad)


def test_train_subset():
    full = load_dataset("synthetic", **SYN_SEQ, seed=2)
    sub = load_dataset("synthetic", **SYN_SEQ, seed=2, train_subset=50)
    assert len(sub.train) == 50
    assert torch.equal(sub.train.tensors[0], full.train.tensors[0][:50])
    assert torch.equal(sub.val.tensors[0], full.val.tensors[0])  # val unaffected
    assert len(load_dataset("synthetic", **SYN_SEQ, train_subset=10_000).train) == 480
    with pytest.raises(DatasetError, match="train_subset 0 is too small"):
        load_dataset("synthetic", **SYN_SEQ, train_subset=0)


def test_datasplits_is_frozen():
    splits = load_dataset("synthetic", **SYN_SEQ)
    with pytest.raises(dataclasses.FrozenInstanceError):
        splits.classes = 4


# ---------------------------------------------------------------------------------------------
# mnist1d specifics


def test_mnist1d_generates_offline_and_keeps_global_rng(tmp_path, monkeypatch):
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d must be generated, not downloaded")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.chdir(tmp_path)  # mnist1d.get_dataset would write a pickle here
    data._mnist1d_arrays.cache_clear()
    random.seed(5)
    np.random.seed(5)
    x, y, x_test, y_test = data._mnist1d_arrays()
    assert (random.random(), np.random.rand()) == (random.Random(5).random(), _np_first(5))
    assert list(tmp_path.iterdir()) == []
    assert x.shape == (4000, 40) and x_test.shape == (1000, 40)
    assert np.bincount(y).tolist()[:2] == [398, 396]  # the published data, regenerated
    assert x[0, 0] == pytest.approx(-0.33200567, abs=1e-6)
    assert data._mnist1d_arrays() is data._mnist1d_arrays()  # cached for the next trial


def _np_first(seed: int) -> float:
    return float(np.random.RandomState(seed).rand())


# Reference values read from the published MNIST-1D file, ``mnist1d_data.pkl`` of
# github.com/greydanus/mnist1d (last changed in commit 9f13bb4, "Lower pickle protocol to 3"),
# not from this package's output. The file stores float64; the digests are of its arrays cast
# to the float32 / int64 the package keeps.
PUBLISHED_MNIST1D = {
    "x": "d53506bddd12d3b72c7153b1ae7f34807724b1dd078a7273809bf9d0792319f6",
    "y": "d97dc7aecec8ad6b5d8f143ba3e9c4bd7e25c420d7dfc2eb990591cfc0ed3e15",
    "x_test": "30addc43827c82aafa5db8bc97cea63349ca687e87db2f201cc4f5415d9a4ebd",
    "y_test": "8de99be3ff9dab15ae0dc072c3d6ced7cf6b33d365888ce4a386fc944489452c",
}
PUBLISHED_COUNTS = {
    "y": [398, 396, 411, 394, 394, 402, 401, 404, 402, 398],
    "y_test": [102, 104, 89, 106, 106, 98, 99, 96, 98, 102],
}
# sum, sum of squares, min, max of the float64 arrays
PUBLISHED_STATS = {
    "x": (-51.78746787509559, 159248.2538653486, -5.479419072154895, 4.533515672898283),
    "x_test": (51.78746787509186, 40751.74613465136, -4.203378848742242, 4.413565319611561),
}
# (array, row) -> (label, values at positions 0, 7, 19, 33, 39)
PUBLISHED_ROWS = {
    ("x", 0): (2, [-0.3320056673693902, 1.6525071095153063, 1.0358740294925417,
                   -0.8645804426674562, -0.8901663884753127]),
    ("x", 1234): (8, [0.8009429801283567, 0.2323054803851485, 0.009426775992652842,
                      -0.5546055979381149, -1.115071828653965]),
    ("x", 3999): (8, [-0.6939948035971022, -0.9526049347609845, -0.9905421340935312,
                      -1.1004570503914008, -1.6509928567520655]),
    ("x_test", 0): (2, [-0.07877078047732886, -0.44891797010721, -1.168337957791402,
                        0.12845677331932748, 0.3461328866646199]),
    ("x_test", 999): (4, [-0.5193287078205188, -0.04104002875460335, 0.6158381104740795,
                          -0.5587724330587539, 1.193151836835276]),
}  # fmt: skip
PUBLISHED_FIRST_LABELS = {
    "y": [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9, 4, 3, 4, 5, 1, 9, 0, 3],
    "y_test": [2, 6, 3, 9, 4, 3, 1, 9, 5, 2, 0, 7, 7, 1, 4, 6, 1, 4, 3, 9],
}


def test_mnist1d_equals_the_published_file():
    x, y, x_test, y_test = data._mnist1d_arrays()
    arrays = {"x": x, "y": y, "x_test": x_test, "y_test": y_test}
    assert (x.shape, x_test.shape, y.shape, y_test.shape) == (
        (4000, 40),
        (1000, 40),
        (4000,),
        (1000,),
    )
    assert (x.dtype, y.dtype) == (np.float32, np.int64)
    for key, digest in PUBLISHED_MNIST1D.items():
        assert hashlib.sha256(np.ascontiguousarray(arrays[key]).tobytes()).hexdigest() == digest, (
            key
        )
    for key, counts in PUBLISHED_COUNTS.items():
        assert np.bincount(arrays[key]).tolist() == counts, key
    for key, (total, squares, low, high) in PUBLISHED_STATS.items():
        a = arrays[key].astype(np.float64)
        assert a.sum() == pytest.approx(total, abs=1e-3), key
        assert (a**2).sum() == pytest.approx(squares, rel=1e-6), key
        assert (a.min(), a.max()) == pytest.approx((low, high), abs=1e-6), key
    for (key, row), (label, values) in PUBLISHED_ROWS.items():
        assert arrays["y" if key == "x" else "y_test"][row] == label, (key, row)
        got = arrays[key][row, [0, 7, 19, 33, 39]]
        assert got.tolist() == pytest.approx(values, abs=1e-6), (key, row)
    for key, labels in PUBLISHED_FIRST_LABELS.items():
        assert arrays[key][:20].tolist() == labels, key


def test_mnist1d_splits_carry_the_published_data():
    splits = load_dataset("mnist1d", **MNIST1D)
    # the test split is the published test set in its order, standardised with the statistics
    # of the published training set (computed here from the published sums)
    n = 4000 * 40
    total, squares = PUBLISHED_STATS["x"][:2]
    mean = total / n
    std = ((squares - n * mean**2) / (n - 1)) ** 0.5
    xt, yt = splits.test.tensors
    assert yt[:20].tolist() == PUBLISHED_FIRST_LABELS["y_test"]
    assert torch.bincount(yt).tolist() == PUBLISHED_COUNTS["y_test"]
    for row in (0, 999):
        want = (np.array(PUBLISHED_ROWS[("x_test", row)][1]) - mean) / std
        assert xt[row, 0, [0, 7, 19, 33, 39]].tolist() == pytest.approx(want.tolist(), abs=1e-5)
    # train and validation together hold the published training labels, each sample once
    y_all = torch.cat([splits.train.tensors[1], splits.val.tensors[1]])
    assert torch.bincount(y_all).tolist() == PUBLISHED_COUNTS["y"]


@pytest.mark.parametrize(
    "space",
    [
        dict(kind="image", channels=1, size=(28, 28), classes=10),
        dict(kind="sequence", channels=1, size=(64,), classes=10),
        dict(kind="sequence", channels=2, size=(40,), classes=10),
    ],
)
def test_mnist1d_wrong_space(space):
    with pytest.raises(DatasetError, match="1-D sequences of length 40") as info:
        load_dataset("mnist1d", **space)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# idx reader and idx directories


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """Encode ``array`` as an idx file: magic 0x0000<code><ndim>, big-endian dims, data."""
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[code]
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(dtype).tobytes()


def test_read_idx_plain_and_gz(tmp_path):
    images = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "img").write_bytes(idx_bytes(images, 0x08))
    with gzip.open(tmp_path / "img.gz", "wb") as f:
        f.write(idx_bytes(images, 0x08))
    for path in (tmp_path / "img", tmp_path / "img.gz"):
        out = read_idx(path)
        assert out.dtype == np.uint8 and np.array_equal(out, images)
    ints = np.array([1, -2, 70000], dtype=np.int32)
    (tmp_path / "ints").write_bytes(idx_bytes(ints, 0x0C))
    out = read_idx(tmp_path / "ints")
    assert out.dtype == np.int32 and out.dtype.isnative and out.tolist() == [1, -2, 70000]
    out[0] = 9  # writable


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad magic number 0x01020801"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "bad magic number"),
        (b"\x00\x00", "bad magic number"),
        (b"\x00\x00\x08\x02" + struct.pack(">I", 3), "truncated header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01", "2 data bytes .* needs 5"),
    ],
)
def test_read_idx_corrupt(tmp_path, content, match):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=match) as info:
        read_idx(path)
    assert "is corrupt" in str(info.value) and str(path) in str(info.value)


def test_read_idx_bad_gzip_and_missing(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot read idx file") as info:
        read_idx(tmp_path / "x.gz")
    assert "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="not found"):
        read_idx(tmp_path / "nope")


def write_idx_dir(directory: Path, rng: np.random.Generator) -> None:
    """A tiny MNIST-style directory: 30 train / 9 test 6x6 images, 3 classes, gz and plain."""
    for prefix, n, gz in (("train", 30, True), ("t10k", 9, False)):
        images = rng.integers(0, 256, (n, 6, 6)).astype(np.uint8)
        labels = (np.arange(n) % 3).astype(np.uint8)
        for kind, array, code in (("images-idx3", images, 0x08), ("labels-idx1", labels, 0x08)):
            raw = idx_bytes(array, code)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                with gzip.open(directory / f"{name}.gz", "wb") as f:
                    f.write(raw)
            else:
                (directory / name).write_bytes(raw)


def test_idx_directory_via_data_dir(tmp_path):
    write_idx_dir(tmp_path, np.random.default_rng(0))
    space = dict(kind="image", channels=3, size=(8, 8), classes=3)
    splits = load_dataset("fashion-mnist", **space, data_dir=tmp_path)
    check_splits(splits, (3, 8, 8), 3)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 6, 9)
    with pytest.raises(DatasetError, match="has 3 classes but the search space has 10"):
        load_dataset("fashion-mnist", **dict(space, classes=10), data_dir=tmp_path)
    with pytest.raises(DatasetError, match="holds 6x6 images .* kind 'sequence'"):
        load_dataset(
            "fashion-mnist", kind="sequence", channels=1, size=(36,), classes=3, data_dir=tmp_path
        )


def test_idx_directory_mismatched_lengths(tmp_path):
    write_idx_dir(tmp_path, np.random.default_rng(0))
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(idx_bytes(np.zeros(7, dtype=np.uint8), 0x08))
    with pytest.raises(DatasetError, match="split 'train' .* do not match"):
        load_dataset("fashion-mnist", **DIGITS, data_dir=tmp_path)


def test_fashion_mnist_missing_files(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist", **DIGITS, data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    for part in ("dataset-fashion-mnist", "apt-get install", "--data-dir", str(tmp_path)):
        assert part in message
    assert "'train-images-idx3-ubyte.gz' is missing" in message


# ---------------------------------------------------------------------------------------------
# folder:PATH


def save(path: Path, size: tuple[int, int], mode: str, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, value, value // 2)
    Image.new(mode, size, colour).save(path)


def make_folder(root: Path, with_test: bool = True) -> Path:
    """cats are dark, dogs bright; odd sizes, grey and RGB, four formats."""
    save(root / "train" / "cat" / "a.png", (10, 7), "L", 20)
    save(root / "train" / "cat" / "b.JPG", (13, 9), "RGB", 30)
    save(root / "train" / "cat" / "c.bmp", (5, 5), "L", 10)
    save(root / "train" / "dog" / "a.png", (20, 11), "RGB", 230)
    save(root / "train" / "dog" / "b.jpeg", (8, 8), "L", 240)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    if with_test:
        save(root / "test" / "cat" / "t.png", (9, 9), "L", 25)
        save(root / "test" / "dog" / "t.png", (9, 9), "RGB", 220)
    return root


@pytest.mark.parametrize(("channels", "size"), [(1, (8, 8)), (3, (16, 12))])
def test_folder_dataset(tmp_path, channels, size):
    root = make_folder(tmp_path / "pets")
    splits = load_dataset(
        f"folder:{root}", kind="image", channels=channels, size=size, classes=2, val_fraction=0.4
    )
    check_splits(splits, (channels, *size), 2)
    assert splits.name == f"folder:{root}"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3, 2, 2)
    # class names sorted: cat = 0 (dark), dog = 1 (bright)
    for ds in (splits.train, splits.val, splits.test):
        x, y = ds.tensors
        brightness = x.mean(dim=(1, 2, 3))
        assert ((brightness > 0) == (y == 1)).all()


def test_folder_without_test(tmp_path):
    root = make_folder(tmp_path / "pets", with_test=False)
    splits = load_dataset(f"folder:{root}", kind="image", channels=1, size=(6, 6), classes=2)
    assert splits.test is None
    assert len(splits.train) + len(splits.val) == 5


def folder_error(name: str, channels: int = 1, kind: str = "image") -> str:
    size = (8, 8) if kind == "image" else (8,)
    with pytest.raises(DatasetError) as info:
        load_dataset(name, kind=kind, channels=channels, size=size, classes=2)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_folder_errors(tmp_path):
    assert "does not exist" in folder_error(f"folder:{tmp_path / 'missing'}")
    assert "needs a path" in folder_error("folder:")
    assert "has no train/ folder" in folder_error(f"folder:{tmp_path}")
    (tmp_path / "train").mkdir()
    assert "has no class folders" in folder_error(f"folder:{tmp_path}")
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "x.txt").write_text("")
    message = folder_error(f"folder:{tmp_path}")
    assert "holds no images" in message and "'.png'" in message

    root = make_folder(tmp_path / "pets")
    (root / "test" / "dog").rename(root / "test" / "wolf")
    message = folder_error(f"folder:{root}")
    assert "test classes ['cat', 'wolf'] do not match train classes ['cat', 'dog']" in message

    root = make_folder(tmp_path / "empty-test")
    for f in (root / "test" / "dog").iterdir():
        f.unlink()
    message = folder_error(f"folder:{root}")
    assert "class folder" in message and "holds no images" in message

    root = make_folder(tmp_path / "ok", with_test=False)
    assert "kind 'sequence'" in folder_error(f"folder:{root}", kind="sequence")
    assert "allowed: 1, 3" in folder_error(f"folder:{root}", channels=2)


# ---------------------------------------------------------------------------------------------
# argument errors


def test_unknown_dataset_message():
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar", **SYN_SEQ)
    assert str(info.value) == (
        "unknown dataset 'cifar'; allowed: 'mnist1d', 'fashion-mnist', 'digits', 'synthetic', "
        "'video-glyphs', 'folder:PATH', 'cifar10:PATH', 'cifar100:PATH'"
    )
    assert DATASETS == ("mnist1d", "fashion-mnist", "digits", "synthetic", "video-glyphs")


def test_classes_mismatch_message():
    with pytest.raises(DatasetError) as info:
        load_dataset("digits", **dict(DIGITS, classes=3))
    message = str(info.value)
    assert "has 10 classes but the search space has 3" in message and "\n" not in message


@pytest.mark.parametrize(
    ("space", "match"),
    [
        (dict(kind="graph", channels=1, size=(8,), classes=3), "kind 'graph' is not allowed"),
        (dict(kind="image", channels=1, size=(8,), classes=3), r"size \(8,\) does not fit"),
        (dict(kind="sequence", channels=1, size=(8, 8), classes=3), "does not fit kind"),
        (dict(kind="sequence", channels=0, size=(8,), classes=3), "channels 0 is too small"),
        (dict(kind="sequence", channels=1, size=(8,), classes=1), "needs classes >= 2"),
    ],
)
def test_bad_space(space, match):
    with pytest.raises(DatasetError, match=match):
        load_dataset("synthetic", **space)


def test_digits_needs_image_space():
    with pytest.raises(DatasetError, match="holds 8x8 images .* use an image space"):
        load_dataset("digits", kind="sequence", channels=1, size=(64,), classes=10)
    with pytest.raises(DatasetError, match="1-channel images .* 2 channels; allowed: 1, 3"):
        load_dataset("digits", **dict(DIGITS, channels=2))
