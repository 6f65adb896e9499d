"""The article's video comparison, in kind, on the procedural ``video-glyphs`` clips.

The article reports on Kinetics-400 a pure 3-D CNN (74.3% at 102 GFLOPs), a pure space-time
transformer (76.1% at 187 GFLOPs) and a conv-attention hybrid (78.5% at 89 GFLOPs): convolution
within a frame, attention across frames. This benchmark trains the same three designs, the
frame-averaging 2-D control and a searched front on ``video-glyphs`` (clips of 8 frames of
16x16, six classes by the order in which three glyphs appear, so that a network blind to frame
order is at chance), all with one protocol:

1. runs (or resumes) a search of ``--trials`` trials of the built-in ``video-glyphs`` space
   (:func:`fusion_nas.search.session.run_search`, proxy ``--proxy-epochs`` epochs scored on the
   validation part of the training clips);
2. retrains ``--retrain`` front members (spread over the front) and the baselines
   ``video-3dcnn``, ``video-transformer``, ``video-hybrid`` and ``frame-average`` from scratch on
   all training clips (:class:`fusion_nas.training.protocol.TrainingProtocol`: ``--epochs``,
   ``--lr``, ``--batch-size``, ``--weight-decay``) and tests each once, on the test clips and on
   the same clips with their frames shuffled (one seeded order per clip);
3. writes ``<out>/video_front<tag>.json``, ``.md`` (the table and the verdict: does the hybrid
   beat both pure designs at lower cost, as the article claims for Kinetics?) and ``.html``
   (test accuracy against MACs; ``--png`` also renders it to a PNG, ``--replot JSON`` redraws
   a written result without training). Every finished training is appended to ``.runs.jsonl`` and
   reused by a rerun with the same settings.

    python benchmarks/video_front.py --trials 16 --proxy-epochs 3 --epochs 12 --retrain 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch
from torch.utils.data import TensorDataset

from fusion_nas.analysis import baselines as bl
from fusion_nas.errors import FusionNasError
from fusion_nas.model.arch import Architecture
from fusion_nas.model.space import load_space, parse_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store.store import Store, quiet_optuna
from fusion_nas.training.data import load_dataset
from fusion_nas.training.data.video import shuffle_frames
from fusion_nas.training.loop import ProxyConfig, evaluate_accuracy
from fusion_nas.training.protocol import TrainingProtocol

sys.path.insert(0, str(Path(__file__).parent))  # the shared helpers of vision_front.py
from front_vs_baselines import write_png  # noqa: E402
from vision_front import arch_row, front_members, network, run_jobs  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DATASET = SPACE = "video-glyphs"
# the article's rows (Kinetics-400, its own training) and the rows that mirror them here
ARTICLE = {
    "video-3dcnn": {"row": "pure 3-D CNN", "gflops": 102, "top1": 0.743},
    "video-transformer": {"row": "pure space-time transformer", "gflops": 187, "top1": 0.761},
    "video-hybrid": {"row": "conv-attention hybrid", "gflops": 89, "top1": 0.785},
}
CONTROL = "frame-average"
PARALLEL = "video-parallel"  # the hybrid's parts fused in every block instead of in turn
BASELINES = (*ARTICLE, PARALLEL, CONTROL)
SHUFFLE_SEED = 0


def run_video_job(job: dict[str, Any]) -> dict[str, Any]:
    """One final training in a one-thread worker: train on all training clips, test once on
    the test clips and once on the same clips with their frames shuffled."""
    torch.set_num_threads(1)
    space = parse_space(job["space_toml"], source="<video space>")
    proxy = ProxyConfig(**job["proxy"])
    protocol = TrainingProtocol(
        dataset=job["dataset"],
        space=space,
        proxy=proxy,
        seed=job["seed"],
        final_lr=job["final"]["lr"],
        final_batch_size=job["final"]["batch_size"],
        final_weight_decay=job["final"]["weight_decay"],
    )
    build = network(job, space)
    start = time.perf_counter()
    model, final = protocol.retrain(build, job["final"]["epochs"])
    test = load_dataset(
        job["dataset"],
        kind=space.kind,
        channels=space.channels,
        size=space.size,
        classes=space.classes,
        val_fraction=proxy.val_fraction,
        seed=job["seed"],
    ).test
    x, y = test.tensors  # (N, C, T, H, W), (N,)
    shuffled = evaluate_accuracy(model, TensorDataset(shuffle_frames(x, SHUFFLE_SEED), y))
    return {
        **job["row"],
        "test_acc": final.test_acc,
        "shuffled_test_acc": shuffled,
        "train_samples": final.train_samples,
        "test_samples": final.test_samples,
        "seconds": round(time.perf_counter() - start, 1),
    }


def verdict(rows: dict[str, dict[str, Any]]) -> str:
    """Whether the hybrid beats both pure designs at lower cost, in one sentence."""
    h, c, t = rows["video-hybrid"], rows["video-3dcnn"], rows["video-transformer"]
    better = h["test_acc"] > max(c["test_acc"], t["test_acc"])
    cheaper = h["macs"] < min(c["macs"], t["macs"])
    parts = [
        f"hybrid {h['test_acc']:.1%} at {h['macs'] / 1e6:.2f}M MACs",
        f"3-D CNN {c['test_acc']:.1%} at {c['macs'] / 1e6:.2f}M",
        f"space-time transformer {t['test_acc']:.1%} at {t['macs'] / 1e6:.2f}M",
    ]
    if better and cheaper:
        head = "Yes: the hybrid beats both pure designs at lower cost"
    elif cheaper:
        head = "No: the hybrid is cheaper than both pure designs but not more accurate than both"
    elif better:
        head = "No: the hybrid is more accurate than both pure designs but not cheaper than both"
    else:
        head = "No: the hybrid neither beats both pure designs nor costs less than both"
    return f"{head} ({'; '.join(parts)})."


def figure(doc: dict[str, Any]) -> go.Figure:
    """Test accuracy against MACs: article rows, control, searched front; hollow markers: the
    same networks on frame-shuffled clips."""
    fig = go.Figure()
    base = doc["baselines"]
    groups = (  # name, rows, marker symbol, colour (one colour for a group's two traces)
        ("article rows", [r for r in base if r["label"] in ARTICLE], "diamond", "#1f77b4"),
        ("parallel fusion", [r for r in base if r["label"] == PARALLEL], "square", "#9467bd"),
        ("frame-average control", [r for r in base if r["label"] == CONTROL], "x", "#7f7f7f"),
        ("searched front (retrained)", doc["searched_front"], "circle", "#d62728"),
    )
    for name, rows, symbol, colour in groups:
        if not rows:
            continue
        text = [
            f"{r['label']}<br>{r['arch_desc']}<br>{r['macs']:,} MACs, {r['params']:,} params"
            for r in rows
        ]
        fig.add_scatter(
            x=[r["macs"] for r in rows],
            y=[r["test_acc"] for r in rows],
            mode="markers+text",
            name=name,
            text=[r["label"] for r in rows],
            textposition="top center",
            hovertext=text,
            marker={"symbol": symbol, "size": 12, "color": colour},
            cliponaxis=False,
        )
        fig.add_scatter(
            x=[r["macs"] for r in rows],
            y=[r["shuffled_test_acc"] for r in rows],
            mode="markers",
            name=f"{name}, frames shuffled",
            hovertext=text,
            marker={"symbol": f"{symbol}-open", "size": 10, "color": colour},
        )
    fig.add_hline(y=1 / doc["classes"], line_dash="dot", annotation_text="chance")
    fig.update_layout(
        title="video-glyphs: test accuracy against MACs (one protocol for every network)",
        xaxis_title="MACs per clip (log)",
        yaxis_title="test accuracy",
        xaxis_type="log",
        template="plotly_white",
        margin={"l": 70, "r": 40, "t": 60, "b": 60},
    )
    return fig


def markdown(doc: dict[str, Any]) -> str:
    """The comparison table and the verdict."""
    lines = [
        "| network | design | MACs | params | test acc | frames shuffled |",
        "|---|---|---:|---:|---:|---:|",
    ]
    rows = sorted(doc["baselines"] + doc["searched_front"], key=lambda r: r["macs"])
    for r in rows:
        name = ARTICLE.get(r["label"], {}).get("row", r["label"])
        if r["label"] == CONTROL:
            name = "frame-averaging 2-D control"
        elif r["label"] == PARALLEL:
            name = "parallel conv + temporal attention, every stage"
        elif r.get("kind") == "front":
            name = f"searched, {r['label']}"
        lines.append(
            f"| {name} | `{r['arch_desc']}` | {r['macs']:,} | {r['params']:,} | "
            f"{r['test_acc']:.1%} | {r['shuffled_test_acc']:.1%} |"
        )
    final = doc["final_protocol"]
    lines += [
        "",
        f"**{doc['verdict']}**",
        "",
        f"Chance: {1 / doc['classes']:.1%}. Search: {doc['trials']} trials, {doc['strategy']}, "
        f"proxy {doc['proxy']['epochs']} epochs. Final protocol for every row: "
        f"{final['epochs']} epochs, lr {final['lr']}, batch {final['batch_size']}, weight decay "
        f"{final['weight_decay']}, on {doc['train_samples']:,} training clips; tested once on "
        f"{doc['test_samples']:,} test clips and on the same clips with frames shuffled.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", default="video-glyphs-front", help="search name")
    p.add_argument("--store", default=None, help="store URL (default: the project's store)")
    p.add_argument("--strategy", default="optuna:tpe")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--proxy-epochs", type=int, default=3)
    p.add_argument("--proxy-lr", type=float, default=ProxyConfig().lr)
    p.add_argument("--batch-size", type=int, default=64, help="proxy and final batch size")
    p.add_argument("--retrain", type=int, default=3, help="front members to retrain")
    p.add_argument("--epochs", type=int, default=12, help="final protocol: epochs")
    p.add_argument("--lr", type=float, default=1e-2, help="final protocol: peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05, help="final protocol: decay")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="suffix of the output files")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--png", type=Path, default=None, help="also render the plot to this PNG")
    p.add_argument("--replot", type=Path, default=None, help="redraw a written JSON, no training")
    return p.parse_args(argv)


def write(doc: dict[str, Any], stem: Path, png: Path | None) -> None:
    """The JSON, the table (.md), the plot (.html) and, with ``png``, the plot as a PNG."""
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    figure(doc).write_html(stem.with_suffix(".html"), include_plotlyjs="cdn")
    if png is not None:
        write_png(figure(doc), png)
    print(markdown(doc))
    print(f"wrote {stem}.json, .md, .html" + (f", {png}" if png else ""), flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Search, retrain the front and the article's rows, write the comparison."""
    args = parse_args(argv)
    if args.replot is not None:
        doc = json.loads(args.replot.read_text())
        write(doc, args.replot.with_suffix(""), args.png)
        return doc
    quiet_optuna()
    space = load_space(SPACE)
    proxy = {"epochs": args.proxy_epochs, "lr": args.proxy_lr, "batch_size": args.batch_size}
    final = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "weight_decay": args.weight_decay,
    }
    store = Store(args.store)
    config = SearchConfig(
        space=space,
        dataset=DATASET,
        strategy=args.strategy,
        trials=args.trials,
        proxy=ProxyConfig(**proxy),
        workers=args.workers,
        seed=args.seed,
        name=args.name,
        latency="off",
    )
    start = time.perf_counter()
    run_search(config, store)
    search_seconds = time.perf_counter() - start
    common = {
        "dataset": DATASET,
        "space_toml": space.source,
        "proxy": proxy,
        "seed": args.seed,
        "final": final,
        "epochs_weight": args.epochs,
        "phase": "final",
    }
    jobs = []
    caps = {"max_macs": None, "max_params": None}
    for m in front_members(store, args.name, args.retrain, caps):
        arch = Architecture.from_dict(m["arch"])
        row = arch_row(f"trial {m['number']}", arch, space, val_acc=m["val_acc"], kind="front")
        jobs.append({**common, "baseline": None, "arch": m["arch"], "row": row})
    chosen, skipped = bl.select(space, list(BASELINES))
    for b in chosen:
        row = {"label": b.name, "arch_desc": b.describe(), "macs": b.macs, "params": b.params}
        jobs.append(
            {**common, "baseline": b.name, "arch": None, "row": {**row, "kind": "baseline"}}
        )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"video_front{args.tag}"
    start = time.perf_counter()
    results = run_jobs(jobs, args.workers, stem.with_suffix(".runs.jsonl"), run_video_job)
    train_seconds = time.perf_counter() - start
    base_rows = [r for j, r in zip(jobs, results) if j["baseline"]]
    by_name = {r["label"]: r for r in base_rows}
    doc: dict[str, Any] = {
        "dataset": DATASET,
        "space": space.name,
        "classes": space.classes,
        "search": args.name,
        "strategy": args.strategy,
        "trials": args.trials,
        "proxy": proxy,
        "final_protocol": final,
        "train_samples": next((r["train_samples"] for r in results), 0),
        "test_samples": next((r["test_samples"] for r in results), 0),
        "searched_front": sorted(
            [r for r in results if r.get("kind") == "front"], key=lambda r: r["macs"]
        ),
        "baselines": sorted(base_rows, key=lambda r: r["macs"]),
        "unavailable_baselines": {u.name: u.reason for u in skipped},
        "article": ARTICLE,
        "verdict": verdict(by_name) if set(ARTICLE) <= set(by_name) else "not all rows trained",
        "seconds": {"search": round(search_seconds), "training": round(train_seconds)},
        "workers": args.workers,
        "threads_per_training": 1,
        "torch": torch.__version__,
    }
    write(doc, stem, args.png)
    return doc


if __name__ == "__main__":
    try:
        main()
    except FusionNasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
