"""What ``--compile`` (``torch.compile``) costs and saves on proxy-length runs.

Every search trial is a new network, so ``torch.compile`` compiles again for every trial (and
again when the last, smaller batch of an epoch changes the shape). This benchmark proxy-trains
a few networks of a space twice each, with the same seed, data and schedule: eagerly, and
through ``torch.compile`` with a fresh compiler state (``torch._dynamo.reset()``), the way a
trial runs. Each optimiser step is timed (``train_proxy``'s ``on_step``):

- ``eager_s`` / ``compiled_s``: the whole proxy run;
- ``eager_step_ms`` / ``compiled_step_ms``: the median step after the first epoch;
- ``compile_s``: ``compiled_s`` less what its steps would cost at the compiled median
  (``compiled_s - eager_s * compiled_step_ms / eager_step_ms``): the compilation itself;
- ``break_even_steps``: compile seconds over the seconds saved per step (``None`` when compiled
  steps are not faster): how long a run must be for compiling to pay.

    python benchmarks/compile_cost.py --space digits --networks 3 --epochs 10

Writes ``benchmarks/results/compile_cost_<space>.json``. One thread by default.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path
from statistics import median
from typing import Any

import torch
from _common import add_proxy_run_args

from fusion_nas.model.build import build_model
from fusion_nas.model.space import load_space
from fusion_nas.training.data import dataset_for
from fusion_nas.training.loop import ProxyConfig, train_proxy

RESULTS = Path(__file__).resolve().parent / "results"


def timed_run(arch: Any, space: Any, splits: Any, config: ProxyConfig, seed: int) -> dict:
    """Proxy-train ``arch`` once; the total seconds, the step times and the accuracy."""
    if config.compile:
        torch._dynamo.reset()  # a trial's network is new: nothing compiled before it counts
    torch.manual_seed(seed)
    model = build_model(arch, space)
    stamps: list[float] = []
    start = time.perf_counter()
    result = train_proxy(
        model,
        splits.train,
        splits.val,
        config,
        seed=seed,
        on_step=lambda step, total, loss: stamps.append(time.perf_counter()),
    )
    total = time.perf_counter() - start
    steps = [b - a for a, b in zip([start, *stamps[:-1]], stamps)]
    per_epoch = len(steps) // config.epochs
    steady = steps[per_epoch:] or steps  # after the first epoch: compiled, shapes seen
    return {
        "seconds": round(total, 3),
        "step_ms": round(1000 * median(steady), 3),
        "first_step_s": round(steps[0], 3),
        "steps": len(steps),
        "val_acc": result.val_acc,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    dataset = args.dataset or space.name
    splits = dataset_for(dataset, space.source, None, 0.2, args.seed, args.train_subset)
    archs = space.enumerate()
    random.Random(args.seed).shuffle(archs)
    base = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    rows = []
    for arch in archs[: args.networks]:
        eager = timed_run(arch, space, splits, ProxyConfig(**base), args.seed)
        compiled = timed_run(arch, space, splits, ProxyConfig(**base, compile=True), args.seed)
        ratio = compiled["step_ms"] / eager["step_ms"]
        compile_s = compiled["seconds"] - eager["seconds"] * ratio
        saved_per_step = (eager["step_ms"] - compiled["step_ms"]) / 1000
        row = {
            "arch": arch.describe(),
            "eager_s": eager["seconds"],
            "compiled_s": compiled["seconds"],
            "eager_step_ms": eager["step_ms"],
            "compiled_step_ms": compiled["step_ms"],
            "step_speedup": round(1 / ratio, 3),
            "compile_s": round(compile_s, 2),
            "break_even_steps": round(compile_s / saved_per_step) if saved_per_step > 0 else None,
            "proxy_steps": eager["steps"],
            "eager_val_acc": eager["val_acc"],
            "compiled_val_acc": compiled["val_acc"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    pays = [r for r in rows if r["compiled_s"] < r["eager_s"]]
    return {
        "benchmark": "compile_cost",
        "space": args.space,
        "dataset": dataset,
        "proxy": base,
        "threads": args.threads,
        "seed": args.seed,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
        "summary": {
            "networks": len(rows),
            "compile_pays_on_the_proxy": len(pays),
            "median_compile_s": median(r["compile_s"] for r in rows) if rows else None,
            "median_step_speedup": median(r["step_speedup"] for r in rows) if rows else None,
            "median_total_ratio": median(r["compiled_s"] / r["eager_s"] for r in rows)
            if rows
            else None,
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_proxy_run_args(p, networks=3)
    args = p.parse_args(argv)
    out = args.out or RESULTS / f"compile_cost_{args.space}.json"
    report = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
