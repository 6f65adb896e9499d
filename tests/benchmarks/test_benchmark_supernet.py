"""Smoke run of benchmarks/supernet_tau.py (tiny budget) and its pieces."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.pareto import hypervolume

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "benchmarks" / "tables" / "digits.csv"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """``benchmarks/supernet_tau.py`` imported as a module (``main(argv)`` runs it)."""
    spec = importlib.util.spec_from_file_location(
        "bench_supernet_tau", ROOT / "benchmarks" / "supernet_tau.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_smoke_run_writes_the_figures(bench, tmp_path: Path, capsys) -> None:
    bench.main(
        [
            "--tables",
            str(DIGITS),
            "--epochs",
            "1",
            "--limit",
            "8",
            "--train-subset",
            "64",
            "--picks",
            "2",
            "4",
            "--calib-batches",
            "1",
            "--out",
            str(tmp_path),
        ]  # fmt: skip
    )
    doc = json.loads((tmp_path / "supernet_tau_digits.json").read_text())
    run = doc["runs"]["1"]
    assert run["supernet_epochs"] == 1 and run["networks_scored"] == 8 == len(run["scores"])
    assert run["kendall_tau"] is None or -1.0 <= run["kendall_tau"] <= 1.0
    assert set(run["per_family"]) == {"attention", "parallel", "gated", "conv-only"}
    assert set(run["picks"]) == {"2", "4"}
    for pick in run["picks"].values():
        assert 0.0 < pick["hv_fraction"] <= 1.0 and pick["confirm_epochs"] > 0
    assert len(run["picks"]["4"]["networks"]) == 4
    assert doc["full_training_epochs"] == 416 * 10  # the table: 416 networks x 10 epochs x 1 seed
    out = capsys.readouterr().out
    assert "| 1 |" in out and "τ" in out


def test_the_true_front_has_fraction_one_and_families(bench) -> None:
    from fusion_nas.evaluation.table import load_table

    table = load_table(DIGITS)
    nets = bench.table_networks(table)
    assert len(nets) == 416
    acc, macs = [n["table_acc"] for n in nets], [n["macs"] for n in nets]
    ref = bench.REF_FACTOR * max(macs)
    assert bench.hv_fraction(nets, ref, hypervolume(acc, macs, ref)) == 1.0
    top = max(nets, key=lambda n: n["table_acc"])  # on the true front: without it, less
    rest = [n for n in nets if n is not top]
    assert bench.hv_fraction(rest, ref, hypervolume(acc, macs, ref)) < 1.0

    conv = StageChoice("conv", 8, kernel=3)
    gated = StageChoice("gated", 8, kernel=3, heads=1, attention="channel")
    assert bench.families(Architecture("x", (conv, conv))) == ["conv-only"]
    assert bench.families(Architecture("x", (gated, conv))) == ["gated"]
    assert bench.tau([1, 2, 3], [3, 2, 1]) == -1.0 and bench.tau([1], [1]) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--limit", "1"], "--limit"),
        (["--tables", "/nonexistent/t.csv"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(bench, tmp_path, capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as info:
        bench.main([*argv, "--out", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
