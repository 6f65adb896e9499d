"""Smoke runs of benchmarks/tabular.py and benchmarks/search_efficiency.py (tiny budgets)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from fusion_nas.cli.app import app
from fusion_nas.evaluation.table import Table, meta_path, read_rows
from fusion_nas.model.space import load_space, parse_space
from fusion_nas.pareto import hypervolume
from fusion_nas.store.store import Store
from tests.helpers.benchmarks import load
from tests.helpers.spaces import TINY
from tests.helpers.table import plant

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as a module (its ``main(argv)`` runs it in-process),
    with ``benchmarks/`` on the path so it imports its siblings (``_common``)."""
    return load(name)


def test_table_space_parses_and_is_enumerable() -> None:
    space = load_space(ROOT / "benchmarks" / "spaces" / "mnist1d-table.toml")
    assert 500 <= space.num_architectures() <= 800
    archs = space.enumerate()
    ops = {s.operator for a in archs for s in a.stages}
    variants = {s.attention for a in archs for s in a.stages} - {None}
    assert {"conv", "attention", "parallel", "gated", "skip"} <= ops
    assert {"global", "channel"} <= variants
    assert len({a.stages[1].width for a in archs}) > 1  # a width choice


def test_tabular_writes_resumes_and_feeds_a_search(tmp_path: Path, capsys) -> None:
    tabular = script("tabular")
    space_file = tmp_path / "tiny.toml"
    space_file.write_text(TINY, encoding="utf-8")
    out = tmp_path / "tables" / "tiny.csv"
    common = [
        "--space", str(space_file), "--dataset", "synthetic", "--epochs", "1",
        "--train-subset", "64", "--seeds", "0", "1", "--out", str(out),
    ]  # fmt: skip
    tabular.main([*common, "--limit", "5"])
    first = read_rows(out)
    assert len(first) == 5 and {r.seed for r in first} == {0}  # seed 0 of every network first
    meta = json.loads(meta_path(out).read_text())
    assert meta["proxy"]["epochs"] == 1 and meta["proxy"]["train_subset"] == 64
    assert meta["dataset"] == "synthetic" and meta["architectures"] == 12
    assert len(meta["space_sha256"]) == 64 and meta["threads"] == 1
    assert {"torch", "fusion_nas", "python"} <= set(meta["versions"])
    for r in first:
        assert r.status == "complete" and 0 <= r.val_acc <= 1 and len(r.curve) == 1
        assert r.curve[-1] == r.val_acc and r.macs > 0 and r.seconds > 0 and r.threads == 1
    # Resume: the 5 rows stay as they are, the other 19 are added, none twice.
    tabular.main(common)
    rows = read_rows(out)
    assert rows[:5] == first and len(rows) == 24
    assert len({(r.arch_id, r.seed) for r in rows}) == 24
    tabular.main(common)  # nothing left to do
    assert len(read_rows(out)) == 24
    # Other proxy settings: refused in one line, the table untouched.
    with pytest.raises(SystemExit) as stop:
        tabular.main([*common[:-2], "--out", str(out), "--epochs", "2"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "was made with proxy" in err and len(read_rows(out)) == 24
    # The complete table answers a search: every value is the mean of the table's two seeds.
    url = f"sqlite:///{tmp_path}/store.db"
    res = runner.invoke(
        app,
        [
            "search",
            str(space_file),
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--train-subset",
            "64",
            "--strategy",
            "optuna:grid",
            "--trials",
            "12",
            "--store",
            url,
            "--name",
            "t",
            "--evaluator",
            f"table:{out}",
        ],  # fmt: skip
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    table = Table(out)
    for row in Store(url).trials("t").to_dict("records"):
        pair = table.rows[row["arch_id"]]
        assert row["val_acc"] == pytest.approx((pair[0].val_acc + pair[1].val_acc) / 2)


def test_search_efficiency_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eff = script("search_efficiency")
    table = tmp_path / "tiny.csv"
    plant(table, parse_space(TINY))
    monkeypatch.setenv("FUSION_NAS_HOME", str(tmp_path / "home"))
    out = tmp_path / "results"
    eff.main(
        [
            "--table",
            str(table),
            "--strategies",
            "optuna:nsga2",
            "nni:evolution",
            "--seeds",
            "2",
            "--evals",
            "10",
            "--checkpoints",
            "5",
            "10",
            "--out",
            str(out),
        ]  # fmt: skip
    )
    doc = json.loads((out / "search_efficiency_tiny.json").read_text())
    assert (out / "search_efficiency_tiny.html").stat().st_size > 1000
    truth = doc["true_front"]
    acc, macs = Table(table).front()
    assert truth["hypervolume"] > 0 and truth["networks"] == 12
    assert truth["ref_macs"] == pytest.approx(1.1 * max(macs))
    assert truth["hypervolume"] == pytest.approx(hypervolume(acc, macs, 1.1 * max(macs)))
    assert set(doc["strategies"]) == {"optuna:nsga2", "nni:evolution"}
    assert doc["nni_scalar"].startswith(f"val_acc - {eff.MACS_WEIGHT} * log10(MACs)")
    for s in doc["strategies"].values():
        assert set(s["at"]) == {"5", "10"}
        for stats in s["at"].values():
            assert 0 <= stats["min"] <= stats["mean"] <= stats["max"] <= 1 + 1e-9
            assert stats["seeds"] == 2
        assert len(s["mean_curve"]) == 10
        assert all(0 <= f <= 1 + 1e-9 for f in s["mean_curve"])
        assert s["mean_curve"] == sorted(s["mean_curve"])  # a front only grows
        reach = s["evals_to_target"]
        assert reach["seeds"] == 2 and len(reach["per_seed"]) == 2
        # the first k distinct networks hold every network of the first k trials
        distinct = s["per_distinct_network"]
        assert distinct["trials_mean"] >= 10
        assert all(d >= t - 1e-9 for d, t in zip(distinct["mean_curve"], s["mean_curve"]))
        assert distinct["mean_curve"] == sorted(distinct["mean_curve"])
    nsga = doc["strategies"]["optuna:nsga2"]
    if nsga["unique_networks_mean"] < 10:  # it repeated itself, so it ran on to 10 distinct
        assert nsga["per_distinct_network"]["trials_mean"] > 10


def test_search_efficiency_bad_input_is_one_line(tmp_path: Path, capsys) -> None:
    eff = script("search_efficiency")
    table = tmp_path / "tiny.csv"
    plant(table, parse_space(TINY), skip=2)  # incomplete: refused before any search
    for argv, message in (
        (["--table", str(table)], "lacks 2 of the 12 architectures"),
        (["--table", str(table), "--strategies", "optuna:nope"], "unknown strategy 'optuna:nope'"),
    ):
        with pytest.raises(SystemExit) as stop:
            eff.main([*argv, "--out", str(tmp_path / "out")])
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_search_efficiency_on_one_seed_of_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eff = script("search_efficiency")
    table = tmp_path / "tiny.csv"
    rows = plant(table, parse_space(TINY))
    out = tmp_path / "results"
    argv = ["--table", str(table), "--table-seed", "1", "--strategies", "optuna:random"]
    monkeypatch.setenv("FUSION_NAS_HOME", str(tmp_path / "home"))
    eff.main(
        [*argv, "--seeds", "1", "--evals", "4", "--checkpoints", "2", "--sweep", "0.1"]
        + ["--out", str(out)]
    )
    doc = json.loads((out / "search_efficiency_tiny.json").read_text())
    acc = [r[1].val_acc for r in rows.values()]
    macs = [r[1].macs for r in rows.values()]
    assert doc["table_seeds"] == [1] and "seed 1" in doc["accuracy"]
    sweep = doc["macs_weight_sweep"]["results"]
    assert [(r["strategy"], r["macs_weight"]) for r in sweep] == [
        ("nni:evolution", 0.1),
        ("nni:tpe", 0.1),
    ]
    assert all(0 < r["mean"]["4"] <= 1 for r in sweep)
    assert doc["true_front"]["hypervolume"] == pytest.approx(
        hypervolume(acc, macs, 1.1 * max(macs))
    )
