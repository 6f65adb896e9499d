"""Tabular benchmark: train EVERY architecture of a space, per seed, into a CSV table.

Each architecture is proxy-trained on the space's dataset with one fixed proxy (the
:class:`fusion_nas.training.loop.ProxyConfig` defaults unless options say otherwise), once per
seed, one
thread per process, ``--workers K`` processes (``fusion_nas.evaluation.trainer``'s pools and
``evaluate``:
the same code path as a search's trials). One row per (architecture, seed) is appended to
``benchmarks/tables/<space>.csv`` the moment it finishes, so a killed run loses nothing and the
same command resumes (rows already in the CSV are skipped). The sidecar
``benchmarks/tables/<space>.json`` records the space TOML and its hash, the dataset, the proxy
settings, the seeds (a row's seed draws its validation split and initial weights, as
``fusion-nas search --seed``), the thread count and the package versions. Seed 0 of every
architecture runs before seed 1.

    python benchmarks/tabular.py                      # benchmarks/spaces/mnist1d-table.toml
    python benchmarks/tabular.py --space digits       # the built-in digits space
    python benchmarks/tabular.py --limit 5 --out /tmp/t.csv   # a smoke run

Searches read a table with ``fusion-nas search SPACE --evaluator table:PATH``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

import fusion_nas
from fusion_nas.errors import DatasetError, FusionNasError, allowed, one_line
from fusion_nas.evaluation.table import (
    TableError,
    TableRow,
    append_rows,
    meta_path,
    read_rows,
    space_key,
    space_sha256,
)
from fusion_nas.evaluation.trainer import EvalTask, InlinePool, ProcessPool
from fusion_nas.model.arch import Architecture
from fusion_nas.model.cost import arch_cost
from fusion_nas.model.space import SearchSpace, load_space, parse_space
from fusion_nas.store.records import TrialStatus
from fusion_nas.training.data import DATASETS
from fusion_nas.training.loop import ProxyConfig

HERE = Path(__file__).resolve().parent
DEFAULT_SPACE = HERE / "spaces" / "mnist1d-table.toml"
TABLES = HERE / "tables"


def default_dataset(space: SearchSpace) -> str:
    """The dataset named like the space, or like its first word (``mnist1d-table``: mnist1d)."""
    for name in (space.name, space.name.split("-")[0]):
        if name in DATASETS:
            return name
    raise DatasetError(
        f"space {space.name!r} has no default dataset; pass --dataset, one of: {allowed(DATASETS)}"
    )


def table_meta(
    space: SearchSpace, dataset: str, proxy: ProxyConfig, seeds: list[int], args: argparse.Namespace
) -> dict:
    """The sidecar record of a table."""
    return {
        "space_name": space.name,
        "space_sha256": space_sha256(space),
        "space_toml": space.source,
        "architectures": space.num_architectures(),
        "dataset": dataset,
        "data_dir": args.data_dir,
        "proxy": proxy.to_dict(),
        "seeds": seeds,
        "split_seed": "each row's seed: it draws the validation split and the initial weights "
        "(fusion_nas.evaluation.trainer, as fusion-nas search --seed)",
        "threads": 1,
        "workers": args.workers,
        "timeout_s": args.timeout,
        "columns": {
            "arch_id": "stable architecture id",
            "arch": "architecture JSON (fusion_nas.model.arch.Architecture)",
            "desc": "short description",
            "macs": "multiply-accumulates per sample (fusion_nas.model.cost.arch_cost)",
            "params": "parameters",
            "seed": "training seed (split and initial weights)",
            "val_acc": "validation accuracy after the last epoch",
            "curve": "JSON list: validation accuracy after each epoch",
            "seconds": "proxy training seconds (one thread)",
            "threads": "torch threads of the run",
            "status": "complete or failed",
            "reason": "why a run failed",
        },
        "versions": {
            "fusion_nas": fusion_nas.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "optuna": optuna.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def check_resume(out: Path, meta: dict) -> dict:
    """Refuse to append to a table made with other settings; return the merged record."""
    side = meta_path(out)
    if not side.exists():
        if out.exists() and out.stat().st_size:
            raise TableError(f"table {str(out)!r} has no record {str(side)!r}; use another --out")
        return meta
    old = json.loads(side.read_text(encoding="utf-8"))
    old_space = parse_space(old["space_toml"], source=str(side))
    new_space = parse_space(meta["space_toml"], source="<space>")
    if space_key(old_space) != space_key(new_space):
        raise TableError(
            f"table {str(out)!r} holds space {old_space.name!r}, other choices than "
            f"{new_space.name!r}; use another --out"
        )
    for key in ("dataset", "proxy", "data_dir"):
        if old.get(key) != meta[key]:
            raise TableError(
                f"table {str(out)!r} was made with {key} {old.get(key)!r}, now {meta[key]!r}; "
                "use the same settings to resume, or another --out"
            )
    seeds = sorted(set(old.get("seeds", [])) | set(meta["seeds"]))
    return {**meta, "seeds": seeds, "created": old.get("created", meta["created"])}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    d = ProxyConfig()
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--space", default=str(DEFAULT_SPACE), help="built-in space name or .toml path")
    p.add_argument("--dataset", default=None, help="default: the dataset named like the space")
    p.add_argument("--data-dir", default=None, help="dataset files (fashion-mnist)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--workers", type=int, default=1, help="training processes (1 thread each)")
    p.add_argument("--limit", type=int, default=None, help="train at most N new rows (smoke runs)")
    p.add_argument("--out", type=Path, default=None, help="CSV path; default tables/<space>.csv")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--train-subset", type=int, default=d.train_subset)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before a run fails")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    """Train the missing rows of the table; return its path."""
    if args.workers < 1:
        raise TableError(f"--workers must be at least 1, got {args.workers}")
    if args.limit is not None and args.limit < 0:
        raise TableError(f"--limit must be 0 or more, got {args.limit}")
    space = load_space(args.space)
    dataset = args.dataset or default_dataset(space)
    proxy = ProxyConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        train_subset=args.train_subset,
        val_fraction=args.val_fraction,
    )
    seeds = list(dict.fromkeys(args.seeds))
    out = args.out or TABLES / f"{space.name}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = check_resume(out, table_meta(space, dataset, proxy, seeds, args))
    archs = space.enumerate(limit=1_000_000)
    done = {(r.arch_id, r.seed) for r in read_rows(out)}
    todo = [(a, s) for s in seeds for a in archs if (a.arch_id, s) not in done]
    if args.limit is not None:
        todo = todo[: args.limit]
    meta_path(out).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(
        f"{space.name}: {len(archs)} architectures x seeds {seeds}; {len(done)} rows in "
        f"{out}, {len(todo)} to train with {args.workers} worker(s)",
        flush=True,
    )
    costs = {a.arch_id: arch_cost(a, space) for a in archs}
    # One worker trains in this process (one thread); more train in processes of one thread.
    pool = InlinePool() if args.workers == 1 else ProcessPool(args.workers, cores=args.workers)
    if args.workers == 1:
        torch.set_num_threads(1)
    pending = list(reversed(todo))  # pop() takes them in order
    running: dict[int, tuple[Architecture, int]] = {}
    key, failed = 0, 0
    start = time.perf_counter()
    progress = Progress(
        TextColumn(f"[bold]{space.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    try:
        with progress:
            bar = progress.add_task("table", total=len(todo), failed=0)
            while pending or running:
                while pending and pool.free:
                    arch, seed = pending.pop()
                    running[key] = (arch, seed)
                    task = EvalTask(
                        arch_json=arch.to_json(),
                        space_source=space.source,
                        dataset=dataset,
                        proxy=proxy,
                        seed=seed,
                        data_dir=args.data_dir,
                        timeout=args.timeout,
                        threads=1,
                    )
                    pool.submit(key, task)
                    key += 1
                for k, outcome in pool.collect(1.0):
                    arch, seed = running.pop(k)
                    cost = costs[arch.arch_id]
                    ok = outcome.status == TrialStatus.COMPLETE
                    failed += not ok
                    row = TableRow(
                        arch_id=arch.arch_id,
                        arch=arch.to_json(),
                        desc=arch.describe(),
                        macs=cost.macs,
                        params=cost.params,
                        seed=seed,
                        val_acc=outcome.val_acc if ok else None,
                        curve=list(outcome.curve),
                        seconds=outcome.seconds,
                        threads=1,
                        status=outcome.status.value,
                        reason=(outcome.reason or "") if not ok else "",
                    )
                    append_rows(out, [row])
                    progress.update(bar, advance=1, failed=failed)
    finally:
        pool.close()
    rows = read_rows(out)
    print(
        f"done in {time.perf_counter() - start:.1f} s: {len(rows)} rows in {out} "
        f"({sum(not r.complete for r in rows)} failed); record {meta_path(out)}",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input ends with one line and exit code 2."""
    try:
        run(parse_args(argv))
    except FusionNasError as exc:
        print(f"Error: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("Stopped: finished rows are kept; run the same command to resume.", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
