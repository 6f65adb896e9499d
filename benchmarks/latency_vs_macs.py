"""MACs against measured latency: how well does the exact MAC count rank real CPU speed?

For every built-in space (or ``--spaces``), ``--per-space`` architectures are sampled uniformly
(seeded); each gets its exact MACs (:func:`fusion_nas.model.cost.arch_cost`) and its torch-eager
batch-1 latency in one thread (:func:`fusion_nas.deploy.latency.arch_latency`: median of ``--runs``
timed runs after ``--warmup``). Per space the script reports

- Kendall tau between MACs and latency, over all sampled networks and over the networks holding
  each operator and each attention variant;
- how much slower (or faster) than a log-log fit of latency on MACs the networks holding each
  operator / attention variant run: above 1, that choice costs more time than its MACs say;
- pairs that disagree beyond the noise: ``a`` has at least twice the MACs of ``b`` but is
  faster, with ``a``'s 90th percentile below ``b``'s 10th;
- the noise itself: one probe network re-measured every ``--probe-every`` networks (the cores
  may be shared with other jobs), as the spread of its medians.

Writes ``latency_vs_macs.json`` (every network, every figure) and ``latency_vs_macs.html``
(plotly scatter per space) to ``--out`` (default ``benchmarks/results``).

    python benchmarks/latency_vs_macs.py --per-space 300
    python benchmarks/latency_vs_macs.py --spaces digits --per-space 4 --runs 3   # smoke run
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from scipy.stats import kendalltau

from fusion_nas.deploy.latency import arch_latency
from fusion_nas.model.arch import SKIP, Architecture
from fusion_nas.model.cost import arch_cost
from fusion_nas.model.space import SearchSpace, builtin_spaces, load_space

RESULTS = Path(__file__).parent / "results"
HEAVY_MACS = 100_000_000  # above this, a network is timed with --heavy-runs (CoAtNet-size)
# The colour of a point: the most token-heavy attention variant the network holds.
VARIANT_ORDER = ("global", "window", "linear", "channel")
COLORS = {
    "global": "#d62728",
    "window": "#ff7f0e",
    "linear": "#2ca02c",
    "channel": "#9467bd",
    "none": "#1f77b4",
}


def sample_archs(space: SearchSpace, n: int, seed: int) -> list[Architecture]:
    """Up to ``n`` distinct architectures drawn uniformly from ``space`` (seeded)."""
    rng = random.Random(seed)
    seen: dict[str, Architecture] = {}
    for _ in range(20 * n):
        if len(seen) >= min(n, space.num_architectures()):
            break
        arch = space.sample(rng)
        seen.setdefault(arch.arch_id, arch)
    return list(seen.values())


def features(arch: Architecture) -> tuple[list[str], list[str]]:
    """Operators and attention variants ``arch`` holds (non-skipped stages)."""
    stages = [s for s in arch.stages if s.operator != SKIP]
    ops = sorted({s.operator for s in stages})
    variants = sorted({s.attention for s in stages if s.attention is not None})
    return ops, variants


def color_of(variants: list[str]) -> str:
    """The most token-heavy variant held, or ``none``."""
    return next((v for v in VARIANT_ORDER if v in variants), "none")


def measure_space(
    space: SearchSpace,
    n: int,
    *,
    seed: int,
    warmup: int,
    runs: int,
    heavy_runs: int,
    probe_every: int,
) -> dict[str, Any]:
    """MACs and latency of ``n`` sampled networks, plus the probe's repeated medians."""
    archs = sample_archs(space, n, seed)
    rows, probe = [], []

    def latency(arch: Architecture, macs: int):
        heavy = macs > HEAVY_MACS
        return arch_latency(
            arch,
            space,
            batch_sizes=(1,),
            warmup=1 if heavy else warmup,
            runs=heavy_runs if heavy else runs,
            threads=1,
        ).point(1)

    for i, arch in enumerate(archs):
        cost = arch_cost(arch, space)
        p = latency(arch, cost.macs)
        ops, variants = features(arch)
        rows.append(
            {
                "arch_id": arch.arch_id,
                "arch": arch.to_dict(),
                "desc": arch.describe(),
                "macs": cost.macs,
                "params": cost.params,
                "operators": ops,
                "variants": variants,
                "median_ms": p.median_ms,
                "p10_ms": p.p10_ms,
                "p90_ms": p.p90_ms,
            }
        )
        if probe_every and i % probe_every == 0:
            probe.append(latency(archs[0], rows[0]["macs"]).median_ms)
    return {"rows": rows, "probe_medians_ms": probe}


def tau(macs: list[float], lat: list[float]) -> float | None:
    """Kendall tau-b, or None for fewer than 3 points or constant input."""
    if len(macs) < 3:
        return None
    t = kendalltau(macs, lat).statistic
    return None if t is None or math.isnan(t) else round(float(t), 4)


def analyse(rows: list[dict[str, Any]], probe: list[float]) -> dict[str, Any]:
    """Tau overall and per group, per-group slowness against the MACs fit, disagreeing pairs."""
    macs = [r["macs"] for r in rows]
    lat = [r["median_ms"] for r in rows]
    out: dict[str, Any] = {"n": len(rows), "kendall_tau": tau(macs, lat)}
    # Under contention a run is either undisturbed or preempted (a bimodal spread): the 10th
    # percentile is the less disturbed estimate of the network's own time.
    out["kendall_tau_p10"] = tau(macs, [r["p10_ms"] for r in rows])
    # log(latency) = a + b log(MACs): the residual says how much slower than its MACs predict.
    resid = None
    if len(rows) >= 3 and len(set(macs)) > 1:
        b, a = np.polyfit(np.log(macs), np.log(lat), 1)
        resid = np.log(lat) - (a + b * np.log(macs))
        out["fit"] = {"slope": round(float(b), 4), "intercept": round(float(a), 4)}
    groups: dict[str, dict[str, Any]] = {}
    for key in ("operators", "variants"):
        names = sorted({g for r in rows for g in r[key]})
        per = {}
        for g in names:
            idx = [i for i, r in enumerate(rows) if g in r[key]]
            entry: dict[str, Any] = {
                "n": len(idx),
                "kendall_tau": tau([macs[i] for i in idx], [lat[i] for i in idx]),
            }
            if resid is not None:
                entry["slowdown_vs_macs_fit"] = round(float(np.exp(resid[idx].mean())), 3)
            entry["median_us_per_kmac"] = round(
                float(np.median([1e6 * lat[i] / macs[i] for i in idx])), 4
            )
            per[g] = entry
        groups[key] = per
    out.update(groups)
    # Pairs where more MACs is faster, beyond the noise of either measurement.
    faster, pairs = [], 0
    for i, j in itertools.permutations(range(len(rows)), 2):
        if macs[i] >= 2 * macs[j]:
            pairs += 1
            if rows[i]["p90_ms"] < rows[j]["p10_ms"]:
                faster.append(
                    (macs[i] / macs[j], rows[j]["median_ms"] / rows[i]["median_ms"], i, j)
                )
    faster.sort(reverse=True)
    out["more_macs_but_faster"] = {
        "pairs_2x_macs": pairs,
        "count": len(faster),
        "fraction": round(len(faster) / pairs, 4) if pairs else None,
        "examples": [
            {
                "more_macs": rows[i]["desc"],
                "macs": macs[i],
                "ms": round(lat[i], 4),
                "fewer_macs": rows[j]["desc"],
                "macs_fewer": macs[j],
                "ms_fewer": round(lat[j], 4),
                "macs_ratio": round(r, 2),
                "speedup": round(s, 2),
            }
            for r, s, i, j in faster[:5]
        ],
    }
    if probe:
        m = float(np.median(probe))
        out["noise"] = {
            "probe_runs": len(probe),
            "probe_median_ms": round(m, 4),
            "probe_range_over_median": round((max(probe) - min(probe)) / m, 4),
        }
    return out


def figure(results: dict[str, Any]) -> go.Figure:
    """One log-log scatter of latency against MACs per space, coloured by attention variant."""
    names = list(results)
    fig = make_subplots(
        rows=len(names),
        cols=1,
        subplot_titles=[
            f"{n}: Kendall tau {results[n]['summary']['kendall_tau']} (median), "
            f"{results[n]['summary'].get('kendall_tau_p10')} (p10)"
            for n in names
        ],
    )
    shown: set[str] = set()
    for k, name in enumerate(names, start=1):
        rows = results[name]["rows"]
        for c in (*VARIANT_ORDER, "none"):
            pts = [r for r in rows if color_of(r["variants"]) == c]
            if not pts:
                continue
            label = "no attention" if c == "none" else f"holds {c} attention"
            fig.add_trace(
                go.Scatter(
                    x=[r["macs"] for r in pts],
                    y=[r["median_ms"] for r in pts],
                    mode="markers",
                    name=label,
                    legendgroup=c,
                    showlegend=c not in shown,
                    marker={"color": COLORS[c], "size": 6, "opacity": 0.7},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [r["p90_ms"] - r["median_ms"] for r in pts],
                        "arrayminus": [r["median_ms"] - r["p10_ms"] for r in pts],
                        "thickness": 0.5,
                        "width": 0,
                    },
                    text=[r["desc"] for r in pts],
                    hovertemplate="%{text}<br>%{x:,} MACs<br>%{y:.3f} ms<extra></extra>",
                ),
                row=k,
                col=1,
            )
            shown.add(c)
        fig.update_xaxes(type="log", title_text="MACs (batch 1)", row=k, col=1)
        fig.update_yaxes(type="log", title_text="eager latency, ms (1 thread)", row=k, col=1)
    fig.update_layout(
        height=380 * len(names),
        title="Measured batch-1 latency against exact MACs",
        template="plotly_white",
    )
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what it wrote to the JSON file."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--spaces",
        nargs="+",
        default=None,
        help="Built-in space names or TOML paths (default: every built-in space).",
    )
    ap.add_argument(
        "--per-space",
        type=int,
        default=300,
        help="Networks sampled per space (the tiny-budget knob).",
    )
    ap.add_argument(
        "--cap",
        action="append",
        default=[],
        metavar="SPACE=N",
        help="Fewer networks for one space, e.g. coatnet-like=40 (repeatable).",
    )
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=21, help="Timed runs per network.")
    ap.add_argument(
        "--heavy-runs",
        type=int,
        default=5,
        help=f"Timed runs for networks above {HEAVY_MACS:,} MACs.",
    )
    ap.add_argument(
        "--probe-every",
        type=int,
        default=25,
        help="Re-measure the first network every N networks (noise); 0: never.",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--reanalyse",
        type=Path,
        default=None,
        metavar="JSON",
        help="Measure nothing: recompute the figures of an earlier run's JSON into --out.",
    )
    args = ap.parse_args(argv)
    if args.reanalyse is not None:
        return reanalyse(args.reanalyse, args.out)
    caps = {}
    for c in args.cap:
        name, _, n = c.partition("=")
        if not n.isdigit():
            ap.error(f"--cap must be SPACE=N, got {c!r}")
        caps[name] = int(n)
    if args.per_space < 1 or args.runs < 1:
        ap.error("--per-space and --runs must be >= 1")
    spaces = args.spaces or builtin_spaces()
    results: dict[str, Any] = {}
    load_before = os.getloadavg()
    for sp in spaces:
        space = load_space(sp)
        n = min(args.per_space, caps.get(space.name, args.per_space))
        start = time.perf_counter()
        m = measure_space(
            space,
            n,
            seed=args.seed,
            warmup=args.warmup,
            runs=args.runs,
            heavy_runs=args.heavy_runs,
            probe_every=args.probe_every,
        )
        summary = analyse(m["rows"], m["probe_medians_ms"])
        summary["seconds"] = round(time.perf_counter() - start, 1)
        results[space.name] = {"summary": summary, **m}
        print(
            f"{space.name}: {summary['n']} networks, Kendall tau {summary['kendall_tau']}, "
            f"{summary['more_macs_but_faster']['count']} pairs with 2x the MACs but faster "
            f"({summary['seconds']} s)",
            flush=True,
        )
    out = {
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "heavy_macs": HEAVY_MACS,
            "backend": "eager",
            "threads": 1,
            "batch": 1,
        },
        "machine": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
        },
        "spaces": results,
    }
    return write(out, args.out)


def reanalyse(path: Path, out_dir: Path) -> dict[str, Any]:
    """Recompute every space's summary of an earlier run's JSON and write it to ``out_dir``."""
    out = json.loads(Path(path).read_text())
    for res in out["spaces"].values():
        seconds = res["summary"].get("seconds")
        res["summary"] = {**analyse(res["rows"], res["probe_medians_ms"]), "seconds": seconds}
    return write(out, out_dir)


def write(out: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Write the JSON and the HTML figure; returns ``out``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latency_vs_macs.json").write_text(json.dumps(out, indent=1))
    figure(out["spaces"]).write_html(out_dir / "latency_vs_macs.html", include_plotlyjs="cdn")
    print(f"Wrote {out_dir / 'latency_vs_macs.json'} and {out_dir / 'latency_vs_macs.html'}")
    return out


if __name__ == "__main__":
    main()
