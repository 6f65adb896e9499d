"""Tests for uint8 image datasets: folder decoding and its cache, corrupt files, CIFAR batches,
normalisation per batch, and what the trainer does with them."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from fusion_nas.errors import DatasetError
from fusion_nas.training.data import (
    ArrayImages,
    FolderImages,
    concat,
    decoded_images,
    load_dataset,
    take,
)
from fusion_nas.training.data.cache import CACHE_DIR, CACHE_ENV
from fusion_nas.training.data.images import pixel_stats
from fusion_nas.training.loop import ProxyConfig, evaluate_accuracy, train_proxy
from fusion_nas.training.protocol import all_training_data
from tests.helpers.cifar import make_cifar

RGB8 = dict(kind="image", channels=3, size=(8, 8), classes=2)


def make_pets(root: Path, n: int = 6, test: bool = True) -> Path:
    """cats dark, dogs bright: ``n`` RGB PNGs per class (10x10), and a test split."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", 2)) if test else (("train", n),):
        for cls, base in (("cat", 30), ("dog", 220)):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                px = np.clip(base + rng.integers(-20, 20, (10, 10, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(d / f"{i}.png")
    return root


def test_folder_is_uint8_and_cached_next_to_the_data(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    root = make_pets(tmp_path / "pets")
    before = decoded_images()
    splits = load_dataset(f"folder:{root}", **RGB8, val_fraction=0.25)
    assert decoded_images() - before == 16  # 12 train + 4 test, decoded once
    assert isinstance(splits.train, ArrayImages) and splits.train.pixels.dtype == torch.uint8
    assert splits.train.natural and splits.skipped == 0
    assert len(list((root / CACHE_DIR).glob("*.npy"))) == 1
    x, y = take(splits.train, torch.arange(len(splits.train)))
    assert x.shape == (9, 3, 8, 8) and x.dtype == torch.float32
    assert ((x.mean(dim=(1, 2, 3)) > 0) == (y == 1)).all()  # dogs bright, cats dark

    again = load_dataset(f"folder:{root}", **RGB8, val_fraction=0.25)  # as a second process
    assert decoded_images() - before == 16  # read from the cache: no image decoded
    assert torch.equal(take(again.val, torch.arange(3))[0], take(splits.val, torch.arange(3))[0])

    (root / "train" / "cat" / "0.png").touch()  # a changed file: a new cache
    load_dataset(f"folder:{root}", **RGB8)
    assert decoded_images() - before == 32


def test_folder_cache_in_user_dir_when_data_is_read_only(tmp_path, monkeypatch):
    from fusion_nas.training.data import cache

    root = make_pets(tmp_path / "pets")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    monkeypatch.delenv(CACHE_ENV, raising=False)
    writable = cache._writable  # the data folder is read-only (tests may run as root)
    monkeypatch.setattr(cache, "_writable", lambda d, need: d.parent != root and writable(d, need))
    splits = load_dataset(f"folder:{root}", **RGB8)
    assert isinstance(splits.train, ArrayImages)
    assert not (root / CACHE_DIR).exists()
    assert list((tmp_path / "home-cache" / "fusion-nas" / "data").glob("*.npy"))


def test_folder_without_cache_decodes_lazily(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "off")
    root = make_pets(tmp_path / "pets")
    splits = load_dataset(f"folder:{root}", **RGB8)
    assert isinstance(splits.train, FolderImages)
    assert not (root / CACHE_DIR).exists()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    cached = load_dataset(f"folder:{root}", **RGB8)
    assert isinstance(cached.train, ArrayImages)
    # the same images and statistics either way
    assert torch.allclose(cached.train.mean, splits.train.mean)
    assert torch.allclose(cached.train.std, splits.train.std)
    idx = torch.arange(len(splits.train))
    assert torch.allclose(take(cached.train, idx)[0], take(splits.train, idx)[0])
    # both train and evaluate through the loop
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 2))
    result = train_proxy(model, splits.train, splits.val, ProxyConfig(epochs=2, batch_size=4))
    assert len(result.curve) == 2 and result.data_seconds >= 0
    assert 0 <= evaluate_accuracy(model, splits.test) <= 1


class _Lines(logging.Handler):
    """The messages logged to one logger (caplog misses them after another test's search has
    reconfigured logging)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_corrupt_image_is_skipped_logged_and_counted(tmp_path, monkeypatch):
    from fusion_nas.training.data import folder

    monkeypatch.delenv(CACHE_ENV, raising=False)
    root = make_pets(tmp_path / "pets")
    (root / "train" / "cat" / "broken.png").write_bytes(b"garbage")
    (root / "test" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    handler = _Lines()
    folder.log.addHandler(handler)
    try:
        splits = load_dataset(f"folder:{root}", **RGB8)
        lines = [m for m in handler.lines if "skipped unreadable image" in m]
        assert len(lines) == 2 and "broken.png" in lines[0] and "\n" not in lines[0]
        assert splits.skipped == 2 == splits.train.skipped
        assert len(splits.train) + len(splits.val) == 12 and len(splits.test) == 4
        handler.lines.clear()
        assert load_dataset(f"folder:{root}", **RGB8).skipped == 2  # from the cache: still
        assert handler.lines == [f"folder dataset '{root}': 2 unreadable image(s) skipped"]
    finally:
        folder.log.removeHandler(handler)


def test_folder_dataset_pickles_as_its_cache_path(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    root = make_pets(tmp_path / "pets", n=40)
    train = load_dataset(f"folder:{root}", **RGB8).train
    blob = pickle.dumps(train)
    assert len(blob) < train.pixels.numel()  # the path travels, not the pixels
    back = pickle.loads(blob)
    idx = torch.arange(len(train))
    assert torch.equal(take(back, idx)[0], take(train, idx)[0])


def test_grey_images_in_an_rgb_space_and_resized(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    d = tmp_path / "g" / "train"
    for cls, v in (("a", 10), ("b", 200)):
        (d / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (20, 12), v + i).save(d / cls / f"{i}.png")
    splits = load_dataset(f"folder:{tmp_path / 'g'}", **dict(RGB8, size=(6, 10)))
    x = splits.train[0][0]
    assert x.shape == (3, 6, 10) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


# ---------------------------------------------------------------------------------------------
# CIFAR


@pytest.mark.parametrize(("kind", "classes"), [("cifar10", 10), ("cifar100", 100)])
def test_cifar_batches(tmp_path, kind, classes):
    root = make_cifar(tmp_path / kind, kind)
    space = dict(kind="image", channels=3, size=(32, 32), classes=classes)
    splits = load_dataset(f"{kind}:{root}", **space, val_fraction=0.2)
    assert isinstance(splits.train, ArrayImages) and splits.train.natural
    assert len(splits.train) + len(splits.val) == 100 and len(splits.test) == 20
    assert splits.train.pixels.shape[1:] == (3, 32, 32)
    # the first test image is row 0 of test_batch, channel-major
    with open(root / ("test_batch" if kind == "cifar10" else "test"), "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert np.array_equal(splits.test.pixels[0].numpy().reshape(-1), raw[b"data"][0])
    small = load_dataset(f"{kind}:{root}", **dict(space, size=(16, 16)))
    assert small.train.pixels.shape[1:] == (3, 16, 16)


def test_cifar_missing_batch_names_the_file(tmp_path):
    root = make_cifar(tmp_path / "c10")
    (root / "data_batch_3").unlink()
    with pytest.raises(DatasetError) as info:
        load_dataset(f"cifar10:{root}", kind="image", channels=3, size=(32, 32), classes=10)
    message = str(info.value)
    assert "lacks 'data_batch_3'" in message and "\n" not in message


def test_cifar_refuses_a_pickle_that_runs_code(tmp_path):
    root = make_cifar(tmp_path / "c10")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DatasetError, match="global 'builtins.print' is not allowed"):
        load_dataset(f"cifar10:{root}", kind="image", channels=3, size=(32, 32), classes=10)


def test_cifar_wrong_space(tmp_path):
    root = make_cifar(tmp_path / "c10")
    with pytest.raises(DatasetError, match="3-channel images .* allowed: 3"):
        load_dataset(f"cifar10:{root}", kind="image", channels=1, size=(32, 32), classes=10)
    with pytest.raises(DatasetError, match="has 10 classes but the search space has 100"):
        load_dataset(f"cifar10:{root}", kind="image", channels=3, size=(32, 32), classes=100)


# ---------------------------------------------------------------------------------------------
# uint8 in memory: the same numbers as float


def test_per_batch_normalisation_equals_float_normalisation():
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (50, 3, 5, 5), dtype=torch.uint8, generator=gen)
    labels = torch.arange(50) % 2
    mean, std = pixel_stats(pixels)
    images = ArrayImages(pixels, labels, mean, std, 3)
    x = pixels.float() / 255.0
    s, m = torch.std_mean(x, dim=[0, 2, 3], keepdim=True)
    assert torch.equal(m, mean) and torch.equal(s, std)
    assert torch.equal(take(images, torch.arange(50))[0], (x - m) / s)
    # the float64 chunked statistics (large data) agree with the float32 ones
    from fusion_nas.training.data import images as images_module

    exact = images_module.EXACT_STATS_VALUES
    images_module.EXACT_STATS_VALUES = 0
    try:
        m64, s64 = pixel_stats(pixels, torch.arange(50))
    finally:
        images_module.EXACT_STATS_VALUES = exact
    assert torch.allclose(m64, mean, atol=1e-6) and torch.allclose(s64, std, atol=1e-6)


def test_uint8_trains_like_the_same_data_as_float():
    gen = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (64, 1, 6, 6), dtype=torch.uint8, generator=gen)
    labels = (pixels.float().mean(dim=(1, 2, 3)) > 127).long()
    mean, std = pixel_stats(pixels)
    images = ArrayImages(pixels, labels, mean, std, 1)
    floats = TensorDataset((pixels.float() / 255.0 - mean) / std, labels)
    weights = []
    for data in (images, floats):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 2))
        r = train_proxy(model, data, data, ProxyConfig(epochs=2, batch_size=16), seed=3)
        weights.append((r.curve, [p.detach().clone() for p in model.parameters()]))
    assert weights[0][0] == weights[1][0]
    assert all(torch.equal(a, b) for a, b in zip(weights[0][1], weights[1][1]))


def test_all_training_data_joins_rows_not_pixels(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    root = make_cifar(tmp_path / "c10")
    splits = load_dataset(f"cifar10:{root}", kind="image", channels=3, size=(32, 32), classes=10)
    full = all_training_data(splits.train, splits.val)
    assert isinstance(full, ArrayImages) and full.pixels is splits.train.pixels
    assert len(full) == 100
    assert torch.equal(full.labels, torch.cat([splits.train.labels, splits.val.labels]))
    assert concat(splits.train, TensorDataset(torch.zeros(1))) is None


# ---------------------------------------------------------------------------------------------
# CUDA (deselected without a GPU)


@pytest.mark.gpu
def test_images_train_on_cuda_resident_and_streamed(tmp_path, monkeypatch):
    root = make_cifar(tmp_path / "c10")
    space = dict(kind="image", channels=3, size=(32, 32), classes=10)
    splits = load_dataset(f"cifar10:{root}", **space)
    config = ProxyConfig(epochs=2, batch_size=16, cutout=4, mixup=0.2)
    curves = []
    for _ in range(2):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
        result = train_proxy(model, splits.train, splits.val, config, device="cuda")
        curves.append(result.curve)
    assert curves[0] == curves[1]  # deterministic for a seed on the GPU too
    assert splits.train.on(torch.device("cuda:0")) or splits.train.on(torch.device("cuda"))
    assert 0 <= evaluate_accuracy(model, splits.test) <= 1
    monkeypatch.setenv(CACHE_ENV, "off")  # decoded per read: the pinned loader path
    pets = load_dataset(f"folder:{make_pets(tmp_path / 'pets', n=20)}", **RGB8)
    assert isinstance(pets.train, FolderImages)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 2))
    result = train_proxy(
        model, pets.train, pets.val, ProxyConfig(epochs=1, batch_size=8), device="cuda"
    )
    assert len(result.curve) == 1
