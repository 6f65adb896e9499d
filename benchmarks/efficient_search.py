"""Efficient search: compute to reach 0.95 of the true front's hypervolume, per lever.

The levers, each run through the project's real search path on a tabular benchmark (trials are
looked up, not trained, so many seeds take minutes) and compared with full-training NSGA-II in
the same run:

- ``nsga2-full``: every network trains the whole proxy (the reference);
- ``sh-random`` / ``sh-tpe`` / ``sh-nsga2``: ``--fidelity sh`` (rungs 1, 3, 10 epochs, eta 3)
  under each proposing strategy;
- ``prescreen-nsga2`` / ``prescreen-sh``: ``--prescreen K:M`` (zero-cost proxy, scored live on
  this machine) queues M networks first; NSGA-II (full) or TPE with successive halving goes on;
- ``supernet``: a weight-sharing supernet trained once here (``--supernet-epochs``), NSGA-II
  over its inherited accuracies (``--supernet-evals`` scored sub-networks), then its top
  ``--supernet-picks`` (promotion order) trained from scratch, i.e. looked up in the table.

Compute is counted in **proxy-training seconds** (one thread, as the table measured them; a
network stopped after 3 of 10 epochs costs 3/10 of its seconds; a repeated network costs
nothing, it is read from the store) plus, where a lever has them, the seconds spent scoring
(zero-cost) or training the supernet, measured on this machine in this run. ``epochs`` is the
same in trained network-epochs (zero-cost and supernet seconds converted at the table's mean
seconds per epoch). The hypervolume uses the reference of ``search_efficiency.py`` (accuracy 0,
1.1 x the table's largest MACs; the true front is the mean over the table's seeds).

``--live`` trains every network in this process instead (one seed is minutes, not seconds):
compute is then the wall seconds since the search began, and the truth the table's seed-0
rows, which a live search with seed 0 reproduces.

Per lever: seconds to reach 0.95 (mean over the seeds that reach it, and how many do), the
ratio to ``nsga2-full``'s, and the fraction reached at 1/5 of ``nsga2-full``'s seconds.
Writes ``benchmarks/results/efficient_search_<table>.json`` and a plotly HTML (fraction against
seconds, mean per lever).

    python benchmarks/efficient_search.py                          # mnist1d table, 10 seeds
    python benchmarks/efficient_search.py --table benchmarks/tables/digits.csv
    python benchmarks/efficient_search.py --seeds 1 --trials 20 --prescreen 20:5 --out /tmp/e
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch

from fusion_nas.errors import FusionNasError, one_line
from fusion_nas.evaluation.table import Table, load_table
from fusion_nas.pareto import hypervolume
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import prepare, run_trials
from fusion_nas.store.records import TrialRecord, TrialStatus
from fusion_nas.store.store import quiet_optuna

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import open_memory_search  # noqa: E402
from search_efficiency import TARGET, true_front  # noqa: E402

DEFAULT_TABLE = HERE / "tables" / "mnist1d-table.csv"
LEVERS = {
    "nsga2-full": {"strategy": "optuna:nsga2"},
    "sh-random": {"strategy": "optuna:random", "fidelity": "sh"},
    "sh-tpe": {"strategy": "optuna:tpe", "fidelity": "sh"},
    "sh-nsga2": {"strategy": "optuna:nsga2", "fidelity": "sh"},
    "prescreen-nsga2": {"strategy": "optuna:nsga2", "prescreen": True},
    "prescreen-sh": {"strategy": "optuna:tpe", "fidelity": "sh", "prescreen": True},
    "supernet": {"strategy": "supernet"},
}
FRACTION_OF_REFERENCE = 5  # the goal: 0.95 in at most 1/5 of full-training NSGA-II's compute


def seconds_per_epoch(table: Table) -> float:
    """Mean proxy seconds per network-epoch over the table's complete rows."""
    rows = [r for by in table.rows.values() for r in by.values() if r.complete]
    return statistics.fmean(r.seconds for r in rows) / table.proxy.epochs


def run_lever(
    lever: str,
    table: Table,
    seed: int,
    trials: int,
    prescreen: str,
    proxy: str,
    live: bool = False,
    fidelity: str = "sh",
) -> tuple[list[TrialRecord], float, dt.datetime]:
    """One search of ``lever``; its trials (by number), the seconds spent before training and
    when training began. ``live``: every network is trained here (one process) instead of
    looked up."""
    spec = LEVERS[lever]
    config = SearchConfig(
        name=f"{lever}-{seed}",
        space=table.space,
        dataset=table.dataset,
        strategy=spec["strategy"],
        trials=trials,
        proxy=table.proxy,
        seed=seed,
        evaluator="train" if live else f"table:{table.path}",
        fidelity=fidelity if spec.get("fidelity") else "full",
        prescreen=prescreen if spec.get("prescreen") else None,
        prescreen_proxy=proxy,
    )
    strategy = prepare(config)
    start = time.perf_counter()
    study = open_memory_search(config, strategy)  # screens and queues the picks, if any
    overhead = time.perf_counter() - start if config.screening is not None else 0.0
    began = dt.datetime.now()
    run_trials(config, study, strategy, trials)
    trials_ = sorted(map(TrialRecord.from_trial, study.get_trials()), key=lambda t: t.number)
    return trials_, overhead, began


def run_supernet(
    table: Table, seed: int, epochs: int, evals: int, picks: int, ref: float, true_hv: float
) -> list[tuple[float, float]]:
    """The supernet lever on the table: train once, search inherited accuracies, then train
    the top ``picks`` from scratch (looked up); (seconds, fraction) after each pick."""
    from dataclasses import replace

    from fusion_nas.pareto import promotion_order
    from fusion_nas.search.supernet import search_supernet, train_supernet

    trained = train_supernet(
        table.space, table.dataset, replace(table.proxy, epochs=epochs), seed=seed
    )
    found = search_supernet(trained, evals, seed=seed)
    cands = found.candidates
    order = promotion_order([c.inherited_acc for c in cands], [float(c.macs) for c in cands])
    spent = trained.seconds + found.seconds
    acc, macs, out = [], [], [(spent, 0.0)]
    for i in order[:picks]:
        row = table.outcome(cands[i].arch)  # trained from scratch: the table's full run
        spent += row.seconds
        if row.status == TrialStatus.COMPLETE and row.val_acc is not None:
            acc.append(float(row.val_acc))
            macs.append(float(cands[i].macs))
        out.append((spent, hypervolume(acc, macs, ref) / true_hv if acc else 0.0))
    return out


def cost_curve(
    trials: list[TrialRecord], overhead: float, ref: float, true_hv: float
) -> list[tuple[float, float]]:
    """(cumulative seconds, hypervolume fraction) after each trial, starting at ``overhead``."""
    spent, acc, macs, out = overhead, [], [], [(overhead, 0.0)]
    for t in trials:
        if t.duplicate_of is None and t.train_seconds is not None:
            spent += float(t.train_seconds)
        if t.status == TrialStatus.COMPLETE and t.val_acc is not None and t.macs is not None:
            acc.append(float(t.val_acc))
            macs.append(float(t.macs))
        out.append((spent, hypervolume(acc, macs, ref) / true_hv if acc else 0.0))
    return out


def wall_curve(
    trials: list[TrialRecord], overhead: float, began: dt.datetime, ref: float, true_hv: float
) -> list[tuple[float, float]]:
    """(wall seconds since the search began, plus ``overhead``, fraction) after each trial."""
    acc, macs, out = [], [], [(overhead, 0.0)]
    for t in sorted(trials, key=lambda t: t.datetime_complete or began):
        if t.status == TrialStatus.COMPLETE and t.val_acc is not None and t.macs is not None:
            acc.append(float(t.val_acc))
            macs.append(float(t.macs))
        wall = ((t.datetime_complete or began) - began).total_seconds() + overhead
        out.append((wall, hypervolume(acc, macs, ref) / true_hv if acc else 0.0))
    return out


def reach(curve: list[tuple[float, float]]) -> float | None:
    """Seconds at which the curve first reaches :data:`TARGET`."""
    return next((s for s, f in curve if f >= TARGET), None)


def at(curve: list[tuple[float, float]], budget: float) -> float:
    """Fraction reached within ``budget`` seconds."""
    return max((f for s, f in curve if s <= budget), default=0.0)


def summarise(curves: list[list[tuple[float, float]]], spe: float) -> dict[str, Any]:
    """Seconds and epochs to the target (mean over seeds that reach it), per-seed values."""
    hits = [reach(c) for c in curves]
    ok = [h for h in hits if h is not None]
    return {
        "seconds_to_target": round(statistics.fmean(ok), 1) if ok else None,
        "epochs_to_target": round(statistics.fmean(ok) / spe, 1) if ok else None,
        "reached": len(ok),
        "seeds": len(curves),
        "per_seed_seconds": [round(h, 1) if h is not None else None for h in hits],
        "final_fraction": round(statistics.fmean(c[-1][1] for c in curves), 4),
        "final_seconds": round(statistics.fmean(c[-1][0] for c in curves), 1),
    }


def efficient(args: argparse.Namespace) -> dict[str, Any]:
    """Run every lever on the table; the JSON document."""
    unknown = [lv for lv in args.levers if lv not in LEVERS]
    if unknown:
        raise FusionNasError(f"unknown lever {unknown[0]!r}; allowed: {', '.join(LEVERS)}")
    table = load_table(args.table.resolve())
    table.check(table.space, table.dataset, table.proxy, None)
    # Live runs train with the search's seed: their truth is that seed's rows of the table.
    truth = true_front(table, 0 if args.live else None)
    ref, true_hv = truth["ref_macs"], truth["hypervolume"]
    spe = seconds_per_epoch(table)
    doc: dict[str, Any] = {
        "table": str(table.path),
        "space": table.space.name,
        "networks": truth["networks"],
        "target": TARGET,
        "seconds_per_epoch": round(spe, 4),
        "threads": 1,
        "compute": "proxy-training seconds as the table measured them (one thread), scaled "
        "by the epochs a stopped network trained; repeats cost nothing; plus zero-cost "
        "scoring / supernet training seconds measured in this run",
        "seeds": args.seeds,
        "trials": args.trials,
        "live": args.live,
        "prescreen": f"{args.prescreen} ({args.zero_cost})",
        "fidelity": args.fidelity,
        "supernet": f"{args.supernet_epochs} epochs, {args.supernet_evals} sub-networks "
        f"scored, top {args.supernet_picks} trained",
        "levers": {},
    }
    all_curves: dict[str, list[list[tuple[float, float]]]] = {}
    quiet_optuna()
    for lever in args.levers:
        start = time.perf_counter()
        curves = []
        for seed in range(args.seeds):
            if lever == "supernet":
                if args.live:
                    raise FusionNasError("the supernet lever runs on a table, not --live")
                curves.append(
                    run_supernet(
                        table, seed, args.supernet_epochs, args.supernet_evals,
                        args.supernet_picks, ref, true_hv,
                    )
                )  # fmt: skip
                continue
            trials, overhead, began = run_lever(
                lever, table, seed, args.trials, args.prescreen, args.zero_cost, args.live,
                args.fidelity,
            )  # fmt: skip
            if args.live:
                curves.append(wall_curve(trials, overhead, began, ref, true_hv))
            else:
                curves.append(cost_curve(trials, overhead, ref, true_hv))
        all_curves[lever] = curves
        doc["levers"][lever] = summarise(curves, spe) | {
            "wall_s": round(time.perf_counter() - start, 1),
            **{k: v for k, v in LEVERS[lever].items() if k != "prescreen"},
        }
        s = doc["levers"][lever]
        print(
            f"{lever:>16}: to {TARGET}: {s['seconds_to_target']} s ({s['reached']}/{s['seeds']})"
            f"  final {s['final_fraction']:.3f} at {s['final_seconds']} s",
            flush=True,
        )
    base = doc["levers"].get("nsga2-full", {}).get("seconds_to_target")
    if base:
        budget = base / FRACTION_OF_REFERENCE
        doc["budget_s"] = round(budget, 1)
        for lever, curves in all_curves.items():
            s = doc["levers"][lever]
            s["fraction_at_budget"] = round(statistics.fmean(at(c, budget) for c in curves), 4)
            if s["seconds_to_target"]:
                s["ratio_to_nsga2_full"] = round(s["seconds_to_target"] / base, 3)
            s["goal_met"] = bool(
                s["reached"] == s["seeds"] and all(h <= budget for h in s["per_seed_seconds"])
            )
    doc["mean_curves"] = {
        lever: mean_curve(curves, args.grid) for lever, curves in all_curves.items()
    }
    return doc


def mean_curve(curves: list[list[tuple[float, float]]], points: int) -> list[list[float]]:
    """The mean fraction over seeds on a grid of ``points`` seconds values."""
    end = max(c[-1][0] for c in curves)
    grid = [end * i / points for i in range(points + 1)]
    return [[round(g, 1), round(statistics.fmean(at(c, g) for c in curves), 4)] for g in grid]


def markdown(doc: dict[str, Any]) -> str:
    """The lever table of ``benchmarks/README.md`` for one run."""
    base = doc["levers"].get("nsga2-full", {}).get("seconds_to_target")
    unit = "wall s" if doc["live"] else "s"
    lines = [
        f"| lever | {unit} to {TARGET} (seeds) | epochs to {TARGET} | x nsga2-full | "
        f"fraction at 1/5 of nsga2-full ({doc.get('budget_s', '-')} {unit}) | "
        f"final fraction (at {unit}) |",
        "|---|---|---|---|---|---|",
    ]
    for lever, s in doc["levers"].items():
        secs = s["seconds_to_target"]
        lines.append(
            f"| {lever} | {secs if secs is not None else '-'} ({s['reached']}/{s['seeds']}) | "
            f"{s['epochs_to_target'] if s['epochs_to_target'] is not None else '-'} | "
            f"{s.get('ratio_to_nsga2_full', '-') if base else '-'} | "
            f"{s.get('fraction_at_budget', '-')} | "
            f"{s['final_fraction']:.3f} ({s['final_seconds']}) |"
        )
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, key: str, table: str) -> bool:
    """Replace the text between ``<!-- KEY -->`` and ``<!-- /KEY -->`` in ``readme``."""
    if not readme.exists():
        return False
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{table}{end}{tail}", encoding="utf-8")
    return True


def figure(doc: dict[str, Any]) -> go.Figure:
    """Mean hypervolume fraction against compute seconds, one line per lever."""
    fig = go.Figure()
    for lever, pts in doc["mean_curves"].items():
        fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=lever)
    fig.add_hline(y=TARGET, line_dash="dot")
    if "budget_s" in doc:
        fig.add_vline(x=doc["budget_s"], line_dash="dash", annotation_text="1/5 of nsga2-full")
    fig.update_layout(
        title=f"{doc['space']}: hypervolume fraction against compute (mean of {doc['seeds']})",
        xaxis_title="proxy-training seconds (+ scoring / supernet seconds)",
        yaxis_title="hypervolume / true front's hypervolume",
        template="plotly_white",
    )
    return fig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="table CSV (tabular.py)")
    p.add_argument("--levers", nargs="+", default=list(LEVERS), help=", ".join(LEVERS))
    p.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 per lever")
    p.add_argument("--trials", type=int, default=150, help="trials per search")
    p.add_argument("--prescreen", default="672:30", help="K:M of the prescreen levers")
    p.add_argument("--zero-cost", default="naswot", help="zero-cost proxy of --prescreen")
    p.add_argument("--fidelity", default="sh", help="--fidelity of the sh levers")
    p.add_argument(
        "--live",
        action="store_true",
        help="train every network here (wall seconds, truth: the table's seed 0) instead of "
        "looking it up",
    )
    p.add_argument("--supernet-epochs", type=int, default=10, help="supernet training epochs")
    p.add_argument("--supernet-evals", type=int, default=100, help="sub-networks scored")
    p.add_argument("--supernet-picks", type=int, default=10, help="front members trained")
    p.add_argument("--grid", type=int, default=60, help="points of the mean curves")
    p.add_argument("--out", type=Path, default=HERE / "results", help="output folder")
    p.add_argument(
        "--readme",
        type=Path,
        default=HERE / "README.md",
        help="markdown file whose <!-- efficient_search_TABLE --> section gets the table",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input ends with one line and exit code 2."""
    args = parse_args(argv)
    # One thread, as the table's runs were timed: the scoring and supernet seconds measured
    # here compare with them (tiny networks are also faster on one thread than on two).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        doc = efficient(args)
    except FusionNasError as exc:
        print(f"Error: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        torch.set_num_threads(threads)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"efficient_search_{Path(doc['table']).stem}" + ("_live" if doc["live"] else "")
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    figure(doc).write_html(args.out / f"{stem}.html", include_plotlyjs="cdn")
    table = markdown(doc)
    (args.out / f"{stem}.md").write_text(table, encoding="utf-8")
    print(table)
    if args.readme is not None and update_readme(args.readme, stem, table):
        print(f"updated the {stem} table of {args.readme}")
    print(f"wrote {args.out / stem}.json, .md and .html")


if __name__ == "__main__":
    main()
