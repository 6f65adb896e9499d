"""Smoke run of benchmarks/latency_front.py on a made-up table (tiny budget)."""

from __future__ import annotations

import json
from pathlib import Path

from fusion_nas.model.space import parse_space
from tests.helpers.benchmarks import load
from tests.helpers.spaces import TINY
from tests.helpers.table import plant


def test_latency_front_writes_both_searches_fronts(tmp_path: Path) -> None:
    plant(tmp_path / "t.csv", parse_space(TINY))
    load("latency_front").main(
        ["--table", str(tmp_path / "t.csv"), "--trials", "5", "--out", str(tmp_path / "o")]
    )
    doc = json.loads((tmp_path / "o" / "latency_front_t.json").read_text())
    assert (tmp_path / "o" / "latency_front_t.html").exists()
    for obj in ("macs", "latency"):
        s = doc["searches"][obj]
        assert s["front_on_latency"] and s["front_on_macs"]
        lat = [f["latency_ms"] for f in s["front_on_latency"]]
        acc = [f["val_acc"] for f in s["front_on_latency"]]
        assert lat == sorted(lat) and acc == sorted(acc)  # a front: faster is less accurate
        assert 0 < s["hv_latency"] and 0 < s["hv_macs"]
