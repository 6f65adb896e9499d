"""End-to-end search: CLI, store fields, resume, determinism, faults and budgets."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import fusion_nas.evaluation.trainer as evaluate_mod
import fusion_nas.training.data as data_mod
import fusion_nas.training.loop as train_mod
from fusion_nas.cli.app import app
from fusion_nas.evaluation.trainer import EvalTask, evaluate
from fusion_nas.model.arch import Architecture
from fusion_nas.model.space import load_space, parse_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig

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
    record = Store(url).search_record("s1")
    assert record.dataset == "synthetic" and record.proxy["epochs"] == 1
    assert record.strategy == "optuna:tpe" and record.seed == 0 and record.version  # default
    assert record.n_trials >= 1 and "[[stage]]" in record.space_toml

    listing = cli("results", "--store", url)
    assert listing.exit_code == 0 and "s1" in listing.output and "optuna:tpe" in listing.output
    table = cli("results", "s1", "--store", url)
    assert table.exit_code == 0 and "*" in table.output
    assert "complete 4," in table.output  # the caption counts every status
    rows = [line for line in table.output.splitlines() if " complete " in line]
    assert len([line for line in rows if "complete 4," not in line]) == 4  # the table's rows
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
    assert Store(url).search_record("r").n_trials == 5


def db_dump(url: str) -> str:
    """Every row of a SQLite store as SQL text: equal dumps mean an untouched store."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as con:
        return "\n".join(con.iterdump())


# The search every resume case starts from: budgets set (generous: every trial trains).
BASE_BUDGET = ["--max-flops", "10000000", "--max-params", "1000000"]


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("base") / "store.db"
    res = cli(*search_args(f"sqlite:///{path}", "m", 2, *BASE_BUDGET))
    assert res.exit_code == 0, res.output
    return path


def changed_space(tmp_path: Path, edit: tuple[str, str]) -> str:
    """A copy of the digits space file with one text edit; its path."""
    text = load_space("digits").source
    assert edit[0] in text
    path = tmp_path / "digits.toml"
    path.write_text(text.replace(*edit, 1))
    return str(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--epochs", "2"], "different proxy"),
        (["--seed", "3"], "different seed (0, now 3)"),
        (["--strategy", "optuna:nsga2"], "different strategy ('optuna:tpe', now 'optuna:nsga2')"),
        (["--max-flops", "5000000"], "different max_flops (10000000, now 5000000)"),
        (["--max-params", "7000"], "different max_params (1000000, now 7000)"),
        (["--max-params", None], "different max_params (1000000, now None)"),  # budget dropped
        (["--max-flops", None], "different max_flops (10000000, now None)"),
        (["space", "width = 16"], "different space"),
    ],
    ids=["epochs", "seed", "strategy", "max-flops", "max-params", "no-max-params",
         "no-max-flops", "space"],
)  # fmt: skip
def test_a_changed_resume_is_refused_and_leaves_the_store_alone(
    base_store: Path, tmp_path: Path, change: list, message: str
) -> None:
    path = tmp_path / "store.db"
    shutil.copy(base_store, path)
    url = f"sqlite:///{path}"
    before = db_dump(url)
    args = search_args(url, "m", 4, *BASE_BUDGET)
    flag, value = change
    if flag == "space":
        args[1] = changed_space(tmp_path, (value, "width = 32"))
    elif flag in args:
        at = args.index(flag)
        args[at : at + 2] = [] if value is None else [flag, value]
    else:
        args += [flag, value]
    res = cli(*args)
    assert res.exit_code == 2, res.output
    assert f"search 'm' exists with a {message}" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert db_dump(url) == before  # nothing written: no trial, no changed record


def test_a_resume_with_the_same_space_in_another_file_is_accepted(
    base_store: Path, tmp_path: Path
) -> None:
    # Comments and the description do not change what a score means: the search resumes.
    path = tmp_path / "store.db"
    shutil.copy(base_store, path)
    url = f"sqlite:///{path}"
    args = search_args(url, "m", 3, *BASE_BUDGET)
    args[1] = changed_space(tmp_path, ('description = "', 'description = "reworded: '))
    res = cli(*args)
    assert res.exit_code == 0 and "Resuming search m: 2 of 3 trials done" in res.output
    assert len(Store(url).trials("m")) == 3


def test_an_nsga2_search_resumed_without_strategy_goes_on_as_nsga2(url: str) -> None:
    # NSGA-II was the default before TPE: a search begun with it resumes with it (and its
    # options) when no --strategy is given, and is refused only when another one is given.
    base = ["search", "digits", "--dataset", "synthetic", "--epochs", "1", "--store", url]
    res = cli(*base, "--trials", "2", "--strategy", "optuna:nsga2", "--population", "4")
    assert res.exit_code == 0, res.output
    name = "digits-synthetic-nsga2"  # the default name carries the strategy
    assert Store(url).search_record(name).strategy_options == {"population": 4}
    res = cli(*base, "--trials", "3", "--name", name)
    assert res.exit_code == 0, res.output
    assert f"Resuming search {name}: 2 of 3 trials done" in res.output
    record = Store(url).search_record(name)
    assert record.strategy == "optuna:nsga2" and record.strategy_options == {"population": 4}
    assert len(Store(url).trials(name)) == 3
    res = cli(*base, "--trials", "4", "--name", name, "--strategy", "optuna:tpe")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "different strategy ('optuna:nsga2', now 'optuna:tpe')" in res.stderr
    # With neither --strategy nor --name, the search is a new one under the new default.
    res = cli(*base, "--trials", "1")
    assert res.exit_code == 0 and "Resuming" not in res.output, res.output
    assert Store(url).search_record("digits-synthetic-tpe").strategy == "optuna:tpe"
    # The Python API the same way: a config that names no strategy resumes the stored one.
    space = load_space("digits")
    proxy = ProxyConfig(epochs=1)
    config = SearchConfig(name=name, space=space, dataset="synthetic", trials=4, proxy=proxy)
    assert config.strategy is None and len(run_search(config, Store(url))) == 4
    assert Store(url).search_record(name).strategy == "optuna:nsga2"


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


class _Clock:
    """The trainer's clock: real time plus whatever a slow model claims to have spent."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def perf_counter(self) -> float:
        return time.perf_counter() + self.skipped


class _SlowModel(nn.Module):
    """One forward pass that takes 100 s by the trainer's clock (and no real time)."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(10))
        self.clock = clock

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.skipped += 100.0
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
            return _SlowModel(clock)
        return real(arch, space)

    monkeypatch.setattr(evaluate_mod, "build_model", faulty)
    # A simulated slow trial: a real sleep past a short limit would also fail the real trials
    # whenever the machine is busy.
    clock = _Clock()
    monkeypatch.setattr(train_mod, "time", clock)
    config = SearchConfig(
        name="faults",
        space=load_space("digits"),
        dataset="synthetic",
        strategy="optuna:random",
        trials=5,
        proxy=ProxyConfig(epochs=1),
        trial_timeout=60,
    )
    df = run_search(config, Store(url))
    assert len(df) == 5
    reasons = df.set_index("number").fail_reason
    assert df.status.tolist()[:3] == ["failed"] * 3
    assert "non-finite loss" in reasons[0]
    assert reasons[1] == "RuntimeError: boom in trial"
    assert reasons[2].startswith("timeout: trial exceeded 60 s")
    assert (df.status.iloc[3:] == "complete").all()
    listing = cli("results", "faults", "--store", url).output
    assert "failed 3," in listing  # the caption counts every status
    rows = [line for line in listing.splitlines() if " failed " in line]
    assert len([line for line in rows if "failed 3," not in line]) == 3  # the table's rows


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
    assert "optuna:grid cannot enumerate space 'mnist1d': 1,411,002,320 architectures" in res.stderr
    assert Store(url).search_names() == []


def test_malformed_space_file_and_store_url(tmp_path, url: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[input]\nkind = 'volume'\n")
    res = cli("search", str(bad), "--dataset", "synthetic", "--store", url)
    assert res.exit_code == 2 and "input.kind: 'volume' is not allowed" in res.stderr
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


# --------------------------------------------------------------------------- --max-params


@pytest.fixture(scope="module")
def params_budget(tmp_path_factory) -> tuple[str, object, list[str]]:
    """A CLI search with --max-params 6000: its store URL, its CLI result, the trained ids."""
    url = f"sqlite:///{tmp_path_factory.mktemp('params')}/store.db"
    trained: list[str] = []
    real = evaluate_mod.train_proxy

    def spy(model, *args, **kwargs):
        trained.append(model.arch.arch_id)
        return real(model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate_mod, "train_proxy", spy)
        # seed 3 of random search proposes networks of 6,674, 5,538, 8,370 and 3,386 params
        res = cli(*search_args(url, "pb", 4, "--strategy", "optuna:random", "--seed", "3",
                               "--max-params", "6000"))  # fmt: skip
    assert res.exit_code == 0, res.output
    return url, res, trained


def test_max_params_over_budget_is_infeasible_and_never_trained(params_budget) -> None:
    url, _, trained = params_budget
    df = Store(url).trials("pb")
    over, within = df[df.params > 6000], df[df.params <= 6000]
    assert len(over) > 0 and len(within) > 0, "the test needs trials on both sides"
    assert set(over.status) == {"infeasible"} and set(within.status) == {"complete"}
    assert over.val_acc.isna().all() and over.train_seconds.isna().all()
    assert sorted(trained) == sorted(within.arch_id)  # exactly the affordable ones trained
    for _, row in over.iterrows():
        assert row.fail_reason == (
            f"over budget, not trained: params {row.params:,} > --max-params 6,000"
        )
    # the budget is an Optuna constraint: how far over it each trial is (<= 0: within)
    params = df.set_index("number").params
    for t in Store(url).load_study("pb").trials:
        over = float(params[t.number] - 6000)
        assert t.constraints == {"macs_over_budget": 0.0, "params_over_budget": over}
    assert Store(url).search_record("pb").max_params == 6000


def test_progress_bar_shows_done_best_front_and_failed(params_budget) -> None:
    url, res, _ = params_budget
    df = Store(url).trials("pb")
    lines = res.output.splitlines()
    # one line per finished trial, in order, above the bar
    trial_lines = [ln for ln in lines if re.match(r"#\d+ ", ln)]
    assert [int(ln[1:].split()[0]) for ln in trial_lines] == [0, 1, 2, 3]
    for ln, row in zip(trial_lines, df.sort_values("number").itertuples()):
        assert row.status in ln and f"{row.macs:,} MACs" in ln and row.arch_desc in ln
        if row.status == "complete":
            assert f"{row.val_acc:.4f}" in ln
        else:
            assert "(over budget, not trained: params" in ln
    ok = df[df.status == "complete"]
    (bar,) = [ln for ln in lines if ln.startswith("pb ") and "━" in ln]
    assert lines.index(bar) > lines.index(trial_lines[-1])
    done = re.search(r" (\d+)/(\d+) best (\S+)  front (\d+)  failed (\d+) (\d+:\d\d:\d\d) ETA", bar)
    assert done, bar
    assert done.groups()[:5] == (
        "4",
        "4",
        f"{ok.val_acc.max():.4f}",
        str(int(df.on_front.sum())),
        str(len(df) - len(ok)),  # failed and over budget together
    )
    summary = next(ln for ln in lines if ln.startswith("Done in "))
    assert summary.endswith(
        f"4 trials ({len(ok)} complete, 0 failed, {len(df) - len(ok)} over budget); "
        f"best validation accuracy {ok.val_acc.max():.4f}; front size {int(df.on_front.sum())}."
    )
    assert f"Store: {url}" in lines
    assert any(
        ln.startswith("View: fusion-nas results pb | fusion-nas pareto pb --open") for ln in lines
    )


# --------------------------------------------------------------------------- --workers


SPY_ENV = "FUSION_NAS_TEST_SPY_DIR"


def _spy_worker_main(conn, threads: int) -> None:
    """The real worker entry, with ``evaluate`` noting the thread count each trial ran with.

    Runs in the spawned worker process: it writes one JSON file per trial to $SPY_ENV.
    """
    real = evaluate_mod.evaluate
    out = Path(os.environ[SPY_ENV])

    def spied(task: EvalTask):
        outcome = real(task)
        arch_id = Architecture.from_json(task.arch_json).arch_id
        note = {"pid": os.getpid(), "threads": torch.get_num_threads(), "arch_id": arch_id}
        (out / f"{os.getpid()}-{arch_id}.json").write_text(json.dumps(note))
        return outcome

    evaluate_mod.evaluate = spied
    evaluate_mod._worker_main(conn, threads)


def test_workers_split_the_cores_and_trials_record_their_threads(
    url: str, tmp_path: Path, monkeypatch
) -> None:
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir()
    monkeypatch.setenv(SPY_ENV, str(spy_dir))
    # a worker that ignored its share would run with 1 thread, not the 2 it is given
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(evaluate_mod.os, "cpu_count", lambda: 4)  # 4 cores // 2 workers = 2
    monkeypatch.setattr(evaluate_mod, "_worker_main", _spy_worker_main)
    res = cli(*search_args(url, "w3", 2, "--workers", "2"))
    assert res.exit_code == 0, res.output
    df = Store(url).trials("w3")
    assert len(df) == 2 and set(df.status) == {"complete"}
    assert df.threads.tolist() == [2, 2]
    notes = [json.loads(p.read_text()) for p in spy_dir.iterdir()]
    assert sorted(n["arch_id"] for n in notes) == sorted(df[df.duplicate_of.isna()].arch_id)
    assert {n["threads"] for n in notes} == {2}
    pids = {n["pid"] for n in notes}
    assert len(pids) == 2 and os.getpid() not in pids  # trained at once in two processes


# --------------------------------------------------------------------------- the test split


@pytest.fixture()
def test_split_reads(monkeypatch) -> list[str]:
    """Every read of a ``DataSplits.test`` from now on, as the reading function's name."""
    reads: list[str] = []

    class SpiedSplits(data_mod.DataSplits):
        def __getattribute__(self, name: str):
            if name == "test":
                reads.append(sys._getframe(1).f_code.co_name)
            return super().__getattribute__(name)

    monkeypatch.setattr(data_mod, "DataSplits", SpiedSplits)
    evaluate_mod.dataset_for.cache_clear()  # splits loaded earlier were made without the spy
    yield reads
    evaluate_mod.dataset_for.cache_clear()


def test_searches_never_read_the_test_split_and_retrain_does(
    url: str, tmp_path: Path, test_split_reads: list[str]
) -> None:
    res = cli(*search_args(url, "ts", 3, "--strategy", "optuna:random"))
    assert res.exit_code == 0, res.output
    assert len(Store(url).trials("ts")) == 3
    exported = cli("export", "ts", "--pick", "best", "--out", str(tmp_path / "m.py"),
                   "--weights", str(tmp_path / "m.pt"), "--store", url)  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert test_split_reads == []  # search, resume data and proxy weights: validation only
    retrained = cli("retrain", "ts", "--pick", "best", "--epochs", "1",
                    "--out", str(tmp_path / "r"), "--store", url)  # fmt: skip
    assert retrained.exit_code == 0, retrained.output
    assert test_split_reads and set(test_split_reads) == {"retrain"}
    assert "Test accuracy" in retrained.output
