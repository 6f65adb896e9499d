"""Does the article's per-branch precision (convolutions in fp16, attention in bf16) pay?

For networks that have both branches (``parallel`` and ``gated`` stages), each is proxy-trained
with the same seed, data and schedule in four precisions, one after another in one process
(after one untimed epoch in each precision):

- ``fp32``; ``bf16`` (autocast); ``fp16`` (autocast with a gradient scaler);
- ``mixed-branch``: the ``fp16`` run with every attention mixer of the network (the attention
  branch of a block: :class:`~fusion_nas.model.nets.AttentionMixer` and
  :class:`~fusion_nas.model.nets.ChannelAttention`) run inside a nested bfloat16 autocast, so
  the convolution branch (and the rest) computes in fp16 and the attention branch in bf16.
  It is built here, around the modules, not in the network file: it was measured before it
  would be kept.

Reported per network and precision: proxy seconds and validation accuracy; the summary gives
each precision's mean time relative to fp32 and its mean accuracy change, and whether
``mixed-branch`` beat both ``bf16`` and ``fp32`` on time without losing more than 0.5 points.

    python benchmarks/precision_branch.py --space digits --networks 4 --epochs 10

Writes ``benchmarks/results/precision_branch_<space>.json``. One thread by default (compare
precisions on equal terms on a shared machine); timings depend on the CPU (fp16 and bf16
kernels need AVX-512/AMX to be fast).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path
from statistics import mean
from typing import Any

import torch
from _common import add_proxy_run_args
from torch import nn

from fusion_nas.model.build import build_model
from fusion_nas.model.nets import AttentionMixer, ChannelAttention
from fusion_nas.model.space import load_space
from fusion_nas.training.data import dataset_for
from fusion_nas.training.loop import ProxyConfig, train_proxy

MODES = ("fp32", "bf16", "fp16", "mixed-branch")
RESULTS = Path(__file__).resolve().parent / "results"


def attention_in_bf16(model: nn.Module) -> int:
    """Wrap the forward pass of every attention mixer of ``model`` in a bfloat16 autocast
    (nested inside the run's fp16 autocast); return how many were wrapped."""
    wrapped = 0
    for module in model.modules():
        if isinstance(module, (AttentionMixer, ChannelAttention)):
            plain = module.forward

            def forward(x: torch.Tensor, plain: Any = plain) -> torch.Tensor:
                with torch.autocast(x.device.type, dtype=torch.bfloat16):
                    return plain(x)

            module.forward = forward  # type: ignore[method-assign]
            wrapped += 1
    return wrapped


def fused_networks(space_name: str, count: int, seed: int) -> list:
    """``count`` networks of the space with a ``parallel`` or ``gated`` stage, drawn at random."""
    space = load_space(space_name)
    archs = [
        a for a in space.enumerate() if any(s.operator in ("parallel", "gated") for s in a.stages)
    ]
    random.Random(seed).shuffle(archs)
    return archs[:count]


def _precision(mode: str) -> str:
    """The run's precision: ``mixed-branch`` is an fp16 run (attention set to bf16 inside)."""
    return "fp16" if mode == "mixed-branch" else mode


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    dataset = args.dataset or space.name
    splits = dataset_for(dataset, space.source, None, 0.2, args.seed, args.train_subset)
    rows = []
    archs = fused_networks(args.space, args.networks, args.seed)
    for mode in MODES:  # untimed: each precision's one-time kernel set-up is not its cost
        warm = ProxyConfig(epochs=1, batch_size=args.batch_size, precision=_precision(mode))
        model = build_model(archs[0], space)
        if mode == "mixed-branch":
            attention_in_bf16(model)
        train_proxy(model, splits.train, None, warm, seed=args.seed)
    for arch in archs:
        for mode in MODES:
            precision = _precision(mode)
            config = ProxyConfig(
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, precision=precision
            )
            torch.manual_seed(args.seed)
            model = build_model(arch, space)
            wrapped = attention_in_bf16(model) if mode == "mixed-branch" else 0
            start = time.perf_counter()
            result = train_proxy(model, splits.train, splits.val, config, seed=args.seed)
            rows.append(
                {
                    "arch": arch.describe(),
                    "arch_id": arch.arch_id,
                    "mode": mode,
                    "attention_mixers_in_bf16": wrapped,
                    "seconds": round(time.perf_counter() - start, 3),
                    "val_acc": result.val_acc,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        base = {r["arch_id"]: r for r in rows if r["mode"] == "fp32"}
        summary[mode] = {
            "time_vs_fp32": round(
                mean(r["seconds"] / base[r["arch_id"]]["seconds"] for r in mine), 3
            ),
            "acc_change_vs_fp32": round(
                mean(r["val_acc"] - base[r["arch_id"]]["val_acc"] for r in mine), 4
            ),
            "mean_seconds": round(mean(r["seconds"] for r in mine), 3),
        }
    mixed = summary["mixed-branch"]
    helps = (
        mixed["time_vs_fp32"] < min(1.0, summary["bf16"]["time_vs_fp32"])
        and mixed["acc_change_vs_fp32"] >= min(0.0, summary["bf16"]["acc_change_vs_fp32"]) - 0.005
    )
    return {
        "benchmark": "precision_branch",
        "space": args.space,
        "dataset": dataset,
        "proxy": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr},
        "threads": args.threads,
        "seed": args.seed,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
        "summary": summary,
        "mixed_branch_helps": helps,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_proxy_run_args(p, networks=4)
    args = p.parse_args(argv)
    out = args.out or RESULTS / f"precision_branch_{args.space}.json"
    report = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(report["summary"], indent=2),
        "\nmixed-branch helps:",
        report["mixed_branch_helps"],
    )


if __name__ == "__main__":
    main()
