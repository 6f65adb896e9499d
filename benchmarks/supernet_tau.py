"""Supernet rank quality on a tabular benchmark: Kendall τ of inherited vs stand-alone accuracy.

For each table (default: ``benchmarks/tables/mnist1d-table.csv`` and ``digits.csv``) and each
``--epochs`` count, the table's space gets one weight-sharing supernet
(:mod:`fusion_nas.search.supernet`), trained once with uniform single-path sampling on the table's
dataset with the table's proxy settings (its ``.json`` sidecar: batch size, learning rate,
weight decay, validation fraction; the epochs are the supernet's own). Then every network of
the table (or ``--limit`` of them, a seeded sample) gets its inherited validation accuracy
after BatchNorm recalibration, and is compared with the table's stand-alone accuracy (the mean
of ``val_acc`` over the table's seeds):

- Kendall τ overall, and per operator family: the networks that use an operator in some stage
  (``attention``, ``parallel``, ``gated``; ``conv-only`` for networks of convolutions alone);
  the groups overlap;
- the hypervolume fraction of the true front reached by the top M networks of the inherited
  ranking (:func:`fusion_nas.pareto.promotion_order` on (inherited accuracy, MACs)), their
  accuracies looked up in the table, for M in ``--picks``; beside it the mean over 20 random
  draws of M networks, and the inherited front itself. Hypervolumes use
  :func:`fusion_nas.pareto.hypervolume` with the reference of
  ``benchmarks/search_efficiency.py``'s ``true_front``: accuracy 0, 1.1 x the largest MACs;
- what it cost: the supernet's training seconds and epochs, the scoring seconds, and the
  epochs a confirmation of M picks costs (M x the table's proxy epochs).

Writes ``benchmarks/results/supernet_tau_<table>[-<suffix>].json`` and prints a markdown table
per table.

    python benchmarks/supernet_tau.py                            # both tables, 30 epochs
    python benchmarks/supernet_tau.py --epochs 10 30 100         # τ against supernet epochs
    python benchmarks/supernet_tau.py --tables benchmarks/tables/digits.csv --epochs 1 \\
        --limit 12 --out /tmp/tau                                # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from scipy.stats import kendalltau

from fusion_nas.errors import FusionNasError, one_line
from fusion_nas.evaluation.table import Table, load_table
from fusion_nas.model.arch import Architecture
from fusion_nas.pareto import front_indices, hypervolume, promotion_order
from fusion_nas.search.supernet import CALIB_BATCHES, inherited_accuracy, train_supernet
from fusion_nas.store.records import TrialStatus

HERE = Path(__file__).resolve().parent
DEFAULT_TABLES = (HERE / "tables" / "mnist1d-table.csv", HERE / "tables" / "digits.csv")
REF_FACTOR = 1.1  # as benchmarks/search_efficiency.py: reference MACs = 1.1 x the largest
FAMILIES = ("attention", "parallel", "gated", "conv-only")
RANDOM_DRAWS = 20


def tau(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b, rounded (None for fewer than two points or a constant list)."""
    if len(x) < 2:
        return None
    t = kendalltau(x, y).statistic
    return None if t != t else round(float(t), 4)  # NaN: a constant list


def families(arch: Architecture) -> list[str]:
    """The operator families ``arch`` belongs to (see the module docstring)."""
    ops = {s.operator for s in arch.stages if s.depth}
    found = [f for f in FAMILIES[:3] if f in ops]
    return found if found else ["conv-only"]


def table_networks(table: Table) -> list[dict[str, Any]]:
    """Every network the table answers: architecture, MACs and mean stand-alone accuracy."""
    out = []
    for by_seed in table.rows.values():
        row = next(iter(by_seed.values()))
        arch = Architecture.from_json(row.arch)
        result = table.outcome(arch)
        if result.status == TrialStatus.COMPLETE and result.val_acc is not None:
            out.append({"arch": arch, "macs": float(row.macs), "table_acc": result.val_acc})
    return out


def hv_fraction(nets: list[dict[str, Any]], ref: float, true_hv: float) -> float:
    """Hypervolume of ``nets`` (their table accuracies) over the true front's."""
    if not nets:
        return 0.0
    hv = hypervolume([n["table_acc"] for n in nets], [n["macs"] for n in nets], ref)
    return round(hv / true_hv, 4)


def one_run(table: Table, epochs: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one supernet of ``epochs`` epochs on the table's settings; score and compare."""
    everything = table_networks(table)
    acc, macs = [n["table_acc"] for n in everything], [n["macs"] for n in everything]
    ref = REF_FACTOR * max(macs)
    true_hv = hypervolume(acc, macs, ref)
    nets = everything
    if args.limit is not None and args.limit < len(nets):
        nets = random.Random(args.seed).sample(nets, args.limit)
    changes: dict[str, Any] = {"epochs": epochs}
    if args.lr is not None:
        changes["lr"] = args.lr
    if args.train_subset is not None:
        changes["train_subset"] = args.train_subset
    proxy = dataclasses.replace(table.proxy, **changes)
    trained = train_supernet(
        table.space,
        table.dataset,
        proxy,
        seed=args.seed,
        data_dir=table.meta.get("data_dir"),
        device=args.device,
    )
    start = time.perf_counter()
    for n in nets:
        n["inherited_acc"] = inherited_accuracy(trained, n["arch"], args.calib_batches)
    score_s = time.perf_counter() - start
    inh = [n["inherited_acc"] for n in nets]
    tab = [n["table_acc"] for n in nets]
    per_family = {}
    for fam in FAMILIES:
        members = [n for n in nets if fam in families(n["arch"])]
        per_family[fam] = {
            "networks": len(members),
            "kendall_tau": tau(
                [n["inherited_acc"] for n in members], [n["table_acc"] for n in members]
            ),
        }
    order = promotion_order(inh, [n["macs"] for n in nets])
    rng = random.Random(args.seed)
    picks = {}
    for m in args.picks:
        top = [nets[i] for i in order[:m]]
        draws = [
            hv_fraction(rng.sample(nets, min(m, len(nets))), ref, true_hv)
            for _ in range(RANDOM_DRAWS)
        ]
        picks[str(m)] = {
            "hv_fraction": hv_fraction(top, ref, true_hv),
            "random_mean_hv_fraction": round(sum(draws) / len(draws), 4),
            "confirm_epochs": m * table.proxy.epochs,
            "networks": [n["arch"].describe() for n in top],
        }
    front = [nets[i] for i in front_indices(inh, [n["macs"] for n in nets])]
    return {
        "supernet_epochs": trained.epochs,
        "supernet_steps": trained.steps,
        "supernet_seconds": round(trained.seconds, 2),
        "supernet_params": trained.supernet.n_params,
        "final_train_loss": round(trained.losses[-1], 4),
        "scoring_seconds": round(score_s, 2),
        "networks_scored": len(nets),
        "kendall_tau": tau(inh, tab),
        "per_family": per_family,
        "picks": picks,
        "inherited_front": {
            "size": len(front),
            "hv_fraction": hv_fraction(front, ref, true_hv),
        },
        "mean_inherited_acc": round(sum(inh) / len(inh), 4),
        "proxy": proxy.to_dict(),
        "scores": [
            {
                "arch_id": n["arch"].arch_id,
                "macs": int(n["macs"]),
                "table_acc": round(n["table_acc"], 5),
                "inherited_acc": round(n["inherited_acc"], 5),
            }
            for n in nets
        ],
    }


def run_table(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every ``--epochs`` run of one table."""
    table = load_table(path)
    full = table.proxy.epochs * len(table.rows) * len(table.seeds)
    doc: dict[str, Any] = {
        "table": str(path),
        "space": table.space.name,
        "dataset": table.dataset,
        "networks": len(table.rows),
        "table_proxy": table.proxy.to_dict(),
        "full_training_epochs": full,
        "reference": f"accuracy 0, MACs {REF_FACTOR} x the table's largest MACs; "
        "hypervolume in (accuracy, log10 MACs)",
        "families": "networks using the operator in some stage (overlapping); conv-only: none",
        "calib_batches": args.calib_batches,
        "threads": torch.get_num_threads(),
        "seed": args.seed,
        "runs": {},
    }
    for epochs in args.epochs:
        doc["runs"][str(epochs)] = one_run(table, epochs, args)
        print(f"{table.space.name}: {epochs} supernet epochs done", file=sys.stderr, flush=True)
    return doc


def markdown(doc: dict[str, Any]) -> str:
    """One table row per supernet epoch count."""
    picks = list(next(iter(doc["runs"].values()))["picks"]) if doc["runs"] else []
    head = ["epochs", "train s", "score s", "τ", *[f"τ {f}" for f in FAMILIES]]
    head += [f"HV top-{m} (random)" for m in picks] + ["HV inh. front"]
    lines = [
        f"### {doc['space']} ({doc['networks']} networks, {doc['dataset']})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]

    def show(v: float | None) -> str:
        return "-" if v is None else f"{v:+.3f}"

    for ep, r in doc["runs"].items():
        cells = [ep, f"{r['supernet_seconds']:.0f}", f"{r['scoring_seconds']:.0f}"]
        cells.append(show(r["kendall_tau"]))
        cells += [show(r["per_family"][f]["kendall_tau"]) for f in FAMILIES]
        cells += [
            f"{r['picks'][m]['hv_fraction']:.3f} ({r['picks'][m]['random_mean_hv_fraction']:.3f})"
            for m in picks
        ]
        cells.append(f"{r['inherited_front']['hv_fraction']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tables", type=Path, nargs="+", default=list(DEFAULT_TABLES))
    p.add_argument(
        "--epochs", type=int, nargs="+", default=[30], help="supernet epoch counts, one run each"
    )
    p.add_argument(
        "--limit", type=int, default=None, help="score only N networks (a seeded sample)"
    )
    p.add_argument("--picks", type=int, nargs="+", default=[5, 10, 20], help="top-M sizes")
    p.add_argument("--calib-batches", type=int, default=CALIB_BATCHES)
    p.add_argument("--lr", type=float, default=None, help="default: the table's learning rate")
    p.add_argument("--train-subset", type=int, default=None, help="tiny budgets only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the tables used 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=HERE / "results", help="output folder")
    p.add_argument(
        "--suffix", default="", help="appended to the JSON's name (supernet_tau_TABLE-SUFFIX)"
    )
    args = p.parse_args(argv)
    for flag, values in (("--epochs", args.epochs), ("--picks", args.picks)):
        if any(v < 1 for v in values):
            p.error(f"{flag} {values} must be positive integers")
    if args.limit is not None and args.limit < 2:
        p.error(f"--limit {args.limit} must be at least 2")
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input ends with one line and exit code 2."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.tables:
        try:
            doc = run_table(path, args)
        except FusionNasError as exc:
            print(f"Error: {one_line(exc)}", file=sys.stderr)
            raise SystemExit(2) from None
        suffix = f"-{args.suffix}" if args.suffix else ""
        out = args.out / f"supernet_tau_{Path(path).stem}{suffix}.json"
        out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(markdown(doc))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
