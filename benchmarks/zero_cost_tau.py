"""Zero-cost proxies against a tabular benchmark: Kendall τ, seconds, and pre-screen hypervolume.

For each table every network (in the space's enumeration order) is scored once by each proxy of
:mod:`fusion_nas.search.zero_cost` (initial weights of seed ``--seed``, one batch of 64 TRAIN
samples
drawn by the same seed), plus two trivial baselines that need no network: ``-macs`` (smaller is
better) and ``params`` (bigger is better). A proxy is useful only where it beats them.

- Kendall τ (``scipy.stats.kendalltau``, τ-b) of each score against the truth: the mean over
  the table's seeds of the validation accuracy;
- seconds per architecture of each proxy (build + score, ``--threads`` torch threads);
- the pre-screen: for K in ``--k`` (``all``, or K networks drawn as
``fusion_nas.search.prescreen.draw``
  draws them, over ``--draws`` seeds) and M in ``--m``, the M picked by
  :func:`fusion_nas.search.prescreen.select` (the head of ``promotion_order(score, MACs)``) are
  looked up
  in the table, and the hypervolume of their front is divided by the true front's (reference:
  accuracy 0 and 1.1 x the table's largest MACs, as ``benchmarks/search_efficiency.py``).
  ``random`` is M networks drawn uniformly (mean over ``--draws`` seeds), the bar to beat.

Writes ``benchmarks/results/zero_cost_tau_<table>.json`` per table and prints a markdown table.

    python benchmarks/zero_cost_tau.py                                 # both tables, in full
    python benchmarks/zero_cost_tau.py --limit 8 --m 2 3 --out /tmp/zc # a smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from scipy.stats import kendalltau

from fusion_nas.errors import FusionNasError, one_line
from fusion_nas.evaluation.table import Table, load_table
from fusion_nas.model.arch import Architecture
from fusion_nas.model.cost import Cost
from fusion_nas.pareto import hypervolume
from fusion_nas.search.prescreen import Screened, select
from fusion_nas.search.zero_cost import BATCH_SIZE, PROXIES, score_arch, train_batch

HERE = Path(__file__).resolve().parent
TABLES = (HERE / "tables" / "mnist1d-table.csv", HERE / "tables" / "digits.csv")
BASELINES = ("-macs", "params")
REF_FACTOR = 1.1  # reference MACs = 1.1 x the table's largest MACs (search_efficiency.py)


def truth(table: Table) -> tuple[list[Architecture], list[float], list[Cost]]:
    """Architectures in the space's enumeration order, their mean val_acc and their cost."""
    archs = table.space.enumerate(limit=1_000_000)
    costs = table.costs()
    acc = []
    for arch in archs:
        out = table.outcome(arch)
        if out.val_acc is None:
            raise FusionNasError(f"table {table.label}: {arch.describe()} has no complete row")
        acc.append(float(out.val_acc))
    return archs, acc, [costs[a.arch_id] for a in archs]


def front_fraction(
    picks: list[int], acc: list[float], costs: list[Cost], ref: float, true_hv: float
) -> float:
    """Hypervolume of the picks' front (looked up in the table) over the true front's."""
    return hypervolume([acc[i] for i in picks], [float(costs[i].macs) for i in picks], ref) / (
        true_hv
    )


def prescreen_fractions(
    archs: list[Architecture],
    scores: list[float],
    acc: list[float],
    costs: list[Cost],
    k: int,
    m: int,
    draws: int,
    ref: float,
    true_hv: float,
) -> list[float]:
    """Hypervolume fraction of the M picks per draw seed (one value when K covers the table)."""
    n = len(scores)
    seeds = [0] if k >= n else list(range(draws))
    out = []
    for seed in seeds:
        # the same draw as fusion_nas.search.prescreen.draw on a space of at most 100,000 networks
        pool = list(range(n)) if k >= n else random.Random(seed).sample(range(n), k)
        cands = [Screened(archs[i], costs[i].macs, costs[i].params, scores[i], 0.0) for i in pool]
        where = {id(c): i for c, i in zip(cands, pool)}
        picks = [where[id(c)] for c in select(cands, m)]
        out.append(front_fraction(picks, acc, costs, ref, true_hv))
    return out


def random_fractions(
    n: int, m: int, draws: int, acc: list[float], costs: list[Cost], ref: float, true_hv: float
) -> list[float]:
    """Hypervolume fraction of M networks drawn uniformly, per draw seed."""
    return [
        front_fraction(random.Random(1000 + s).sample(range(n), m), acc, costs, ref, true_hv)
        for s in range(draws)
    ]


def run_table(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Score one table's networks with every proxy; τ, seconds and pre-screen fractions."""
    table = load_table(path.resolve())
    archs, acc, costs = truth(table)
    ref_all = REF_FACTOR * max(c.macs for c in costs)
    true_hv = hypervolume(acc, [float(c.macs) for c in costs], ref_all)
    if args.limit:
        archs, acc, costs = archs[: args.limit], acc[: args.limit], costs[: args.limit]
    batch = train_batch(
        table.space,
        table.dataset,
        size=BATCH_SIZE,
        seed=args.seed,
        val_fraction=table.proxy.val_fraction,
    )
    scores: dict[str, list[float]] = {
        "-macs": [-float(c.macs) for c in costs],
        "params": [float(c.params) for c in costs],
    }
    seconds: dict[str, float] = {"-macs": 0.0, "params": 0.0}
    for proxy in args.proxies:
        start = time.perf_counter()
        scores[proxy] = [score_arch(a, table.space, batch, proxy, args.seed) for a in archs]
        seconds[proxy] = (time.perf_counter() - start) / len(archs)
        print(f"  {table.label} {proxy}: {seconds[proxy]:.3f} s/arch", file=sys.stderr, flush=True)
    n = len(archs)
    ks = sorted({n if k == "all" else min(int(k), n) for k in args.k}, reverse=True)
    ms = [m for m in args.m if m <= n]
    doc: dict[str, Any] = {
        "table": str(table.path),
        "space": table.space.name,
        "dataset": table.dataset,
        "networks": n,
        "truth": f"mean over the table's seeds {table.seeds} of the validation accuracy",
        "seed": args.seed,
        "batch": f"{BATCH_SIZE} samples of the TRAIN split drawn by seed {args.seed}",
        "threads": torch.get_num_threads(),
        "reference": f"accuracy 0, MACs {REF_FACTOR} x the table's largest MACs ({ref_all:,.0f})",
        "true_hypervolume": true_hv,
        "k": ks,
        "m": ms,
        "draws": args.draws,
        "proxies": {},
    }
    for name in (*args.proxies, *BASELINES):
        tau, p = kendalltau(scores[name], acc)
        entry: dict[str, Any] = {
            "kendall_tau": round(float(tau), 4),
            "p_value": float(p),
            "seconds_per_arch": round(seconds[name], 4),
            "prescreen": {},
        }
        for k in ks:
            for m in ms:
                if m > k:
                    continue
                fr = prescreen_fractions(
                    archs, scores[name], acc, costs, k, m, args.draws, ref_all, true_hv
                )
                entry["prescreen"][f"{k}:{m}"] = {
                    "mean": round(statistics.fmean(fr), 4),
                    "min": round(min(fr), 4),
                    "max": round(max(fr), 4),
                }
        doc["proxies"][name] = entry
    doc["random"] = {
        str(m): round(
            statistics.fmean(random_fractions(n, m, args.draws, acc, costs, ref_all, true_hv)), 4
        )
        for m in ms
    }
    doc["scores"] = {name: [round(s, 6) for s in vals] for name, vals in scores.items()}
    doc["arch_ids"] = [a.arch_id for a in archs]
    return doc


def markdown(doc: dict[str, Any]) -> str:
    """One markdown table: τ, seconds and pre-screen fractions per proxy."""
    cols = [f"{k}:{m}" for k in doc["k"] for m in doc["m"] if m <= k]
    head = ["proxy", "Kendall τ", "s/arch", *[f"HV {c}" for c in cols]]
    lines = [
        f"**{doc['space']}** ({doc['networks']} networks, true HV {doc['true_hypervolume']:.3f})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, e in doc["proxies"].items():
        cells = [name, f"{e['kendall_tau']:+.3f}", f"{e['seconds_per_arch']:.3f}"]
        cells += [f"{e['prescreen'][c]['mean']:.3f}" for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    rnd = ["random M", "", ""] + [f"{doc['random'][c.split(':')[1]]:.3f}" for c in cols]
    lines.append("| " + " | ".join(rnd) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tables", type=Path, nargs="+", default=list(TABLES), help="table CSVs")
    p.add_argument("--proxies", nargs="+", default=list(PROXIES), choices=PROXIES)
    p.add_argument("--seed", type=int, default=0, help="initial weights and batch seed")
    p.add_argument("--k", nargs="+", default=["all", "200"], help="candidates scored: N or all")
    p.add_argument("--m", type=int, nargs="+", default=[10, 20, 30], help="networks kept")
    p.add_argument("--draws", type=int, default=10, help="draw seeds when K < the table")
    p.add_argument("--limit", type=int, default=0, help="score only the first N networks")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--out", type=Path, default=HERE / "results", help="output folder")
    args = p.parse_args(argv)
    bad = [k for k in args.k if k != "all" and not (k.isdigit() and int(k) >= 1)]
    if bad or min(args.m) < 1 or args.draws < 1 or args.limit < 0 or args.threads < 1:
        p.error(
            f"bad value (--k {bad[0] if bad else args.k}, --m {args.m}, --draws {args.draws}, "
            f"--limit {args.limit}, --threads {args.threads}); allowed: --k 'all' or integers "
            ">= 1, --m/--draws/--threads >= 1, --limit >= 0"
        )
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Entry point: bad input ends with one line and exit code 2."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    docs = []
    try:
        for path in args.tables:
            doc = run_table(path, args)
            args.out.mkdir(parents=True, exist_ok=True)
            out = args.out / f"zero_cost_tau_{Path(doc['table']).stem}.json"
            out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            print(markdown(doc) + "\n", flush=True)
            print(f"wrote {out}", flush=True)
            docs.append(doc)
    except FusionNasError as exc:
        print(f"Error: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    return docs


if __name__ == "__main__":
    main()
