"""Search efficiency on a tabular benchmark: hypervolume fraction of the true front per strategy.

Every strategy searches the table's space for ``--evals`` evaluations, once per seed, through
the project's real search path (``fusion_nas.search.session``'s ``prepare`` and ``run_trials``,
the ask/tell loop of ``run_search``, with ``evaluator="table:PATH"``: trials are looked up, not
trained) on a study in Optuna's in-memory storage: an SQLite store would spend most of the
time writing trial attributes.
After each evaluation the hypervolume of the front found so far is divided by the hypervolume of
the true front (every network of the table, its accuracy the mean over the table's seeds). Both
use :func:`fusion_nas.pareto.hypervolume` in (accuracy, log10 MACs) space with ONE reference
point per table: accuracy 0 and 1.1 x the table's largest MACs. Two ways to count the cost:

- per trial: an evaluation is a trial of the search; a network proposed again counts (it is
  recorded as ``same network as #N``);
- per distinct network: only networks not seen before count, because a repeat is read from the
  store, not trained. A strategy that repeats itself (NSGA-II once its population converges) runs
  more trials, up to ``MAX_TRIALS_FACTOR`` x ``--evals``, until it has ``--evals`` distinct ones.

NNI strategies optimise one number; they get ``--macs-weight`` (λ): the scalar is
val_acc - λ * log10(MACs) (see ``fusion_nas.search.strategies.nni_strategies``). NNI's TPE strategy
waits one second per trial in NNI's own loop; the library's ``TpeStrategy`` drops that pause.

Writes ``benchmarks/results/search_efficiency_<table>.json`` (per strategy: mean, std, min and
max fraction after 25, 50 and 100 evaluations; the mean number of evaluations to reach 0.95 of
the true hypervolume and how many seeds reached it; the mean curve) and a plotly HTML of the
fraction against evaluations (mean line, min-max band) beside it.

    python benchmarks/search_efficiency.py                       # mnist1d table, 20 seeds
    python benchmarks/search_efficiency.py --table benchmarks/tables/digits.csv
    python benchmarks/search_efficiency.py --seeds 2 --evals 10 --strategies optuna:nsga2 \\
        optuna:random --out /tmp/eff                             # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from _common import open_memory_search

from fusion_nas import settings
from fusion_nas.errors import FusionNasError, StrategyError, allowed, one_line
from fusion_nas.evaluation.table import Table, load_table
from fusion_nas.pareto import front_indices, hypervolume
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import prepare, run_trials
from fusion_nas.search.strategies import STRATEGIES
from fusion_nas.search.strategies.base import Proposer
from fusion_nas.store.records import TrialRecord, TrialStatus
from fusion_nas.store.store import quiet_optuna

HERE = Path(__file__).resolve().parent
DEFAULT_TABLE = HERE / "tables" / "mnist1d-table.csv"
STRATEGY_NAMES = (
    "optuna:nsga2",
    "optuna:tpe",
    "optuna:random",
    "nni:evolution",
    "nni:tpe",
    "nni:random",
)
REF_FACTOR = 1.1  # reference MACs = 1.1 x the table's largest MACs
TARGET = 0.95  # fraction of the true hypervolume a search should reach
# λ of the NNI scalar: the best of --sweep 0 0.05 0.15 0.5 for nni:evolution and nni:tpe after
# 50 evaluations (mean over seeds 0-4 of the mnist1d table; the sweep is stored with the results).
MACS_WEIGHT = 0.5
MACS_WEIGHT_CHOICE = (
    "best of --sweep 0 0.05 0.15 0.5 for nni:evolution and nni:tpe after 50 evaluations, "
    "mean over seeds 0-4 of the mnist1d table (see macs_weight_sweep of its results)"
)
SWEEP_SEEDS = 5
MAX_TRIALS_FACTOR = 5  # trials allowed per search to find --evals distinct networks


def true_front(table: Table, seed: int | None = None) -> dict[str, Any]:
    """The true front (mean over the table's seeds, or ``seed``): reference, hypervolume, points."""
    acc, macs = table.front(seed)
    if not acc:
        raise FusionNasError(f"table {str(table.path)!r} has no complete row")
    ref = REF_FACTOR * max(macs)
    hv = hypervolume(acc, macs, ref)
    front = [(macs[i], acc[i]) for i in front_indices(acc, macs)]
    return {
        "networks": len(acc),
        "ref_macs": ref,
        "hypervolume": hv,
        "front": [{"macs": int(m), "val_acc": round(a, 5)} for m, a in front],
    }


def search(config: SearchConfig, distinct: int = 0) -> list[TrialRecord]:
    """One search of ``config`` through the search loop, on an in-memory study; its trials.

    With ``distinct`` > 0 a proposing strategy goes on past ``config.trials`` until it has seen
    ``distinct`` different networks or run ``MAX_TRIALS_FACTOR`` x ``distinct`` trials. The first
    ``config.trials`` trials are the same either way: the loop never looks at the total.
    """
    strategy = prepare(config)  # checks the strategy and the table, as run_search does
    study = open_memory_search(config, strategy)
    run_trials(config, study, strategy, config.trials)
    cap = MAX_TRIALS_FACTOR * distinct
    while isinstance(strategy, Proposer):
        trials = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
        seen = len({t.arch_id for t in trials})
        if seen >= distinct or len(trials) >= cap:
            break
        run_trials(config, study, strategy, min(distinct - seen, cap - len(trials)))
    return [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]


def hv_curve(
    trials: list[TrialRecord], ref: float, true_hv: float, evals: int, distinct: bool = False
) -> list[float]:
    """Hypervolume fraction of the front after each of the first ``evals`` trials.

    With ``distinct`` a repeated network is skipped: the curve is over distinct networks.
    """
    acc: list[float] = []
    macs: list[float] = []
    out: list[float] = []
    seen: set[str] = set()
    for t in sorted(trials, key=lambda t: t.number):
        if distinct:
            if t.arch_id in seen:
                continue
            seen.add(t.arch_id)
        if len(out) == evals:
            break
        if t.status == TrialStatus.COMPLETE and t.val_acc is not None and t.macs is not None:
            acc.append(float(t.val_acc))
            macs.append(float(t.macs))
        out.append(hypervolume(acc, macs, ref) / true_hv if acc else 0.0)
    return out


def summarise(curves: list[list[float]], checkpoints: list[int]) -> dict[str, Any]:
    """Mean, std, min and max at each checkpoint; evaluations to reach :data:`TARGET`."""
    out: dict[str, Any] = {"at": {}}
    for k in checkpoints:
        vals = [c[k - 1] for c in curves if len(c) >= k]
        if not vals:
            continue
        out["at"][str(k)] = {
            "mean": round(statistics.fmean(vals), 4),
            "std": round(statistics.pstdev(vals), 4),
            "min": round(min(vals), 4),
            "max": round(max(vals), 4),
            "seeds": len(vals),
        }
    reach = [next((i + 1 for i, f in enumerate(c) if f >= TARGET), None) for c in curves]
    hit = [r for r in reach if r is not None]
    out["evals_to_target"] = {
        "target": TARGET,
        "mean": round(statistics.fmean(hit), 1) if hit else None,
        "reached": len(hit),
        "seeds": len(curves),
        "per_seed": reach,
    }
    n = max(len(c) for c in curves)
    out["mean_curve"] = [
        round(statistics.fmean([c[i] for c in curves if len(c) > i]), 4) for i in range(n)
    ]
    out["min_curve"] = [round(min(c[i] for c in curves if len(c) > i), 4) for i in range(n)]
    out["max_curve"] = [round(max(c[i] for c in curves if len(c) > i), 4) for i in range(n)]
    return out


def run_strategy(
    strategy: str,
    table: Table,
    seeds: list[int],
    evals: int,
    options: dict[str, Any],
    table_seed: int | None = None,
    distinct: bool = False,
) -> tuple[list[list[TrialRecord]], float, list[int]]:
    """Every seed's search with ``strategy``; returns their trials, wall seconds, uniques.

    ``uniques`` counts the distinct networks among each search's first ``evals`` trials; with
    ``distinct`` the searches go on until ``evals`` distinct networks (see :func:`search`).
    """
    runs, unique = [], []
    start = time.perf_counter()
    for seed in seeds:
        config = SearchConfig(
            name=f"{strategy}-seed{seed}",
            space=table.space,
            dataset=table.dataset,
            strategy=strategy,
            trials=evals,
            proxy=table.proxy,
            seed=seed,
            evaluator=f"table:{table.path}" + (f"@{table_seed}" if table_seed is not None else ""),
            strategy_options=options,
        )
        trials = search(config, evals if distinct else 0)
        runs.append(trials)
        unique.append(len({t.arch_id for t in sorted(trials, key=lambda t: t.number)[:evals]}))
    return runs, time.perf_counter() - start, unique


def efficiency(args: argparse.Namespace) -> dict[str, Any]:
    """Run every strategy on the table; return the JSON document."""
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown:
        raise StrategyError(f"unknown strategy {unknown[0]!r}; allowed: {allowed(STRATEGIES)}")
    if args.seeds < 1 or args.evals < 1:
        raise FusionNasError(
            f"--seeds and --evals must be at least 1, got {args.seeds}, {args.evals}"
        )
    table = load_table(args.table.resolve())
    # complete (every network, every seed averaged), before any search
    table.check(table.space, table.dataset, table.proxy, args.table_seed)
    truth = true_front(table, args.table_seed)
    checkpoints = sorted({k for k in args.checkpoints if k <= args.evals} | {args.evals})
    seeds = list(range(args.seeds))
    options = {"macs_weight": args.macs_weight}
    doc: dict[str, Any] = {
        "table": str(table.path),
        "space": table.space.name,
        "dataset": table.dataset,
        "table_seeds": table.seeds if args.table_seed is None else [args.table_seed],
        "accuracy": "mean over the table's seeds of the validation accuracy"
        if args.table_seed is None
        else f"validation accuracy of the table's seed {args.table_seed}",
        "true_front": truth,
        "reference": f"accuracy 0, MACs {REF_FACTOR} x the table's largest MACs "
        f"({truth['ref_macs']:,.0f}); hypervolume in (accuracy, log10 MACs)",
        "evaluation": "one trial of the search (a network proposed again counts); "
        "per_distinct_network: one network not seen before in the search",
        "evals": args.evals,
        "seeds": seeds,
        "checkpoints": checkpoints,
        "nni_scalar": f"val_acc - {args.macs_weight} * log10(MACs) (--macs-weight)",
        "macs_weight": args.macs_weight,
        "macs_weight_choice": MACS_WEIGHT_CHOICE if args.macs_weight == MACS_WEIGHT else "given",
        "strategies": {},
    }
    quiet_optuna()
    with tempfile.TemporaryDirectory() as tmp:
        home = os.environ.get(settings.HOME_ENV)
        os.environ[settings.HOME_ENV] = tmp  # NNI's logs and experiment files stay in tmp
        try:
            for strategy in args.strategies:
                runs, wall, unique = run_strategy(
                    strategy, table, seeds, args.evals, options, args.table_seed, distinct=True
                )
                ref, true_hv = truth["ref_macs"], truth["hypervolume"]
                curves = [hv_curve(t, ref, true_hv, args.evals) for t in runs]
                summary = summarise(curves, checkpoints)
                summary["wall_s"] = round(wall, 1)
                summary["unique_networks_mean"] = round(statistics.fmean(unique), 1)
                by_distinct = summarise(
                    [hv_curve(t, ref, true_hv, args.evals, distinct=True) for t in runs],
                    checkpoints,
                )
                by_distinct["trials_mean"] = round(statistics.fmean(len(t) for t in runs), 1)
                summary["per_distinct_network"] = by_distinct
                doc["strategies"][strategy] = summary
                at = summary["at"]
                reach = summary["evals_to_target"]
                print(
                    f"{strategy:>14}: "
                    + "  ".join(f"@{k} {v['mean']:.3f}±{v['std']:.3f}" for k, v in at.items())
                    + f"  to {TARGET}: {reach['mean']} ({reach['reached']}/{reach['seeds']})"
                    + "  distinct: "
                    + "  ".join(f"@{k} {v['mean']:.3f}" for k, v in by_distinct["at"].items())
                    + f"  to {TARGET}: {by_distinct['evals_to_target']['mean']}"
                    + f" ({by_distinct['evals_to_target']['reached']}/{len(runs)})"
                    + f"  {wall:.1f} s",
                    flush=True,
                )
            if args.sweep:
                doc["macs_weight_sweep"] = sweep(args, table, truth, args.sweep)
        finally:
            if home is None:
                os.environ.pop(settings.HOME_ENV, None)
            else:
                os.environ[settings.HOME_ENV] = home
    return doc


def sweep(
    args: argparse.Namespace, table: Table, truth: dict[str, Any], weights: list[float]
) -> dict[str, Any]:
    """Mean fraction at the checkpoints of the NNI strategies for each λ (seeds 0-4)."""
    out: dict[str, Any] = {"seeds": list(range(SWEEP_SEEDS)), "results": []}
    for strategy in ("nni:evolution", "nni:tpe"):
        for weight in weights:
            runs, _, _ = run_strategy(
                strategy,
                table,
                list(range(SWEEP_SEEDS)),
                args.evals,
                {"macs_weight": weight},
                args.table_seed,
            )
            curves = [
                hv_curve(t, truth["ref_macs"], truth["hypervolume"], args.evals) for t in runs
            ]
            checkpoints = sorted({k for k in args.checkpoints if k <= args.evals} | {args.evals})
            at = summarise(curves, checkpoints)["at"]
            means = {k: v["mean"] for k, v in at.items()}
            out["results"].append({"strategy": strategy, "macs_weight": weight, "mean": means})
            print(f"  sweep {strategy} λ={weight}: {means}", flush=True)
    return out


def figure(doc: dict[str, Any]) -> go.Figure:
    """Hypervolume fraction against evaluations: mean line and min-max band per strategy."""
    fig = go.Figure()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for i, (name, s) in enumerate(doc["strategies"].items()):
        color = palette[i % len(palette)]
        x = list(range(1, len(s["mean_curve"]) + 1))
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=s["max_curve"] + s["min_curve"][::-1],
                fill="toself",
                fillcolor=color,
                opacity=0.15,
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=name,
            )
        )
        fig.add_trace(
            go.Scatter(x=x, y=s["mean_curve"], name=name, line={"color": color}, legendgroup=name)
        )
        distinct = s.get("per_distinct_network", {}).get("mean_curve", [])
        if distinct:
            fig.add_trace(
                go.Scatter(
                    x=list(range(1, len(distinct) + 1)),
                    y=distinct,
                    name=f"{name} (per distinct network)",
                    line={"color": color, "dash": "dash"},
                    legendgroup=name,
                )
            )
    fig.add_hline(y=TARGET, line={"dash": "dot", "color": "grey"})
    fig.update_layout(
        title=f"Search efficiency on {doc['space']} ({len(doc['seeds'])} seeds; "
        "mean, band: min to max; dashed: counting distinct networks only)",
        xaxis_title="evaluations",
        yaxis_title="hypervolume / true front's hypervolume",
        yaxis_range=[0, 1.02],
        template="plotly_white",
    )
    return fig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="table CSV (tabular.py)")
    p.add_argument(
        "--table-seed",
        type=int,
        default=None,
        help="use this seed's rows only (default: the mean over the table's seeds)",
    )
    p.add_argument("--strategies", nargs="+", default=list(STRATEGY_NAMES))
    p.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 per strategy")
    p.add_argument("--evals", type=int, default=100, help="evaluations per search")
    p.add_argument("--checkpoints", type=int, nargs="+", default=[25, 50, 100])
    p.add_argument(
        "--macs-weight",
        type=float,
        default=MACS_WEIGHT,
        help="λ of the NNI strategies' scalar val_acc - λ*log10(MACs)",
    )
    p.add_argument(
        "--sweep",
        type=float,
        nargs="*",
        default=[],
        help=f"also run the NNI strategies for each of these λ on seeds 0-{SWEEP_SEEDS - 1}",
    )
    p.add_argument("--out", type=Path, default=HERE / "results", help="output folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input ends with one line and exit code 2."""
    args = parse_args(argv)
    try:
        doc = efficiency(args)
    except FusionNasError as exc:
        print(f"Error: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"search_efficiency_{Path(doc['table']).stem}"
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    figure(doc).write_html(args.out / f"{stem}.html", include_plotlyjs="cdn")
    print(f"wrote {args.out / stem}.json and .html")


if __name__ == "__main__":
    main()
