"""Table evaluator: searches answered from a tabular benchmark instead of training."""

from __future__ import annotations

import json
import math
import pickle
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.evaluation.pools import make_pool
from fusion_nas.evaluation.table import (
    Table,
    TableEvaluator,
    TablePool,
    TableRow,
    append_rows,
    meta_path,
    parse_evaluator,
    read_rows,
)
from fusion_nas.evaluation.trainer import EvalTask
from fusion_nas.model.arch import Architecture
from fusion_nas.model.space import parse_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import open_search, prepare, run_trials
from fusion_nas.search.strategies import nni_strategies
from fusion_nas.store.records import TrialRecord, TrialStatus
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig
from tests.helpers.spaces import OTHER, TINY
from tests.helpers.table import plant

runner = CliRunner()


@pytest.fixture()
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    return path


@pytest.fixture()
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


def cli(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def search(
    space_file: Path, url: str, evaluator: str, *extra: str, name: str = "t", trials: int = 12
):
    return cli(
        "search", str(space_file), "--dataset", "synthetic", "--strategy", "optuna:grid",
        "--trials", str(trials), "--name", name, "--store", url, "--evaluator", evaluator, *extra,
    )  # fmt: skip


def studies(url: str) -> list[str]:
    """Study names in the SQLite store (none when the file was never created)."""
    path = url.removeprefix("sqlite:///")
    if not Path(path).exists():
        return []
    with sqlite3.connect(path) as db:
        try:
            return [r[0] for r in db.execute("select study_name from studies")]
        except sqlite3.OperationalError:
            return []


def test_table_search_records_the_tables_values(space_file: Path, url: str, tmp_path: Path):
    table = tmp_path / "tiny.csv"
    rows = plant(table, parse_space(TINY))
    res = search(space_file, url, f"table:{table}")
    assert res.exit_code == 0, res.output
    df = Store(url).trials("t")
    assert len(df) == 12 and set(df.status) == {"complete"}
    assert df.arch_id.nunique() == 12  # the grid visited every network of the tiny space
    for row in df.to_dict("records"):
        stored = rows[row["arch_id"]]
        mean = (stored[0].val_acc + stored[1].val_acc) / 2
        assert row["val_acc"] == pytest.approx(mean, abs=1e-12)
        assert row["curve"] == pytest.approx(
            [(a + b) / 2 for a, b in zip(stored[0].curve, stored[1].curve)]
        )
        assert row["macs"] == stored[0].macs and row["params"] == stored[0].params
        assert row["train_seconds"] == pytest.approx((stored[0].seconds + stored[1].seconds) / 2)
        assert row["fail_reason"].startswith("looked up in table tiny.csv (mean of seeds 0, 1)")
    record = Store(url).search_record("t")
    assert record.evaluator == f"table:{table.resolve()}"
    # One seed: `@1` answers with seed 1's row.
    res = search(space_file, url, f"table:{table}@1", name="seed1", trials=4)
    assert res.exit_code == 0, res.output
    for row in Store(url).trials("seed1").to_dict("records"):
        assert row["val_acc"] == rows[row["arch_id"]][1].val_acc
    # Resuming with another evaluator is refused: it changes what a score means.
    res = search(space_file, url, "train", name="seed1", trials=5)
    assert res.exit_code == 2 and "different evaluator" in res.stderr


def test_hundreds_of_table_trials_tell_before_each_ask(tmp_path: Path) -> None:
    """The search loop on an in-memory study (as benchmarks/search_efficiency.py runs it)."""
    table = tmp_path / "tiny.csv"
    rows = plant(table, parse_space(TINY))
    config = SearchConfig(
        name="many",
        space=parse_space(TINY),
        dataset="synthetic",
        strategy="optuna:tpe",
        trials=200,
        evaluator=f"table:{table}",
    )
    strategy = prepare(config)
    study, _ = open_search(Store.in_memory(), config, strategy)  # in memory: nothing on disk
    run_trials(config, study, strategy, config.trials)
    trials = [TrialRecord.from_trial(t) for t in study.get_trials()]
    assert len(trials) == 200 and {t.status for t in trials} == {TrialStatus.COMPLETE}
    for t in trials:
        assert t.val_acc == pytest.approx(sum(r.val_acc for r in rows[t.arch_id].values()) / 2)
    # Each trial was told before the next was asked: its completion precedes the next start.
    assert all(a.datetime_complete <= b.datetime_start for a, b in zip(trials, trials[1:]))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: plant(p, parse_space(OTHER)), "was made for space 'tiny', not for"),
        (lambda p: plant(p, parse_space(TINY), skip=1), "lacks 1 of the 12 architectures"),
        (lambda p: plant(p, parse_space(TINY), dataset="digits"), "trained on dataset 'digits'"),
        (
            lambda p: plant(p, parse_space(TINY), proxy=ProxyConfig(epochs=3)),
            "the table has epochs=3",
        ),
    ],
    ids=["other-space", "missing-arch", "other-dataset", "other-proxy"],
)
def test_unusable_table_is_one_line_and_writes_nothing(
    space_file: Path, url: str, tmp_path: Path, make, message: str
) -> None:
    table = tmp_path / "t.csv"
    make(table)
    res = search(space_file, url, f"table:{table}")
    assert res.exit_code == 2, res.output
    line = res.stderr.strip()
    assert "\n" not in line and "Traceback" not in res.output
    assert message in line and str(table.resolve()) in line
    assert studies(url) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("bogus", "unknown evaluator 'bogus'; allowed: 'train', 'table:PATH', 'table:PATH@SEED'"),
        ("table:", "unknown evaluator 'table:'"),
        ("table:/no/such/table.csv", "table '/no/such/table.csv' does not exist"),
    ],
)
def test_bad_evaluator_value_is_one_line(space_file: Path, url: str, value: str, message: str):
    res = search(space_file, url, value)
    assert res.exit_code == 2
    assert res.stderr.strip() == f"Error: {message}" or message in res.stderr
    assert "\n" not in res.stderr.strip()
    assert studies(url) == []


def test_mean_needs_every_seed_of_every_network(space_file: Path, url: str, tmp_path: Path):
    """A table part-way through its second seed: the mean is refused, seed 0 alone works."""
    table = tmp_path / "t.csv"
    space = parse_space(TINY)
    plant(table, space, seeds=(0,))
    first = space.enumerate()[0]
    append_rows(table, [TableRow(first.arch_id, first.to_json(), first.describe(), 1, 1, 1, 0.5)])
    res = search(space_file, url, f"table:{table}")
    assert res.exit_code == 2 and "lacks seed 1 for 11 of the 12 architectures" in res.stderr
    assert "table:PATH@SEED" in res.stderr and studies(url) == []
    res = search(space_file, url, f"table:{table}@0", trials=3)
    assert res.exit_code == 0, res.output


def test_table_seed_that_is_not_there_is_refused(space_file: Path, url: str, tmp_path: Path):
    table = tmp_path / "t.csv"
    plant(table, parse_space(TINY), seeds=(0,))
    res = search(space_file, url, f"table:{table}@3")
    assert res.exit_code == 2 and "has no seed 3; allowed: 0" in res.stderr
    assert studies(url) == []


def test_lookup_of_a_network_the_table_lacks_fails_naming_the_table(tmp_path: Path) -> None:
    space = parse_space(TINY)
    table_path = tmp_path / "t.csv"
    plant(table_path, space, skip=1)
    pool = TablePool(Table(table_path))
    missing = space.enumerate()[0]
    task = EvalTask(missing.to_json(), space.source, "synthetic", ProxyConfig())
    pool.submit(7, task)
    assert pool.free == 0
    [(key, outcome)] = pool.collect()
    assert key == 7 and outcome.status == TrialStatus.FAILED
    assert outcome.reason == f"not in table t.csv: {missing.describe()} ({missing.arch_id})"
    assert pool.free == 1 and pool.collect() == []


def test_failed_rows_fail_the_trial_and_partial_seeds_average_the_rest(tmp_path: Path) -> None:
    space = parse_space(TINY)
    a, b = space.enumerate()[:2]
    path = tmp_path / "t.csv"
    failed = dict(val_acc=None, curve=[], status="failed", reason="non-finite loss")
    append_rows(
        path,
        [
            TableRow(a.arch_id, a.to_json(), a.describe(), 1, 1, 0, **failed),
            TableRow(a.arch_id, a.to_json(), a.describe(), 1, 1, 1, **failed),
            TableRow(b.arch_id, b.to_json(), b.describe(), 1, 1, 0, 0.5, [0.5]),
            TableRow(b.arch_id, b.to_json(), b.describe(), 1, 1, 1, **failed),
        ],
    )
    meta = {"space_toml": TINY, "dataset": "synthetic", "proxy": ProxyConfig().to_dict()}
    meta_path(path).write_text(json.dumps(meta))
    assert [r.status for r in read_rows(path)] == ["failed", "failed", "complete", "failed"]
    table = Table(path)
    out = table.outcome(a)
    assert out.status == TrialStatus.FAILED
    assert out.reason == "failed in table t.csv (seed 0): non-finite loss"
    out = table.outcome(b)
    assert out.status == TrialStatus.COMPLETE and out.val_acc == 0.5
    assert out.reason.startswith("looked up in table t.csv (mean of seeds 0);")


def test_parse_evaluator_forms(tmp_path: Path) -> None:
    assert str(parse_evaluator("train")) == "train"
    spec = parse_evaluator(f"table:{tmp_path}/a@b.csv@2")
    assert spec.kind == "table" and spec.seed == 2 and spec.path == tmp_path / "a@b.csv"
    assert parse_evaluator(f"table:{tmp_path}/x.csv").seed is None


def test_nni_scalar_trades_accuracy_for_macs() -> None:
    done = TrialRecord(0, TrialStatus.COMPLETE, val_acc=0.9, macs=10_000)
    over = TrialRecord(1, TrialStatus.INFEASIBLE, macs=10_000)
    assert nni_strategies.score(done) == 0.9  # default: accuracy only
    assert nni_strategies.score(done, 0.05) == pytest.approx(0.9 - 0.05 * 4)
    assert nni_strategies.score(over, 0.05) == pytest.approx(-1.0 - 0.05 * 15)
    huge = TrialRecord(3, TrialStatus.COMPLETE, val_acc=0.0, macs=10**12)
    assert nni_strategies.score(over, 2.0) < nni_strategies.score(huge, 2.0)  # penalty lowest
    # a network 10x cheaper and 4 points worse wins at 0.05 per decade, loses at 0.03
    cheap = TrialRecord(2, TrialStatus.COMPLETE, val_acc=0.86, macs=1_000)
    assert nni_strategies.score(cheap, 0.05) > nni_strategies.score(done, 0.05)
    assert nni_strategies.score(cheap, 0.03) < nni_strategies.score(done, 0.03)


def test_nni_tpe_on_a_table_reports_the_weighted_scalar_without_pausing(
    space_file: Path, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NNI's own TPE loop sleeps 1 s per proposal; the library's loop must not."""
    table = tmp_path / "tiny.csv"
    plant(table, parse_space(TINY))
    monkeypatch.setenv("FUSION_NAS_HOME", str(tmp_path / "home"))
    sleeps: list[float] = []
    real_sleep = time.sleep

    def watched(seconds: float) -> None:
        sleeps.append(seconds)
        real_sleep(min(seconds, 0.01))

    reported: list[float] = []
    real_score = nni_strategies.score

    def spy(record: TrialRecord, macs_weight: float = 0.0) -> float:
        value = real_score(record, macs_weight)
        reported.append((record.val_acc, record.macs, macs_weight, value))
        return value

    monkeypatch.setattr(time, "sleep", watched)
    monkeypatch.setattr(nni_strategies, "score", spy)
    res = cli(
        "search", str(space_file), "--dataset", "synthetic", "--strategy", "nni:tpe",
        "--trials", "12", "--name", "n", "--store", url, "--evaluator", f"table:{table}",
        "--macs-weight", "0.1",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(Store(url).trials("n")) == 12
    assert Store(url).search_record("n").strategy_options["macs_weight"] == 0.1
    assert [s for s in sleeps if s >= 0.5] == []
    new = [r for r in reported if r[0] is not None]
    assert new and all(w == 0.1 for *_, w, _ in new)
    assert all(v == pytest.approx(a - 0.1 * math.log10(m)) for a, m, _, v in new)


def test_architecture_round_trip_through_the_csv(tmp_path: Path) -> None:
    space = parse_space(TINY)
    path = tmp_path / "t.csv"
    plant(path, space)
    for row in read_rows(path):
        arch = Architecture.from_json(row.arch)
        assert arch.arch_id == row.arch_id and arch.describe() == row.desc


def test_table_evaluator_answers_rungs_and_make_pool_gives_it_a_table_pool(tmp_path: Path):
    space = parse_space(TINY)
    path = tmp_path / "t.csv"
    a = space.enumerate()[0]
    append_rows(path, [TableRow(a.arch_id, a.to_json(), a.describe(), 1, 1, 0, 0.3, [0.1, 0.3])])
    meta = {"space_toml": TINY, "dataset": "synthetic", "proxy": ProxyConfig(epochs=2).to_dict()}
    meta_path(path).write_text(json.dumps(meta))
    evaluator = TableEvaluator(Table(path), seed=0)
    task = EvalTask(a.to_json(), space.source, "synthetic", ProxyConfig(epochs=2), stop_after=1)
    rung = evaluator.evaluate(task)
    assert rung.status == TrialStatus.COMPLETE and rung.curve == [0.1] and rung.val_acc == 0.1
    again = pickle.loads(pickle.dumps(evaluator))  # a worker reads the table again
    assert again.evaluate(task) == rung
    pool = make_pool(evaluator, workers=2)  # a table answers at once: never worker processes
    assert isinstance(pool, TablePool) and pool.threads == 1
    pool.submit("k", task)
    assert pool.collect() == [("k", rung)]
