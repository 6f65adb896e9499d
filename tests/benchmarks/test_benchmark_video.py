"""Smoke run of the video-glyphs benchmark (tiny budget)."""

from __future__ import annotations

import json

from tests.helpers.benchmarks import load


def test_video_glyphs_smoke_run_writes_every_network(tmp_path) -> None:
    out = tmp_path / "vg.json"
    argv = ["--size", "3", "7", "7", "--epochs", "1", "--repeat", "1", "--train-subset", "60"]
    result = load("video_glyphs").main([*argv, "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["size"] == [3, 7, 7] and result["n_train"] == 60 and result["n_test"] == 1200
    assert set(result["networks"]) == {"conv3d", "frames_ordered", "frame_average"}
    for row in result["networks"].values():
        assert 0 <= row["test_acc"] <= 1 and 0 <= row["shuffled_test_acc"] <= 1
