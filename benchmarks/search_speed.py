"""Search throughput on MNIST-1D: seconds per trial and trials per minute for 1 vs K workers.

Writes ``benchmarks/results/search_speed.json`` (and prints a table). Every run uses a fresh
SQLite store in a temporary directory, the default proxy settings unless told otherwise, and
the same seed, so the runs sample the same architectures.

    python benchmarks/search_speed.py --trials 8 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from fusion_nas.model.space import load_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig


def measure(trials: int, workers: int, epochs: int, strategy: str) -> dict:
    """One search; returns wall time, trials per minute and per-trial training seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        config = SearchConfig(
            name=f"bench-w{workers}",
            space=load_space("mnist1d"),
            dataset="mnist1d",
            strategy=strategy,
            trials=trials,
            proxy=ProxyConfig(epochs=epochs),
            workers=workers,
        )
        start = time.perf_counter()
        df = run_search(config, store)
        wall = time.perf_counter() - start
    ok = df[df.status == "complete"]
    trained = ok[ok.duplicate_of.isna()]
    return {
        "workers": workers,
        "trials": trials,
        "epochs": epochs,
        "wall_s": round(wall, 1),
        "trials_per_min": round(60 * trials / wall, 2),
        "train_s_mean": round(float(trained.train_seconds.mean()), 2),
        "train_s_min": round(float(trained.train_seconds.min()), 2),
        "train_s_max": round(float(trained.train_seconds.max()), 2),
        "best_val_acc": float(ok.val_acc.max()),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    """Parse arguments, run one search per worker count, write the JSON file; return its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=ProxyConfig().epochs)
    parser.add_argument("--strategy", default="optuna:random")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "search_speed.json"
    )
    args = parser.parse_args(argv)
    rows = [measure(args.trials, w, args.epochs, args.strategy) for w in args.workers]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    for r in rows:
        print(
            f"workers={r['workers']}: {r['trials']} trials in {r['wall_s']} s = "
            f"{r['trials_per_min']} trials/min; training {r['train_s_mean']} s/trial "
            f"(min {r['train_s_min']}, max {r['train_s_max']}); best {r['best_val_acc']:.4f}"
        )
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
