"""benchmarks/vision_front.py: its pieces (proxy fields, subsets, Kendall tau, the sampler) and
a smoke run on a generated CIFAR-10-shaped folder."""

from __future__ import annotations

import gzip
import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusion_nas.errors import FusionNasError
from fusion_nas.model.space import load_space
from fusion_nas.store.store import Store
from fusion_nas.training.data import read_idx
from tests.helpers.benchmarks import load

vf = load("vision_front")


def test_extra_fields_are_checked_against_proxy_config() -> None:
    assert vf.parse_extra(["lr=0.003", "epochs=4", "compile=true", "train-subset=none"]) == {
        "lr": 0.003,
        "epochs": 4,
        "compile": True,
        "train_subset": None,
    }
    with pytest.raises(FusionNasError, match=r"no field 'mixupp' .*allowed: 'epochs'"):
        vf.parse_extra(["mixupp=0.2"])
    with pytest.raises(FusionNasError, match=r"epochs='x' is not a number; allowed: a int"):
        vf.parse_extra(["epochs=x"])
    with pytest.raises(FusionNasError, match="expected KEY=VALUE"):
        vf.parse_extra(["lr"])


def test_text_fields_keep_their_text_so_augment_none_is_not_the_default() -> None:
    assert vf.parse_extra(["augment=none", "cutout=8", "label-smoothing=0.1"]) == {
        "augment": "none",  # not None, which would mean the dataset's default (crop,flip)
        "cutout": 8,
        "label_smoothing": 0.1,
    }
    assert vf.make_proxy({}, vf.parse_extra(["augment=none"])).augment == "none"
    assert vf.make_proxy({}, vf.parse_extra(["augment=flip,crop"])).augment == "crop,flip"
    with pytest.raises(FusionNasError, match="augment 'sideways' is not allowed"):
        vf.make_proxy({}, vf.parse_extra(["augment=sideways"]))


def test_final_schedule_keeps_the_proxys_augmentation() -> None:
    job = {
        "dataset": "synthetic",
        "space_toml": load_space("cifar10").source,
        "proxy": {"epochs": 2, "lr": 0.003, "batch_size": 64, "train_subset": None},
        "extra": vf.parse_extra(["augment=crop", "cutout=8", "mixup=0.2", "precision=bf16"]),
        "seed": 0,
        "data_dir": None,
        "final": {"epochs": 7, "lr": 0.05, "batch_size": 32, "weight_decay": 0.01},
    }
    schedule = vf._protocol(job).schedule(7)
    assert (schedule.epochs, schedule.lr, schedule.batch_size, schedule.weight_decay) == (
        7,
        0.05,
        32,
        0.01,
    )
    assert (schedule.augment, schedule.cutout, schedule.mixup, schedule.precision) == (
        "crop",
        8,
        0.2,
        "bf16",
    )


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau_matches_scipy(seed: int, monkeypatch) -> None:
    rng = random.Random(seed)
    a = [rng.choice([0.1, 0.2, 0.3, 0.4]) for _ in range(9)]  # with ties
    b = [rng.random() for _ in range(9)]
    with_scipy = vf.kendall_tau(a, b)
    import scipy.stats

    monkeypatch.delattr(scipy.stats, "kendalltau")  # the exact count, as without scipy
    assert vf.kendall_tau(a, b) == pytest.approx(with_scipy)
    assert vf.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert vf.kendall_tau([1.0], [2.0]) is None


def test_the_sampler_draws_conv_heavy_and_attention_heavy_networks_within_budget() -> None:
    space = load_space("cifar10")
    archs = vf.sample_within(space, 6, 20_000_000, None, seed=0)
    assert len({a.arch_id for a in archs}) == 6
    heavy = [vf.conv_share(a) > 0.5 for a in archs]
    assert heavy.count(True) == 3 and heavy.count(False) == 3
    for a in archs:
        assert vf.arch_row("x", a, space)["macs"] <= 20_000_000
    ranks = vf.mean_ranks([0.9, 0.8, 0.7, 0.6], [True, False, True, False])
    assert ranks == {"conv_heavy": 2.0, "attention_heavy": 3.0}


def _idx(path: Path, array: np.ndarray) -> None:
    head = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + array.astype(np.uint8).tobytes())


def test_fashion_subset_keeps_the_first_images_of_each_class(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    src = tmp_path / "src"
    src.mkdir()
    y = np.array([0, 1, 0, 2, 1, 0, 2, 2], dtype=np.uint8)
    x = np.arange(len(y) * 4, dtype=np.uint8).reshape(len(y), 2, 2)
    for prefix in ("train", "t10k"):
        _idx(src / f"{prefix}-images-idx3-ubyte.gz", x)
        _idx(src / f"{prefix}-labels-idx1-ubyte.gz", y)
    out = Path(vf.fashion_data(src, 2, 1))
    ys = read_idx(out / "train-labels-idx1-ubyte.gz")
    assert ys.tolist() == [0, 1, 0, 2, 1, 2]  # two of each class, in file order
    assert read_idx(out / "train-images-idx3-ubyte.gz").tolist() == x[[0, 1, 2, 3, 4, 6]].tolist()
    assert read_idx(out / "t10k-labels-idx1-ubyte.gz").tolist() == [0, 1, 2]
    assert vf.fashion_data(src, None, None) == str(src)


def _cifar_folder(root: Path, train: int, test: int) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(10):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                pixels[..., c % 3] = 40 + 20 * c  # a class-dependent channel
                Image.fromarray(pixels).save(d / f"{i:04d}.png")


def test_missing_cifar_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(FusionNasError, match="no CIFAR-10 folders in .* tar -xzf"):
        vf.cifar_data(tmp_path, None, None)


def test_smoke_run_writes_json_markdown_and_figure(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    data = tmp_path / "cifar"
    _cifar_folder(data, train=8, test=2)
    out = tmp_path / "out"
    args = ["--dataset", "cifar10", "--data", str(data), "--train-per-class", "6",
            "--trials", "2", "--proxy-epochs", "1", "--epochs", "1", "--batch-size", "16",
            "--retrain", "1", "--baselines", "paper-cnn", "--tau", "2",
            "--aug-on", "lr=0.01", "--aug-off", "lr=0.003", "--workers", "1",
            "--store", f"sqlite:///{tmp_path}/s.db", "--out", str(out)]  # fmt: skip
    doc = vf.main(args)
    assert doc["train_samples"] == 60 and doc["test_samples"] == 20  # the subset, all tests
    assert [b["label"] for b in doc["baselines"]] == ["paper-cnn"]
    assert len(doc["searched_front"]) == 1 and doc["searched_front"][0]["macs"] <= 20_000_000
    tau = doc["tau_study"]
    assert len(tau["networks"]) == 2 and tau["aug_on"] == {"lr": 0.01}
    assert all({"val_acc_on", "val_acc_off", "test_acc"} <= set(n) for n in tau["networks"])
    assert "JPEG (quality 75)" in doc["note"]
    stem = out / "vision_front_cifar10"
    assert json.loads(stem.with_suffix(".json").read_text())["dataset"] == "cifar10"
    assert "JPEG (quality 75)" in stem.with_suffix(".md").read_text()
    assert "plotly" in stem.with_suffix(".html").read_text()
    runs = stem.with_suffix(".runs.jsonl").read_text().splitlines()
    assert len(runs) == 1 + 1 + 2 * 3  # front, baseline, tau: final and two proxies each
    again = vf.main(args)  # every training reused from the cache
    assert again["searched_front"] == doc["searched_front"]
    assert len(stem.with_suffix(".runs.jsonl").read_text().splitlines()) == len(runs)


ZOO_SPACE = """
name = "tiny-hybrids"
[input]
kind = "image"
size = [32, 32]
channels = 3
classes = 10
[stem]
width = 8
stride = 2
[[stage]]
operator = ["conv", "attention"]
width = 8
heads = 2
downsample = "pool"
[zoo]
members = ["edgenext_xx_small"]
width = 0.25
depth = 0.5
"""


def test_zoo_members_as_baselines_and_first_trials_with_latency(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    data = tmp_path / "cifar"
    _cifar_folder(data, train=8, test=2)
    space = tmp_path / "tiny-hybrids.toml"
    space.write_text(ZOO_SPACE)
    out = tmp_path / "out"
    args = ["--dataset", "cifar10", "--data", str(data), "--train-per-class", "6",
            "--space", str(space), "--zoo", "--start-from", "edgenext_xx_small",
            "--trials", "2", "--proxy-epochs", "1", "--epochs", "1", "--batch-size", "16",
            "--retrain", "2", "--baselines", "paper-cnn", "--latency", "--tag=-zoo",
            "--workers", "1", "--store", f"sqlite:///{tmp_path}/s.db",
            "--out", str(out)]  # fmt: skip
    doc = vf.main(args)
    assert doc["space"] == "tiny-hybrids"
    assert {b["label"] for b in doc["baselines"]} == {"paper-cnn", "zoo:edgenext_xx_small"}
    rows = doc["baselines"] + doc["searched_front"]
    assert all(r["latency_ms"] > 0 for r in rows)
    # the queued member is the search's first trial, recorded as such
    records = Store(f"sqlite:///{tmp_path}/s.db").records("vision-cifar10")
    assert records[0].start_from["member"] == "edgenext_xx_small"
    assert all(r.start_from is None for r in records[1:])
    table = (out / "vision_front_cifar10-zoo.md").read_text()
    assert "CPU ms, batch 1" in table and "zoo:edgenext_xx_small" in table
