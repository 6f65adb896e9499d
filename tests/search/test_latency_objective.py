"""Measured latency in every trial, latency as the second objective, and its budget."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.pareto import pareto_mask
from fusion_nas.store.records import LATENCY_OBJECTIVES, TrialStatus
from fusion_nas.store.store import Store
from tests.helpers.spaces import TINY
from tests.helpers.table import plant

runner = CliRunner()


@pytest.fixture()
def table(tmp_path: Path) -> Path:
    from fusion_nas.model.space import parse_space

    (tmp_path / "tiny.toml").write_text(TINY, encoding="utf-8")
    plant(tmp_path / "t.csv", parse_space(TINY))
    return tmp_path / "t.csv"


def search(tmp_path: Path, table: Path, *extra: str, name: str = "lat"):
    return runner.invoke(
        app,
        [
            "search", str(tmp_path / "tiny.toml"), "--dataset", "synthetic", "--trials", "6",
            "--strategy", "optuna:random", "--evaluator", f"table:{table}", "--name", name,
            "--store", f"sqlite:///{tmp_path}/s.db", *extra,
        ],
    )  # fmt: skip


def test_latency_objective_records_and_optimises_measured_latency(tmp_path, table) -> None:
    res = search(tmp_path, table, "--objective", "latency")
    assert res.exit_code == 0, res.output
    store = Store(f"sqlite:///{tmp_path}/s.db")
    assert store.search_record("lat").objectives == LATENCY_OBJECTIVES
    study = optuna.load_study(study_name="lat", storage=store.url)
    recs = {r.number: r for r in store.records("lat")}
    for t in study.get_trials():
        rec = recs[t.number]
        assert rec.latency_ms is not None and rec.latency_ms > 0
        points = rec.latency["eager"]["points"]  # type: ignore[index]
        assert [p["batch"] for p in points] == [1, 64]
        assert all(p["p10_ms"] <= p["median_ms"] <= p["p90_ms"] for p in points)
        if rec.status == TrialStatus.COMPLETE:
            assert t.values == [rec.val_acc, rec.latency_ms]  # the study optimises latency
    df = store.trials("lat")
    ok = df[df.status == "complete"]
    front = pareto_mask(ok.val_acc.astype(float), ok.latency_ms.astype(float))
    assert list(ok.on_front) == list(front)  # the front is on latency, not MACs


def test_latency_budget_refuses_slow_networks_untrained(tmp_path, table) -> None:
    res = search(tmp_path, table, "--max-latency-ms", "0.000001")
    assert res.exit_code == 0, res.output
    recs = Store(f"sqlite:///{tmp_path}/s.db").records("lat")
    assert {r.status for r in recs} == {TrialStatus.INFEASIBLE}
    assert all("--max-latency-ms 1e-06" in (r.fail_reason or "") for r in recs)


def test_table_searches_skip_latency_unless_asked(tmp_path, table) -> None:
    assert search(tmp_path, table).exit_code == 0
    assert search(tmp_path, table, "--latency", "eager", name="asked").exit_code == 0
    store = Store(f"sqlite:///{tmp_path}/s.db")
    assert all(r.latency_ms is None for r in store.records("lat"))
    assert all(r.latency_ms > 0 for r in store.records("asked"))


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--objective", "speed"], "unknown --objective 'speed'; allowed: macs, latency"),
        (["--latency", "gpu"], "unknown --latency 'gpu'; allowed: eager, all, off"),
        (["--max-latency-ms", "-1"], "--max-latency-ms must be positive"),
    ],
)
def test_bad_latency_options_are_one_line(tmp_path, table, flag, message) -> None:
    res = search(tmp_path, table, *flag)
    assert res.exit_code == 2 and message in res.output
    assert (
        not (tmp_path / "s.db").exists() or not Store(f"sqlite:///{tmp_path}/s.db").search_names()
    )


def test_changing_the_objective_on_resume_is_refused(tmp_path, table) -> None:
    assert search(tmp_path, table).exit_code == 0
    res = search(tmp_path, table, "--objective", "latency")
    assert res.exit_code == 2 and "different objectives" in res.output


def test_a_trained_trial_records_its_latency_by_default(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("FUSION_NAS_LATENCY")  # the suite turns it off (conftest)
    url = f"sqlite:///{tmp_path}/s.db"
    res = runner.invoke(
        app,
        [
            "search", "digits", "--trials", "1", "--epochs", "1", "--train-subset", "200",
            "--name", "d", "--store", url,
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    (rec,) = Store(url).records("d")
    assert rec.status == TrialStatus.COMPLETE and rec.latency_ms > 0
    assert set(rec.latency) == {"eager"}  # type: ignore[arg-type]
    monkeypatch.setenv("FUSION_NAS_LATENCY", "fast")
    bad = runner.invoke(app, ["search", "digits", "--trials", "1", "--store", url])
    assert bad.exit_code == 2 and "unknown --latency 'fast'; allowed: eager, all, off" in bad.output
