"""int8 before/after: test accuracy and CPU latency of trained networks, per operator family.

For each operator family (``conv``, ``attention``, ``parallel``, ``gated``), ``--per-family``
networks whose every stage uses that operator (attention variants taken in turn) are trained
with the proxy trainer (:func:`fusion_nas.training.loop.train_proxy`, ``--epochs`` on the dataset's
training split, seeded). Then each is quantised with
:func:`fusion_nas.deploy.quantize.quantize_dynamic`
(int8 ``nn.Linear`` layers) and both versions are measured:

- test accuracy (the dataset's test split, used only for this before/after report: nothing
  here is chosen by it) and the largest change of a logit;
- torch-eager latency in one thread at batch 1 and 64
(:func:`fusion_nas.deploy.latency.measure_latency`);
- the share of the network's MACs that sits in ``nn.Linear`` layers (what int8 can speed up).

Writes ``quantize_<dataset>.json`` and ``quantize_<dataset>.html`` to ``--out``.

    python benchmarks/quantize.py --dataset digits --per-family 3
    python benchmarks/quantize.py --per-family 1 --epochs 1 --runs 3   # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import nn

from fusion_nas.deploy.counters import exact_per_module
from fusion_nas.deploy.latency import measure_latency
from fusion_nas.deploy.quantize import quantize_dynamic, quantized_linears
from fusion_nas.model.arch import Architecture
from fusion_nas.model.build import build_model
from fusion_nas.model.space import SearchSpace, load_space
from fusion_nas.training.data import load_dataset
from fusion_nas.training.loop import ProxyConfig, evaluate_accuracy, train_proxy

RESULTS = Path(__file__).parent / "results"
FAMILIES = ("conv", "attention", "parallel", "gated")


def family_archs(space: SearchSpace, family: str, n: int, seed: int) -> list[Architecture]:
    """Up to ``n`` distinct networks of ``space`` using ``family`` in every stage; the k-th
    takes the k-th attention variant (cycling) wherever the stage allows it."""
    rng = random.Random(seed)
    variants = sorted({v for st in space.stages for v in st.attention})
    out: dict[str, Architecture] = {}
    for k in range(4 * n):
        if len(out) >= n:
            break
        want = variants[k % len(variants)] if variants else None
        stages = []
        for st in space.stages:
            opts = [o for o in st.options() if o.operator == family]
            if not opts:
                break
            same = [o for o in opts if o.attention in (want, None)]
            stages.append(rng.choice(same or opts))
        else:
            arch = Architecture(space.name, tuple(stages))
            out.setdefault(arch.arch_id, arch)
    return list(out.values())


def linear_share(model: nn.Module, shape: tuple[int, ...]) -> float:
    """Fraction of the exact MACs done in ``nn.Linear`` modules (batch 1)."""
    counts = exact_per_module(model, (torch.zeros(shape),))
    kinds = dict(model.named_modules())
    linear = sum(v for k, v in counts.items() if isinstance(kinds.get(k), nn.Linear))
    total = sum(counts.values())
    return linear / total if total else 0.0


@torch.no_grad()
def max_logit_change(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """Largest absolute difference of the two models' logits on ``x``."""
    return float((a.eval()(x) - b.eval()(x)).abs().max())


def run_one(arch: Architecture, space: SearchSpace, splits, args) -> dict[str, Any]:
    """Train one network, quantise it, measure both versions."""
    torch.manual_seed(args.seed)
    model = build_model(arch, space)
    config = ProxyConfig(epochs=args.epochs, lr=args.lr)
    trained = train_proxy(model, splits.train, splits.val, config, seed=args.seed)
    int8 = quantize_dynamic(model)
    kw = {"batch_sizes": (1, 64), "warmup": args.warmup, "runs": args.runs, "threads": 1}
    lat_fp = measure_latency(model, space.input_shape(1), **kw)
    lat_q = measure_latency(int8, space.input_shape(1), **kw)
    test = splits.test
    acc_fp, acc_q = evaluate_accuracy(model, test), evaluate_accuracy(int8, test)
    return {
        "arch": arch.to_dict(),
        "desc": arch.describe(),
        "val_acc": trained.val_acc,
        "train_seconds": round(trained.seconds, 2),
        "linear_mac_share": round(linear_share(model, space.input_shape(1)), 4),
        "quantized_linears": quantized_linears(int8),
        "test_acc_fp32": acc_fp,
        "test_acc_int8": acc_q,
        "acc_drop": round(acc_fp - acc_q, 4),
        "max_logit_change": max_logit_change(model, int8, test.tensors[0][:256]),
        "latency_fp32": lat_fp.to_dict(),
        "latency_int8": lat_q.to_dict(),
        "speedup_b1": round(lat_fp.median_ms(1) / lat_q.median_ms(1), 3),
        "speedup_b64": round(lat_fp.median_ms(64) / lat_q.median_ms(64), 3),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per family: mean accuracy before/after and drop, median speedups, Linear MAC share."""
    out = {}
    for fam in FAMILIES:
        rs = [r for r in rows if r["family"] == fam]
        if not rs:
            continue
        out[fam] = {
            "n": len(rs),
            "test_acc_fp32": round(float(np.mean([r["test_acc_fp32"] for r in rs])), 4),
            "test_acc_int8": round(float(np.mean([r["test_acc_int8"] for r in rs])), 4),
            "max_acc_drop": round(max(r["acc_drop"] for r in rs), 4),
            "median_speedup_b1": round(float(np.median([r["speedup_b1"] for r in rs])), 3),
            "median_speedup_b64": round(float(np.median([r["speedup_b64"] for r in rs])), 3),
            "linear_mac_share": round(float(np.mean([r["linear_mac_share"] for r in rs])), 3),
        }
    return out


def figure(summary: dict[str, Any], dataset: str) -> go.Figure:
    """Accuracy before/after and latency speedup per family."""
    fams = list(summary)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("test accuracy", "int8 speedup"))
    for key, name in (("test_acc_fp32", "float32"), ("test_acc_int8", "int8")):
        fig.add_trace(go.Bar(x=fams, y=[summary[f][key] for f in fams], name=name), row=1, col=1)
    for key, name in (("median_speedup_b1", "batch 1"), ("median_speedup_b64", "batch 64")):
        fig.add_trace(go.Bar(x=fams, y=[summary[f][key] for f in fams], name=name), row=1, col=2)
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_yaxes(title_text="float32 / int8 median latency", row=1, col=2)
    fig.update_layout(
        title=f"Dynamic int8 quantisation per operator family ({dataset})",
        barmode="group",
        template="plotly_white",
    )
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what it wrote to the JSON file."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--dataset", choices=("digits", "mnist1d"), default="digits")
    ap.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    ap.add_argument("--per-family", type=int, default=3, help="Networks per operator family.")
    ap.add_argument("--epochs", type=int, default=15, help="Proxy training epochs.")
    ap.add_argument("--lr", type=float, default=ProxyConfig().lr)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=31, help="Timed runs per latency.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.per_family < 1 or args.epochs < 1 or args.runs < 1:
        ap.error("--per-family, --epochs and --runs must be >= 1")
    torch.set_num_threads(1)  # the project's convention: seeded results for one thread
    space = load_space(args.dataset)
    splits = load_dataset(
        args.dataset,
        kind=space.kind,
        channels=space.channels,
        size=space.size,
        classes=space.classes,
        seed=args.seed,
    )
    rows = []
    start = time.perf_counter()
    for fam in args.families:
        for arch in family_archs(space, fam, args.per_family, args.seed):
            r = {"family": fam, **run_one(arch, space, splits, args)}
            rows.append(r)
            print(
                f"{fam:9} {r['desc']}: test {r['test_acc_fp32']:.4f} -> {r['test_acc_int8']:.4f}"
                f", speedup b1 {r['speedup_b1']}x b64 {r['speedup_b64']}x, "
                f"Linear share {r['linear_mac_share']:.2f}",
                flush=True,
            )
    summary = summarise(rows)
    out = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "engine": torch.backends.quantized.engine,
        },
        "seconds": round(time.perf_counter() - start, 1),
        "summary": summary,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"quantize_{args.dataset}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1))
    figure(summary, args.dataset).write_html(stem.with_suffix(".html"), include_plotlyjs="cdn")
    for fam, s in summary.items():
        print(f"{fam}: {json.dumps(s)}")
    print(f"Wrote {stem.with_suffix('.json')} and {stem.with_suffix('.html')}")
    return out


if __name__ == "__main__":
    main()
