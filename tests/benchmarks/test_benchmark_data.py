"""Smoke runs of the data benchmarks (tiny budgets): memory of a folder search, throughput."""

from __future__ import annotations

import json

from tests.helpers.benchmarks import load


def test_data_memory_smoke_run_decodes_once_and_reports_rss(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("FUSION_NAS_DATA_CACHE", raising=False)
    out = tmp_path / "mem.json"
    result = load("data_memory").main(
        ["--dir", str(tmp_path / "jpegs"), "--images", "60", "--size", "16", "--out", str(out)]
    )
    assert json.loads(out.read_text()) == result
    first, second = result["runs"]["first_process"], result["runs"]["second_process"]
    assert first["load_decoded"] == 60 and second["load_decoded"] == 0  # the corrupt one: skipped
    assert first["skipped"] == second["skipped"] == 1
    assert [t["decoded"] for r in (first, second) for t in r["trials"]] == [0, 0, 0, 0]
    assert first["peak_rss_mb"] > 0 and result["passed"]


def test_throughput_smoke_run_writes_both_loops(tmp_path) -> None:
    out = tmp_path / "tp.json"
    result = load("throughput").main(
        [
            "--images",
            "64",
            "--epochs",
            "1",
            "--repeats",
            "2",
            "--batch-size",
            "32",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == result
    assert set(result["images_per_s"]) == {"trainer", "plain"}
    assert len(result["ratio_per_pair"]) == 2 and result["ratio"] > 0
