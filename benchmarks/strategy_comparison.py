"""Strategies side by side on one space: best validation accuracy, front size, hypervolume.

Runs one search per strategy (same space, dataset, trial count, proxy and seed) into one
fresh SQLite store and writes ``benchmarks/results/strategy_comparison.json`` with
``Store.summary()`` figures (one shared hypervolume reference) plus each search's wall time.

    python benchmarks/strategy_comparison.py --space mnist1d --trials 20 \\
        --strategies optuna:nsga2 nni:evolution
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fusion_nas.search import SearchConfig, run_search
from fusion_nas.space import load_space
from fusion_nas.store import Store
from fusion_nas.train import ProxyConfig


def main() -> None:
    """Run every strategy, then write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="mnist1d")
    parser.add_argument("--dataset", default=None, help="default: the space's name")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=ProxyConfig().epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", nargs="+", default=["optuna:nsga2", "nni:evolution"])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "strategy_comparison.json"
    )
    args = parser.parse_args()
    space = load_space(args.space)
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/compare.db")
        for strategy in args.strategies:
            config = SearchConfig(
                name=strategy,
                space=space,
                dataset=args.dataset or space.name,
                strategy=strategy,
                trials=args.trials,
                proxy=ProxyConfig(epochs=args.epochs),
                seed=args.seed,
            )
            start = time.perf_counter()
            run_search(config, store)
            walls[strategy] = round(time.perf_counter() - start, 1)
        summary = store.summary()
    rows = []
    for row in summary.to_dict(orient="records"):
        rows.append(
            {
                "strategy": row["strategy"],
                "trials": row["done"],
                "failed": row["failed"],
                "best_val_acc": row["best_val_acc"],
                "front_size": row["front_size"],
                "hypervolume": round(row["hypervolume"], 4),
                "wall_s": walls[row["name"]],
            }
        )
    record = {"space": args.space, "epochs": args.epochs, "seed": args.seed, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for r in rows:
        print(
            f"{r['strategy']:>14}: best {r['best_val_acc']:.4f}, front {r['front_size']}, "
            f"hypervolume {r['hypervolume']}, {r['wall_s']} s"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
