"""Smoke run of benchmarks/zero_cost_tau.py (a few networks of the digits table)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fusion_nas.evaluation.table import load_table

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
DIGITS = BENCHMARKS / "tables" / "digits.csv"


def load() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("zero_cost_tau")


def test_smoke_run_writes_tau_seconds_and_prescreen_fractions(tmp_path, capsys):
    argv = ["--tables", str(DIGITS), "--limit", "6", "--proxies", "naswot", "synflow"]
    argv += ["--k", "all", "4", "--m", "2", "3", "--draws", "2", "--out", str(tmp_path)]
    (doc,) = load().main(argv)
    out = tmp_path / "zero_cost_tau_digits.json"
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc))
    assert doc["networks"] == 6 and doc["k"] == [6, 4] and doc["m"] == [2, 3]
    assert list(doc["proxies"]) == ["naswot", "synflow", "-macs", "params"]
    table = load_table(DIGITS)
    costs = table.costs()
    ids = doc["arch_ids"]
    # the trivial baselines are the table's own costs, in the space's enumeration order
    assert ids == [a.arch_id for a in table.space.enumerate()[:6]]
    assert doc["scores"]["-macs"] == [-costs[i].macs for i in ids]
    for name, entry in doc["proxies"].items():
        assert -1 <= entry["kendall_tau"] <= 1 and entry["seconds_per_arch"] >= 0
        assert set(entry["prescreen"]) == {"6:2", "6:3", "4:2", "4:3"}
        for cell in entry["prescreen"].values():
            assert 0 < cell["min"] <= cell["mean"] <= cell["max"] <= 1 + 1e-9, (name, cell)
        assert len(doc["scores"][name]) == 6
    assert doc["proxies"]["naswot"]["seconds_per_arch"] > 0
    printed = capsys.readouterr().out
    assert "| naswot |" in printed and "| random M |" in printed and "HV 6:2" in printed


def test_bad_values_end_with_exit_code_2_naming_them_and_help_works(tmp_path, capsys):
    bench = load()
    for bad in (["--k", "lots"], ["--m", "0"], ["--proxies", "jacov"]):
        with pytest.raises(SystemExit) as exit_:
            bench.main([*bad, "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2, bad
        assert "Traceback" not in err and bad[1] in err.splitlines()[-1]
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    assert exit_.value.code == 0 and "--limit" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
