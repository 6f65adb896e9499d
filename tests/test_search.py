"""End-to-end search: CLI, store fields, resume, determinism, faults and budgets."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import fusion_nas.evaluate as evaluate_mod
from fusion_nas.cli.app import app
from fusion_nas.evaluate import EvalTask, evaluate
from fusion_nas.search import SearchConfig, run_search
from fusion_nas.space import load_space, parse_space
from fusion_nas.store import Store
from fusion_nas.train import ProxyConfig

runner = CliRunner()
FIELDS = ("arch", "arch_id", "arch_desc", "macs", "params", "val_acc", "curve", "train_seconds")


@pytest.fixture()
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


def cli(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def search_args(url: str, name: str, trials: int, *extra: str) -> list[str]:
    return [
        "search", "digits", "--dataset", "synthetic", "--trials", str(trials), "--epochs", "1",
        "--name", name, "--store", url, *extra,
    ]  # fmt: skip


def test_cli_search_records_every_field_and_results_show_it(url: str) -> None:
    res = cli(*search_args(url, "s1", 4))
    assert res.exit_code == 0, res.output
    assert "Done" in res.output and "fusion-nas results s1" in res.output
    df = Store(url).trials("s1")
    assert len(df) == 4
    assert set(df.status) == {"complete"}
    for _, row in df.iterrows():
        for field in FIELDS:
            assert row[field] is not None, field
        assert len(row["curve"]) == 1 and row["val_acc"] == row["curve"][-1]
        assert 0.0 <= row["val_acc"] <= 1.0 and row["macs"] > 0 and row["params"] > 0
        assert row["arch"]["space"] == "digits" and len(row["arch"]["stages"]) == 2
    assert df.on_front.sum() >= 1
    record = Store(url).search("s1")
    assert record.dataset == "synthetic" and record.proxy["epochs"] == 1
    assert record.strategy == "optuna:nsga2" and record.seed == 0 and record.version
    assert record.n_trials >= 1 and "[[stage]]" in record.space_toml

    listing = cli("results", "--store", url)
    assert listing.exit_code == 0 and "s1" in listing.output and "optuna:nsga2" in listing.output
    table = cli("results", "s1", "--store", url)
    assert table.exit_code == 0 and table.output.count("complete") == 4 and "*" in table.output
    rows = json.loads(cli("results", "s1", "--store", url, "--format", "json").output)
    assert [r["number"] for r in rows] == [0, 1, 2, 3]
    csv = cli("results", "--store", url, "--format", "csv").output.splitlines()
    assert csv[0].startswith("name,space,dataset,strategy") and csv[1].startswith("s1,digits")


def test_resume_adds_exactly_the_missing_trials(url: str) -> None:
    assert cli(*search_args(url, "r", 3)).exit_code == 0
    first = Store(url).trials("r")
    res = cli(*search_args(url, "r", 5))
    assert res.exit_code == 0 and "Resuming" in res.output
    df = Store(url).trials("r")
    assert list(df.number) == [0, 1, 2, 3, 4]
    assert df.iloc[:3].arch_id.tolist() == first.arch_id.tolist()  # old trials untouched
    assert cli(*search_args(url, "r", 5)).exit_code == 0
    assert len(Store(url).trials("r")) == 5  # nothing missing, nothing added
    assert Store(url).search("r").n_trials == 5


@pytest.mark.parametrize(
    ("change", "word"),
    [
        (["--epochs", "2"], "proxy"),
        (["--seed", "3"], "seed"),
        (["--strategy", "optuna:random"], "strategy"),
    ],
)
def test_mismatched_resume_is_refused(url: str, change: list[str], word: str) -> None:
    assert cli(*search_args(url, "m", 2)).exit_code == 0
    args = search_args(url, "m", 4)
    args = [a for a in args if a not in ("--epochs", "1")] if "--epochs" in change else args
    res = cli(*args, *change)
    assert res.exit_code == 2
    assert f"different {word}" in res.stderr and "Traceback" not in res.output
    assert len(Store(url).trials("m")) == 2


def test_mismatched_dataset_is_refused(url: str) -> None:
    assert cli(*search_args(url, "d", 2)).exit_code == 0
    args = search_args(url, "d", 4)
    args[args.index("synthetic")] = "digits"
    res = cli(*args)
    assert res.exit_code == 2 and "different dataset ('synthetic', now 'digits')" in res.stderr


def test_search_on_digits_dataset_with_grid(url: str) -> None:
    res = cli("search", "digits", "--trials", "3", "--epochs", "1", "--strategy", "optuna:grid",
              "--name", "g", "--store", url)  # fmt: skip
    assert res.exit_code == 0, res.output
    df = Store(url).trials("g")
    assert len(df) == 3 and set(df.status) == {"complete"} and df.arch_id.nunique() == 3


@pytest.mark.parametrize("strategy", ["optuna:tpe", "optuna:random"])
def test_other_optuna_strategies(url: str, strategy: str) -> None:
    assert cli(*search_args(url, "o", 3, "--strategy", strategy)).exit_code == 0
    assert len(Store(url).trials("o")) == 3


def test_two_workers_complete_the_search(url: str) -> None:
    res = cli(*search_args(url, "w", 4, "--workers", "2"))
    assert res.exit_code == 0, res.output
    df = Store(url).trials("w")
    assert len(df) == 4 and set(df.status) == {"complete"}


def test_same_seed_gives_identical_validation_accuracy() -> None:
    space = load_space("mnist1d")
    arch = space.sample(1)
    task = EvalTask(
        arch.to_json(), space.source, "mnist1d", ProxyConfig(epochs=1, train_subset=600)
    )
    torch.set_num_threads(2)
    a, b = evaluate(task), evaluate(task)
    assert a.status == b.status == "complete"
    assert a.val_acc == b.val_acc and a.curve == b.curve
    other = evaluate(EvalTask(**{**task.__dict__, "seed": 1}))
    assert other.curve != a.curve  # the seed matters, so equality above is not an accident


class _NaNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w.expand(x.shape[0], 10) * float("nan")


class _SlowModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.3)
        return self.w.expand(x.shape[0], 10)


def test_faults_become_failed_trials_and_the_search_goes_on(url: str, monkeypatch) -> None:
    real = evaluate_mod.build_model
    calls = {"n": 0}

    def faulty(arch, space):
        calls["n"] += 1
        if calls["n"] == 1:
            return _NaNModel()
        if calls["n"] == 2:
            raise RuntimeError("boom in trial")
        if calls["n"] == 3:
            return _SlowModel()
        return real(arch, space)

    monkeypatch.setattr(evaluate_mod, "build_model", faulty)
    config = SearchConfig(
        name="faults",
        space=load_space("digits"),
        dataset="synthetic",
        strategy="optuna:random",
        trials=5,
        proxy=ProxyConfig(epochs=1),
        trial_timeout=0.5,
    )
    df = run_search(config, Store(url))
    assert len(df) == 5
    reasons = df.set_index("number").fail_reason
    assert df.status.tolist()[:3] == ["failed"] * 3
    assert "non-finite loss" in reasons[0]
    assert reasons[1] == "RuntimeError: boom in trial"
    assert reasons[2].startswith("timeout: trial exceeded 0.5 s")
    assert (df.status.iloc[3:] == "complete").all()
    assert cli("results", "faults", "--store", url).output.count("failed") == 3


def test_no_trial_over_the_flops_budget_is_trained(url: str, monkeypatch) -> None:
    space = load_space("digits")
    trained: list[str] = []
    real = evaluate_mod.train_proxy

    def spy(model, *args, **kwargs):
        trained.append(model.arch.arch_id)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(evaluate_mod, "train_proxy", spy)
    budget = 150_000
    config = SearchConfig(
        name="budget",
        space=space,
        dataset="synthetic",
        strategy="optuna:random",
        trials=8,
        proxy=ProxyConfig(epochs=1),
        max_flops=budget,
        seed=4,
    )
    df = run_search(config, Store(url))
    over = df[df.macs > budget]
    assert len(over) > 0, "the test needs over-budget samples"
    assert set(over.status) == {"infeasible"}
    assert over.train_seconds.isna().all()
    assert not set(over.arch_id) & set(trained)
    assert (df[df.status == "complete"].macs <= budget).all()
    assert over.fail_reason.str.contains("--max-flops 150,000").all()


def test_a_network_too_large_for_memory_is_failed_without_allocating(url: str, monkeypatch) -> None:
    space = parse_space(
        """
        [input]
        kind = "sequence"
        length = 40
        channels = 1
        classes = 10
        [stem]
        width = 8
        [[stage]]
        operator = "conv"
        width = 65536
        """,
        source="wide.toml",
    )
    monkeypatch.setattr(
        evaluate_mod, "train_proxy", lambda *a, **k: pytest.fail("a huge network was trained")
    )
    config = SearchConfig(
        name="wide", space=space, dataset="synthetic", trials=1, proxy=ProxyConfig(epochs=1)
    )
    df = run_search(config, Store(url))
    (row,) = df.to_dict("records")
    assert row["status"] == "failed" and row["params"] > 12_000_000_000
    assert row["fail_reason"].startswith("too large to train here, not trained:")
    assert "GiB" in row["fail_reason"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nope"], "unknown dataset 'nope'; allowed: 'mnist1d'"),
        (
            ["--strategy", "optuna:magic"],
            "unknown strategy 'optuna:magic'; allowed: 'optuna:nsga2'",
        ),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_bad_search_input_is_one_line_and_writes_nothing(url: str, args, message) -> None:
    res = cli("search", "digits", "--trials", "2", "--store", url, "--name", "bad", *args)
    assert res.exit_code == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.output
    assert Store(url).search_names() == []


def test_grid_refuses_a_space_too_large_to_enumerate(url: str) -> None:
    res = cli("search", "mnist1d", "--strategy", "optuna:grid", "--store", url)
    assert res.exit_code == 2
    assert "optuna:grid cannot enumerate space 'mnist1d': 1,115,136 architectures" in res.stderr
    assert Store(url).search_names() == []


def test_malformed_space_file_and_store_url(tmp_path, url: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[input]\nkind = 'video'\n")
    res = cli("search", str(bad), "--dataset", "synthetic", "--store", url)
    assert res.exit_code == 2 and "input.kind: 'video' is not allowed" in res.stderr
    res = cli("search", "digits", "--store", "nosuchdb://x")
    assert res.exit_code == 2 and "store URL" in res.stderr
    res = cli("results", "--store", "mongodb://localhost/x")
    assert res.exit_code == 2 and "allowed: 'sqlite', 'postgresql', 'mysql'" in res.stderr


def test_results_of_unknown_search_lists_known_ones(url: str) -> None:
    assert cli(*search_args(url, "known", 1)).exit_code == 0
    res = cli("results", "nope", "--store", url)
    assert res.exit_code == 2 and "no search named 'nope'" in res.stderr and "'known'" in res.stderr
    missing = cli("results", "--store", f"sqlite:///{url.split('///')[1]}.missing")
    assert missing.exit_code == 2 and "no results store" in missing.stderr
