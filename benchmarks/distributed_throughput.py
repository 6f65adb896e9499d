"""Throughput of a search shared by K worker processes: trials per minute and parallel efficiency.

For each store (SQLite by default; ``--postgres URL`` adds a PostgreSQL server) and each K of
``--processes``, K ``fusion-nas search`` processes are started together on one new search of
``--trials`` trials. Every process trains with the same number of threads (``--threads``,
default 1), so throughput(K) against throughput(1) measures the sharing, not the threading.

Throughput is read from the store, not from process wall time, so that starting Python and
importing torch do not count: trials per minute = finished trials / (last trial's end - first
trial's start). Parallel efficiency = throughput(K) / (K x throughput(1)). On a machine with C
cores, K processes of one thread each can at best reach min(1, C / K).

Writes ``benchmarks/results/distributed_throughput.json`` (per store and K: trials, seconds,
trials per minute, efficiency, the exit codes and each process's summary line).

    python benchmarks/distributed_throughput.py                                 # SQLite, K = 1, 2
    python benchmarks/distributed_throughput.py --postgres postgresql://u@host/db --pg-processes 1 3
    python benchmarks/distributed_throughput.py --trials 4 --epochs 1 --out /tmp/tp   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch

from fusion_nas.errors import FusionNasError, one_line
from fusion_nas.store.records import TrialStatus
from fusion_nas.store.store import Store, redact_url

HERE = Path(__file__).resolve().parent
DONE = re.compile(r"Done in [\d.]+ s: (.*)")


def run_workers(url: str, k: int, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """K processes on one new search; their exit codes, summaries and the store's timing."""
    name = f"throughput-{k}-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    env.update(
        FUSION_NAS_HOME=str(home),
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        COLUMNS="200",
    )
    cmd = [
        sys.executable, "-m", "fusion_nas", "search", args.space, "--dataset", args.dataset,
        "--trials", str(args.trials), "--epochs", str(args.epochs), "--name", name,
        "--store", url, "--strategy", args.strategy,
    ]  # fmt: skip
    if args.train_subset:
        cmd += ["--train-subset", str(args.train_subset)]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(k)
    ]
    outs = [p.communicate(timeout=args.timeout)[0] for p in procs]
    codes = [p.returncode for p in procs]
    summaries = [(m.group(1) if (m := DONE.search(o)) else o.strip()[-300:]) for o in outs]
    recs = Store(url).records(name)
    done = [r for r in recs if r.status.finished]
    trained = [r for r in done if r.status == TrialStatus.COMPLETE and r.duplicate_of is None]
    start = min(r.datetime_start for r in done if r.datetime_start)
    end = max(r.datetime_complete for r in done if r.datetime_complete)
    seconds = (end - start).total_seconds()
    return {
        "search": name,
        "processes": k,
        "exit_codes": codes,
        "summaries": summaries,
        "finished": len(done),
        "trained": len(trained),
        "seconds": round(seconds, 2),
        "trials_per_minute": round(60 * len(done) / seconds, 2) if seconds > 0 else None,
    }


def measure(url: str, ks: list[int], args: argparse.Namespace, home: Path) -> list[dict[str, Any]]:
    """Every K on one store, with the efficiency against K = 1 (which is run first)."""
    rows = []
    for k in sorted(set([1, *ks])):
        row = run_workers(url, k, args, home)
        print(
            f"{redact_url(url)}  K={k}: {row['finished']} trials in {row['seconds']} s, "
            f"{row['trials_per_minute']} trials/min, exit codes {row['exit_codes']}",
            flush=True,
        )
        rows.append(row)
    base = rows[0]["trials_per_minute"]
    for row in rows:
        tpm = row["trials_per_minute"]
        row["efficiency"] = round(tpm / (row["processes"] * base), 3) if tpm and base else None
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--space", default="mnist1d", help="space name or TOML file")
    p.add_argument("--dataset", default="mnist1d")
    p.add_argument("--trials", type=int, default=24, help="trials per search")
    p.add_argument("--epochs", type=int, default=3, help="proxy epochs per trial")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--strategy", default="optuna:random", help="random: every K sees alike work")
    p.add_argument("--threads", type=int, default=1, help="threads per worker process")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="K on SQLite")
    p.add_argument("--postgres", default=None, help="also measure on this PostgreSQL URL")
    p.add_argument("--pg-processes", type=int, nargs="+", default=[1, 3], help="K on PostgreSQL")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per run of K processes")
    p.add_argument("--out", type=Path, default=HERE / "results", help="output folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input ends with one line and exit code 2."""
    args = parse_args(argv)
    if args.trials < 1 or args.epochs < 1 or args.threads < 1:
        print("Error: --trials, --epochs and --threads must be at least 1", file=sys.stderr)
        raise SystemExit(2)
    doc: dict[str, Any] = {
        "space": args.space,
        "dataset": args.dataset,
        "trials": args.trials,
        "epochs": args.epochs,
        "strategy": args.strategy,
        "threads_per_worker": args.threads,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "stores": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        try:
            doc["stores"]["sqlite"] = measure(
                f"sqlite:///{home / 'throughput.db'}", args.processes, args, home
            )
            if args.postgres:
                doc["stores"]["postgresql"] = measure(args.postgres, args.pg_processes, args, home)
        except FusionNasError as exc:
            print(f"Error: {one_line(exc)}", file=sys.stderr)
            raise SystemExit(2) from None
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "distributed_throughput.json"
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
