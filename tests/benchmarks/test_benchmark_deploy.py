"""Smoke runs of ``benchmarks/latency_vs_macs.py`` and ``benchmarks/quantize.py`` (tiny budgets),
and the latency benchmark's analysis on hand-made measurements."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` by its own name."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def row(desc: str, macs: int, ms: float, ops=("conv",), variants=(), spread: float = 0.01):
    return {
        "desc": desc, "macs": macs, "median_ms": ms, "p10_ms": ms - spread,
        "p90_ms": ms + spread, "operators": list(ops), "variants": list(variants),
    }  # fmt: skip


def test_analysis_names_pairs_where_more_macs_is_faster_beyond_the_noise() -> None:
    lvm = load("latency_vs_macs")
    rows = [
        row("a", 1_000, 1.0),
        row("b", 2_000, 2.0),
        row("c", 4_000, 4.0),
        row("attn", 500, 3.0, ops=("attention",), variants=("global",)),  # few MACs, slow
        row("noisy", 9_000, 3.5, spread=1.0),  # faster than c only within its noise
    ]
    out = lvm.analyse(rows, probe=[1.0, 1.1, 0.9])
    assert out["n"] == 5
    ex = out["more_macs_but_faster"]["examples"]
    # b (4x attn's MACs) and a (2x) are faster than attn beyond either spread, largest MAC
    # ratio first; noisy (2.25x c's) is not counted: its spread overlaps c's
    assert [(e["more_macs"], e["fewer_macs"]) for e in ex] == [("b", "attn"), ("a", "attn")]
    assert out["more_macs_but_faster"]["count"] == 2
    assert (
        out["variants"]["global"]["slowdown_vs_macs_fit"]
        > 1
        > out["operators"]["conv"]["slowdown_vs_macs_fit"]
    )
    assert out["noise"]["probe_range_over_median"] == pytest.approx(0.2)
    assert out["kendall_tau"] == pytest.approx(0.4)  # 7 concordant, 3 discordant pairs of 10


def test_latency_vs_macs_smoke(tmp_path) -> None:
    lvm = load("latency_vs_macs")
    out = lvm.main(
        ["--spaces", "digits", "--per-space", "4", "--runs", "2", "--warmup", "0",
         "--probe-every", "2", "--out", str(tmp_path)]
    )  # fmt: skip
    data = json.loads((tmp_path / "latency_vs_macs.json").read_text())
    assert data == json.loads(json.dumps(out))
    rows = data["spaces"]["digits"]["rows"]
    assert len(rows) == 4 and all(r["median_ms"] > 0 and r["macs"] > 0 for r in rows)
    summary = data["spaces"]["digits"]["summary"]
    assert summary["n"] == 4 and "kendall_tau" in summary and summary["noise"]["probe_runs"] == 2
    assert "plotly" in (tmp_path / "latency_vs_macs.html").read_text()
    assert data["machine"]["load_average_1min"]["start"] >= 0
    again = lvm.main(
        ["--reanalyse", str(tmp_path / "latency_vs_macs.json"), "--out", str(tmp_path / "re")]
    )
    assert again["spaces"]["digits"]["summary"] == summary  # measured nothing, same figures


def test_quantize_benchmark_smoke(tmp_path) -> None:
    qz = load("quantize")
    qz.main(
        ["--families", "conv", "attention", "--per-family", "1", "--epochs", "1",
         "--runs", "2", "--warmup", "0", "--out", str(tmp_path)]
    )  # fmt: skip
    data = json.loads((tmp_path / "quantize_digits.json").read_text())
    assert set(data["summary"]) == {"conv", "attention"}
    by = {r["family"]: r for r in data["rows"]}
    assert by["conv"]["quantized_linears"] == 1  # only the head of a conv network
    assert by["attention"]["quantized_linears"] > 1
    assert by["attention"]["linear_mac_share"] > by["conv"]["linear_mac_share"]
    assert 0 <= by["conv"]["test_acc_int8"] <= 1
    assert (tmp_path / "quantize_digits.html").exists()


def test_family_archs_use_one_operator_in_every_stage() -> None:
    qz = load("quantize")
    from fusion_nas.model.space import load_space

    space = load_space("mnist1d")
    archs = qz.family_archs(space, "gated", 3, seed=0)
    assert len({a.arch_id for a in archs}) == 3
    assert all(s.operator == "gated" for a in archs for s in a.stages)
