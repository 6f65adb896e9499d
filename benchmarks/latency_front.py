"""The front found on measured latency next to the front found on MACs, for one search budget.

Two NSGA-II searches of the same space, seed and number of trials, through the real search
path: one with ``objective="macs"``, one with ``objective="latency"``. Accuracy comes from a
tabular benchmark (the networks' real proxy-training runs, looked up), and every network's
latency is measured live on this machine (torch eager, one thread, batch 1 median of
``fusion_nas.search.loop.LATENCY_RUNS`` runs) in both searches, so both fronts can be drawn on both
axes. Reports each front (accuracy, MACs, latency), the hypervolume of each search's trials in
(accuracy, log10 latency) and in (accuracy, log10 MACs), and how many front networks the two
share. Writes ``benchmarks/results/latency_front_<table>.json`` and a plotly HTML.

    python benchmarks/latency_front.py                    # mnist1d table, 60 trials each
    python benchmarks/latency_front.py --trials 8 --out /tmp/lf   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from _common import open_memory_search
from plotly.subplots import make_subplots

from fusion_nas.errors import FusionNasError, one_line
from fusion_nas.evaluation.table import load_table
from fusion_nas.pareto import front_indices, hypervolume
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import prepare, run_trials
from fusion_nas.store.records import TrialRecord, TrialStatus
from fusion_nas.store.store import quiet_optuna

HERE = Path(__file__).resolve().parent
DEFAULT_TABLE = HERE / "tables" / "mnist1d-table.csv"


def run(table_path: Path, objective: str, trials: int, seed: int) -> list[TrialRecord]:
    """One NSGA-II search on the table with ``objective``; every trial measures latency."""
    table = load_table(table_path)
    config = SearchConfig(
        name=f"front-{objective}",
        space=table.space,
        dataset=table.dataset,
        strategy="optuna:nsga2",
        trials=trials,
        proxy=table.proxy,
        seed=seed,
        evaluator=f"table:{table.path}",
        objective=objective,
        latency="eager",
    )
    strategy = prepare(config)
    study = open_memory_search(config, strategy)
    run_trials(config, study, strategy, trials)
    return [TrialRecord.from_trial(t) for t in study.get_trials()]


def front(trials: list[TrialRecord], cost: str) -> list[dict[str, Any]]:
    """The complete trials on the (accuracy, ``cost``) front, cheapest first."""
    ok = [t for t in trials if t.status == TrialStatus.COMPLETE]
    acc = [float(t.val_acc) for t in ok]  # type: ignore[arg-type]
    costs = [float(getattr(t, cost)) for t in ok]
    return [
        {
            "arch": ok[i].arch_desc,
            "arch_id": ok[i].arch_id,
            "val_acc": round(acc[i], 4),
            "macs": ok[i].macs,
            "latency_ms": round(float(ok[i].latency_ms), 4),  # type: ignore[arg-type]
        }
        for i in front_indices(acc, costs)
    ]


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Both searches; the JSON document."""
    quiet_optuna()
    runs = {
        obj: run(args.table.resolve(), obj, args.trials, args.seed) for obj in ("macs", "latency")
    }
    every = [t for ts in runs.values() for t in ts if t.status == TrialStatus.COMPLETE]
    # Hypervolume in log10 space needs values >= 1: latency in microseconds, not milliseconds.
    ref_lat = 1.1 * max(1000.0 * float(t.latency_ms) for t in every)  # type: ignore[arg-type]
    ref_macs = 1.1 * max(float(t.macs) for t in every)  # type: ignore[arg-type]
    doc: dict[str, Any] = {
        "table": str(args.table),
        "trials": args.trials,
        "seed": args.seed,
        "latency": "torch eager, one thread, batch 1, median (fusion_nas.search.loop.LATENCY_RUNS)",
        "hypervolume": "in (accuracy, log10 latency in microseconds) and (accuracy, log10 MACs), "
        "up to accuracy 0 and 1.1 x the largest value of both searches",
        "searches": {},
    }
    for obj, trials in runs.items():
        ok = [t for t in trials if t.status == TrialStatus.COMPLETE]
        acc = [float(t.val_acc) for t in ok]  # type: ignore[arg-type]
        lat_us = [1000.0 * float(t.latency_ms) for t in ok]  # type: ignore[arg-type]
        macs = [float(t.macs) for t in ok]  # type: ignore[arg-type]
        doc["searches"][obj] = {
            "front_on_latency": front(trials, "latency_ms"),
            "front_on_macs": front(trials, "macs"),
            "hv_latency": round(hypervolume(acc, lat_us, ref_lat), 4),
            "hv_macs": round(hypervolume(acc, macs, ref_macs), 4),
        }
    a = {f["arch_id"] for f in doc["searches"]["latency"]["front_on_latency"]}
    b = {f["arch_id"] for f in doc["searches"]["macs"]["front_on_macs"]}
    doc["shared_front_networks"] = len(a & b)
    return doc


def figure(doc: dict[str, Any]) -> go.Figure:
    """Each search's own front, on the latency axis and on the MACs axis."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy vs latency", "accuracy vs MACs"))
    for obj, color in (("macs", "#1f77b4"), ("latency", "#d62728")):
        own = doc["searches"][obj]["front_on_latency" if obj == "latency" else "front_on_macs"]
        for col, key in ((1, "latency_ms"), (2, "macs")):
            fig.add_scatter(
                x=[f[key] for f in own],
                y=[f["val_acc"] for f in own],
                mode="lines+markers",
                line_shape="hv",
                name=f"front of the search on {obj}",
                legendgroup=obj,
                showlegend=col == 1,
                marker_color=color,
                text=[f["arch"] for f in own],
                row=1,
                col=col,
            )
    fig.update_xaxes(type="log")
    fig.update_layout(template="plotly_white", title=f"{doc['trials']} trials each, NSGA-II")
    return fig


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input ends with one line and exit code 2."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="table CSV (tabular.py)")
    p.add_argument("--trials", type=int, default=60, help="trials per search")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results", help="output folder")
    args = p.parse_args(argv)
    try:
        doc = compare(args)
    except FusionNasError as exc:
        print(f"Error: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"latency_front_{args.table.stem}"
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    figure(doc).write_html(args.out / f"{stem}.html", include_plotlyjs="cdn")
    for obj, s in doc["searches"].items():
        own = s["front_on_latency"] if obj == "latency" else s["front_on_macs"]
        print(f"search on {obj}: HV(latency) {s['hv_latency']}  HV(MACs) {s['hv_macs']}")
        for f in own:
            print(
                f"  {f['val_acc']:.4f}  {f['macs']:>8,} MACs  {f['latency_ms']:.3f} ms  {f['arch']}"
            )
    print(f"shared front networks: {doc['shared_front_networks']}")
    print(f"wrote {args.out / stem}.json and .html")


if __name__ == "__main__":
    main()
