"""``fusion-nas baselines``: listing, training into the store, re-runs, test split, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.evaluation import trainer as evaluate_mod
from fusion_nas.store.store import Store
from fusion_nas.training import data as data_mod
from fusion_nas.training.loop import ProxyConfig
from fusion_nas.training.protocol import TrainingProtocol

runner = CliRunner()
TINY = ["--dataset", "synthetic", "--epochs", "1", "--proxy-epochs", "1", "--train-subset", "64"]


def cli(*args: str):
    return runner.invoke(app, list(args))


def test_help_and_top_level_listing() -> None:
    assert "baselines" in cli("--help").output
    res = cli("baselines", "--help")
    assert res.exit_code == 0
    for option in (
        "--dataset",
        "--only",
        "--epochs",
        "--proxy-epochs",
        "--store",
        "--seed",
        "--list",
    ):
        assert option in res.output


def test_list_shows_the_baselines_of_a_space_and_trains_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = cli("baselines", "mnist1d", "--list")
    assert res.exit_code == 0, res.output
    lines = {line.split()[1]: line for line in res.output.splitlines() if line.startswith("│")}
    assert "31,750" in lines["paper-cnn"] and "5,210" in lines["paper-cnn"]
    assert "14,880" in lines["paper-gru"] and "5,134" in lines["paper-gru"]
    assert "parallel(k5,chan" in lines["can"]
    assert "not available: image spaces only" in lines["resnet20"]
    assert set(lines) == {
        "paper-cnn",
        "paper-gru",
        "resnet20",
        "all-conv",
        "all-attention",
        "can",
        "gated",
        "hvt",
        "video-3dcnn",
        "video-transformer",
        "video-hybrid",
        "video-parallel",
        "frame-average",
    }
    assert "not available: video spaces only" in lines["video-hybrid"]
    res = cli("baselines", "digits", "--list")
    assert res.exit_code == 0
    assert "not available: sequence spaces only" in res.output
    assert not (tmp_path / "results").exists()  # no store opened


@pytest.fixture()
def test_split_reads(monkeypatch) -> list[str]:
    """Every read of a ``DataSplits.test`` (the reading function's name), and the start and
    end of every proxy run, in order."""
    events: list[str] = []

    class SpiedSplits(data_mod.DataSplits):
        def __getattribute__(self, name: str):
            if name == "test":
                events.append(f"test read in {sys._getframe(1).f_code.co_name}")
            return super().__getattribute__(name)

    proxy_score = TrainingProtocol.proxy_score

    def spied_proxy(self, *args, **kwargs):
        events.append("proxy start")
        try:
            return proxy_score(self, *args, **kwargs)
        finally:
            events.append("proxy end")

    monkeypatch.setattr(data_mod, "DataSplits", SpiedSplits)
    monkeypatch.setattr(TrainingProtocol, "proxy_score", spied_proxy)
    evaluate_mod.dataset_for.cache_clear()  # splits loaded earlier were made without the spy
    yield events
    evaluate_mod.dataset_for.cache_clear()


def test_training_stores_a_record_and_a_rerun_replaces_it(
    tmp_path: Path, test_split_reads: list[str], monkeypatch
) -> None:
    from fusion_nas.training import protocol as retrain_mod

    schedules = []  # (epochs, lr, batch size) of every final training
    real_train = retrain_mod.train_proxy

    def train(model, train_set, val, config, **kwargs):
        if val is None:
            schedules.append((config.epochs, config.lr, config.batch_size))
        return real_train(model, train_set, val, config, **kwargs)

    monkeypatch.setattr(retrain_mod, "train_proxy", train)
    url = f"sqlite:///{tmp_path}/b.db"
    res = cli("baselines", "digits", *TINY, "--only", "paper-cnn, all-conv", "--store", url,
              "--final-lr", "0.01", "--final-batch-size", "32")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert schedules == [(1, 0.01, 32)] * 2
    table = [line for line in res.output.splitlines() if line.startswith("│")]
    assert [line.split()[1] for line in table] == ["paper-cnn", "all-conv"]
    assert "34,000" in table[0] and "80,544" in table[1]
    assert "baselines:digits:synthetic" in res.output

    # The proxy runs never read the test split; the final runs read it, from retrain only.
    assert test_split_reads.count("proxy start") == 2
    inside = False
    for event in test_split_reads:
        inside = {"proxy start": True, "proxy end": False}.get(event, inside)
        assert not (inside and event.startswith("test read")), test_split_reads
    reads = {e for e in test_split_reads if e.startswith("test read")}
    assert reads == {"test read in retrain"}

    store = Store(url)
    name = "baselines:digits:synthetic"
    first = {b.name: b for b in store.baselines(name)}
    assert list(first) == ["paper-cnn", "all-conv"]
    cnn = first["paper-cnn"]
    assert cnn.arch is None and (cnn.macs, cnn.params) == (34_000, 12_210)
    assert cnn.proxy["epochs"] == 1 and cnn.proxy["train_subset"] == 64
    assert cnn.epochs == 1 and cnn.seed == 0 and cnn.threads == 1
    assert (cnn.lr, cnn.batch_size, cnn.weight_decay) == (0.01, 32, 0.05)
    assert 0 <= cnn.val_acc <= 1 and 0 <= cnn.test_acc <= 1 and cnn.seconds > 0
    assert first["all-conv"].arch["stages"][0]["operator"] == "conv"
    assert f"{cnn.val_acc:.4f}" in table[0] and f"{cnn.test_acc:.4f}" in table[0]

    res = cli("baselines", "digits", *TINY[:-4], "--proxy-epochs", "2", "--train-subset", "64",
              "--only", "all-conv", "--store", url)  # fmt: skip
    assert res.exit_code == 0, res.output
    again = {b.name: b for b in store.baselines(name)}
    assert list(again) == ["paper-cnn", "all-conv"]
    assert again["paper-cnn"] == cnn  # untouched
    assert again["all-conv"].proxy["epochs"] == 2 and len(again["all-conv"].curve) == 2
    default = ProxyConfig()  # by default the final schedule has the proxy's lr and batch size
    assert schedules[-1] == (1, default.lr, default.batch_size)
    assert (again["all-conv"].lr, again["all-conv"].batch_size) == (default.lr, default.batch_size)
    assert len(optuna.load_study(study_name=name, storage=store.storage).trials) == 2
    assert store.search_names() == []
    listed = cli("results", "--store", url)
    assert listed.exit_code == 0 and "baselines:" not in listed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "paper-cnn,resnet"], "unknown baseline 'resnet'; allowed: 'paper-cnn', "),
        (
            ["--only", "paper-gru"],
            "baseline 'paper-gru' is not available for space 'digits': sequence spaces only",
        ),  # fmt: skip
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'; allowed: 'mnist1d'"),
        (["--epochs", "0"], "epochs must be a positive integer, got 0"),
        (["--store", "oracle://x/y"], "unsupported store URL 'oracle://x/y'"),
        (["--threads", "0"], "--threads must be a positive integer, got 0"),
        (["--final-lr", "-1"], "learning rate must be positive, got -1.0"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, args, message) -> None:
    db = tmp_path / "store" / "b.db"
    store = ["--store", f"sqlite:///{db}"] if "--store" not in args else []
    res = runner.invoke(app, ["baselines", "digits", "--dataset", "synthetic", *store, *args])
    assert res.exit_code == 2, res.output
    assert message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not db.parent.exists()  # nothing written


def test_unknown_space_is_one_line() -> None:
    res = cli("baselines", "nope", "--list")
    assert res.exit_code == 2 and "unknown search space 'nope'; allowed:" in res.stderr


def test_a_baseline_that_fails_is_reported_and_the_others_are_stored(
    tmp_path: Path, monkeypatch
) -> None:
    from fusion_nas.analysis.baselines import PaperCNN
    from fusion_nas.errors import TrialFailed
    from fusion_nas.training import protocol as retrain_mod

    real_train = retrain_mod.train_proxy

    def train(model, *args, **kwargs):
        if isinstance(model, PaperCNN):
            raise TrialFailed("non-finite loss (nan) at epoch 1, step 3")
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(retrain_mod, "train_proxy", train)
    url = f"sqlite:///{tmp_path}/f.db"
    res = cli("baselines", "digits", *TINY, "--only", "paper-cnn,all-conv", "--store", url)
    assert res.exit_code == 0, res.output
    assert "paper-cnn failed: non-finite loss (nan) at epoch 1, step 3" in res.output
    assert "failed: paper-cnn (not stored)" in res.output
    stored = Store(url).baselines("baselines:digits:synthetic")
    assert [b.name for b in stored] == ["all-conv"]
