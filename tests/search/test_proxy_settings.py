"""Augmentation settings of a search: settled and stored, refused on sequences before the store
is touched, and old stored proxies (without them) resume unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.store import records
from fusion_nas.store.store import Store
from fusion_nas.training.loop import STORED_DEFAULTS, ProxyConfig

runner = CliRunner()


def search(url: str, space: str, dataset: str, *extra: str):
    args = ["search", space, "--dataset", dataset, "--trials", "1", "--epochs", "1"]
    return runner.invoke(app, [*args, "--store", url, "--name", "s", *extra])


def forget_augmentation(url: str, name: str) -> None:
    """Rewrite the stored proxy as a store from before augmentation existed holds it."""
    store = Store(url)
    old = store.search_record(name)
    proxy = {k: v for k, v in old.proxy.items() if k not in STORED_DEFAULTS}
    records.write_search(store.load_study(name), dataclasses.replace(old, proxy=proxy))


def pets(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in range(10):  # the digits space's 10 classes, 8x8 grey
        (root / "train" / f"c{c}").mkdir(parents=True)
        for i in range(4):
            px = np.clip(20 * c + rng.integers(0, 40, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / "train" / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture()
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


def test_augmentation_on_sequences_is_one_line_and_writes_nothing(tmp_path, url) -> None:
    for option in (["--augment", "crop"], ["--cutout", "4"]):
        res = search(url, "mnist1d", "synthetic", *option)
        assert res.exit_code == 2, res.output
        assert "kind 'sequence'" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "store.db").exists()
    res = search(url, "digits", "synthetic", "--augment", "rotate")
    assert res.exit_code == 2 and "augment 'rotate' is not allowed" in res.stderr


def test_new_searches_store_the_datasets_default_and_old_ones_resume(tmp_path, url) -> None:
    assert search(url, "digits", "synthetic").exit_code == 0
    assert Store(url).search_record("s").proxy["augment"] == "none"
    forget_augmentation(url, "s")
    res = search(url, "digits", "synthetic", "--trials", "2")  # the same command, resumed
    assert res.exit_code == 0, res.output
    assert len(Store(url).trials("s")) == 2
    res = search(url, "digits", "synthetic", "--trials", "3", "--mixup", "0.2")
    assert res.exit_code == 2 and "different proxy" in res.stderr


def test_an_old_folder_search_keeps_training_without_augmentation(tmp_path, url) -> None:
    root = pets(tmp_path / "pets")
    (root / "train" / "c3" / "broken.png").write_bytes(b"garbage")
    folder = f"folder:{root}"
    res = search(url, "digits", folder, "--batch-size", "4")
    assert res.exit_code == 0, res.output
    record = Store(url).search_record("s")
    assert record.proxy["augment"] == "crop,flip"  # natural images
    assert record.skipped_files == 1  # the corrupt file, recorded on the search
    forget_augmentation(url, "s")  # as stored before augmentation: it trained without
    res = search(url, "digits", folder, "--batch-size", "4", "--trials", "2")
    assert res.exit_code == 0, res.output
    stored = Store(url).search_record("s").proxy
    assert "augment" not in stored  # the record is kept as it was
    assert ProxyConfig.from_dict(stored).augment == "none"  # what retraining reads
    res = search(url, "digits", folder, "--batch-size", "4", "--trials", "3", "--augment", "flip")
    assert res.exit_code == 2 and "different proxy" in res.stderr
