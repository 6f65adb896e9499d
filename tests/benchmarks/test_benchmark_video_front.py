"""benchmarks/video_front.py: the verdict on the article's claim, the table and the figure."""

from __future__ import annotations

import pytest

from tests.helpers.benchmarks import load

vf = load("video_front")


def row(label: str, macs: int, acc: float, kind: str = "baseline") -> dict:
    return {
        "label": label,
        "arch_desc": f"{label} net",
        "macs": macs,
        "params": macs // 100,
        "test_acc": acc,
        "shuffled_test_acc": 1 / 6,
        "kind": kind,
    }


@pytest.mark.parametrize(
    ("hybrid", "head"),
    [
        ((4, 0.9), "Yes: the hybrid beats both pure designs at lower cost"),
        ((4, 0.7), "No: the hybrid is cheaper than both pure designs but not more accurate"),
        ((7, 0.9), "No: the hybrid is more accurate than both pure designs but not cheaper"),
        ((12, 0.5), "No: the hybrid neither beats both pure designs nor costs less than both"),
    ],
)
def test_the_verdict_says_whether_the_hybrid_beats_both_pure_designs_at_lower_cost(
    hybrid: tuple[int, float], head: str
) -> None:
    rows = {
        "video-3dcnn": row("video-3dcnn", 6_000_000, 0.8),
        "video-transformer": row("video-transformer", 11_000_000, 0.6),
        "video-hybrid": row("video-hybrid", hybrid[0] * 1_000_000, hybrid[1]),
    }
    text = vf.verdict(rows)
    assert text.startswith(head), text
    assert "3-D CNN 80.0% at 6.00M" in text and "space-time transformer 60.0%" in text


def test_the_table_and_figure_show_every_row_and_chance() -> None:
    baselines = [
        row("video-3dcnn", 6_000_000, 0.8),
        row("video-transformer", 11_000_000, 0.6),
        row("video-hybrid", 2_000_000, 0.85),
        row("video-parallel", 4_000_000, 0.2),
        row("frame-average", 2_000_000, 0.17),
    ]
    doc = {
        "baselines": baselines,
        "searched_front": [row("trial 3", 1_000_000, 0.9, "front")],
        "classes": 6,
        "trials": 4,
        "strategy": "optuna:tpe",
        "proxy": {"epochs": 2},
        "final_protocol": {"epochs": 3, "lr": 0.01, "batch_size": 64, "weight_decay": 0.05},
        "train_samples": 6000,
        "test_samples": 1200,
        "verdict": vf.verdict({r["label"]: r for r in baselines}),
    }
    md = vf.markdown(doc)
    lines = [line for line in md.splitlines() if line.startswith("| ") and "MACs" not in line]
    assert len(lines) == 6
    assert lines[0].startswith("| searched, trial 3 |")  # sorted by MACs
    assert "frame-averaging 2-D control" in md and "pure 3-D CNN" in md
    assert "**Yes: the hybrid beats both pure designs at lower cost" in md
    fig = vf.figure(doc)
    names = {trace.name for trace in fig.data}
    assert {"article rows", "frame-average control", "searched front (retrained)"} <= names
    assert "article rows, frames shuffled" in names
