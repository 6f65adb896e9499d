"""Smoke run of benchmarks/readers.py: tiny stores, no browser (tests never assert timings)."""

from __future__ import annotations

import json

from tests.helpers.benchmarks import load


def test_readers_benchmark_writes_its_json(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the cache of built stores goes here
    readers = load("readers")
    out = tmp_path / "readers.json"
    args = ["--sizes", "4", "--repeat", "1", "--no-browser", "--no-startup", "--out", str(out)]
    readers.main(args)
    row = json.loads(out.read_text())["sizes"]["4"]
    assert row["build_cached"] is False
    for key in ("api_trial", "api_search_fresh", "api_search_poll", "results_cli_table"):
        assert set(row[key]) == {"wall_s", "cpu_s"}, key
    readers.main(args)  # the same code again: the store comes from the cache
    assert json.loads(out.read_text())["sizes"]["4"]["build_cached"] is True


def test_startup_probe_reports_cpu_and_torch() -> None:
    from pathlib import Path

    readers = load("readers")
    cpu, torch = readers._startup_one(Path(readers.__file__).resolve().parents[1], ["--help"])
    assert cpu > 0 and torch is False
