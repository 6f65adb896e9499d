"""Smoke run of benchmarks/efficient_search.py on a made-up table (tiny budget)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.benchmarks import load
from tests.helpers.table import plant_curves


def test_efficient_search_writes_every_lever_and_counts_stopped_epochs(tmp_path: Path) -> None:
    eff = load("efficient_search")
    plant_curves(tmp_path / "t.csv")
    (tmp_path / "README.md").write_text(
        "# B\n<!-- efficient_search_t -->\nold\n<!-- /efficient_search_t -->\nend\n"
    )
    eff.main(
        [
            "--table", str(tmp_path / "t.csv"), "--seeds", "2", "--trials", "8",
            "--levers", "nsga2-full", "sh-random", "prescreen-sh", "supernet", "--prescreen", "6:2",
            "--supernet-epochs", "1", "--supernet-evals", "4", "--supernet-picks", "2",
            "--out", str(tmp_path / "out"), "--readme", str(tmp_path / "README.md"),
        ]
    )  # fmt: skip
    doc = json.loads((tmp_path / "out" / "efficient_search_t.json").read_text())
    assert (tmp_path / "out" / "efficient_search_t.html").exists()
    readme = (tmp_path / "README.md").read_text()
    assert "old" not in readme and "| supernet |" in readme and readme.endswith("end\n")
    assert set(doc["levers"]) == {"nsga2-full", "sh-random", "prescreen-sh", "supernet"}
    # Every network costs 3 s in the table: a full-fidelity search of 8 trials spends at most
    # 24 s, and successive halving less (stopped networks cost 1 of their 3 epochs).
    full, sh = doc["levers"]["nsga2-full"], doc["levers"]["sh-random"]
    assert 0 < full["final_seconds"] <= 24.0
    assert sh["final_seconds"] < full["final_seconds"]
    for lever in doc["levers"].values():
        assert 0 < lever["final_fraction"] <= 1.0
        assert len(lever["per_seed_seconds"]) == 2
    curve = doc["mean_curves"]["sh-random"]
    assert all(a[1] <= b[1] for a, b in zip(curve, curve[1:]))  # the front only grows


def test_unknown_lever_is_one_line(tmp_path: Path, capsys) -> None:
    eff = load("efficient_search")
    with pytest.raises(SystemExit) as exc:
        eff.main(["--levers", "magic", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "unknown lever 'magic'; allowed: nsga2-full" in capsys.readouterr().err
