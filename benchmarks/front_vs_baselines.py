"""Searched front against hand design: retrain a search's Pareto front and the baselines with
one protocol, and compare their test accuracy against MACs.

1. Runs (or resumes) a search of ``--trials`` trials on ``--space`` into ``--store``, selecting
   on the validation split carved from the training data, as ``fusion-nas search`` does.
2. Retrains every front member from scratch on all training data with the final protocol
   (``--epochs``, ``--lr``, ``--batch-size``, ``--weight-decay``) and tests it once; the
   retrained test accuracy is stored with the trial, as ``fusion-nas retrain`` stores it.
3. Trains the space's baselines (``fusion_nas.analysis.baselines``) with the same protocol and
stores them
   beside the search, as ``fusion-nas baselines`` does.
4. Writes ``benchmarks/results/front_vs_baselines_<space>.json`` (every point, the headline
   figures) and ``.html`` (test accuracy against MACs, published numbers included), and prints a
   Markdown table for the README.

    python benchmarks/front_vs_baselines.py --space mnist1d --trials 80 --workers 2
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import shutil
import tempfile
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch

from fusion_nas.analysis import baselines as bl
from fusion_nas.analysis.retrain import retrain
from fusion_nas.model.space import load_space
from fusion_nas.model.space import parse_space as load_space_text
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store import records
from fusion_nas.store.records import (
    BaselineRecord,
    RetrainRecord,
    SearchRecord,
    read_retrains,
)
from fusion_nas.store.store import Store, quiet_optuna
from fusion_nas.training.loop import ProxyConfig
from fusion_nas.training.protocol import TrainingProtocol

RESULTS = Path(__file__).parent / "results"
CHROMIUM = "/usr/bin/chromium"  # Debian's; no browser download
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

# Published test accuracies (Greydanus, "Scaling down deep learning with MNIST-1D", 2024,
# table of baselines), with the MACs of the exact definitions in fusion_nas.analysis.baselines.
PUBLISHED = {
    "mnist1d": [
        {"name": "paper CNN (published)", "macs": 31_750, "test_acc": 0.94},
        {"name": "paper GRU (published)", "macs": 14_880, "test_acc": 0.91},
    ]
}


def _same(rec: RetrainRecord | BaselineRecord, final: dict[str, Any]) -> bool:
    """Whether a stored result was trained with the final protocol ``final``."""
    return (rec.epochs, rec.lr, rec.batch_size, rec.weight_decay) == (
        final["epochs"],
        final["lr"],
        final["batch_size"],
        final["weight_decay"],
    )


def _retrain_job(job: dict[str, Any]) -> RetrainRecord:
    """Retrain one front member with the final protocol, in a one-thread worker process.

    Goes through :func:`fusion_nas.analysis.retrain.retrain`, as ``fusion-nas retrain`` does, so the
    result is stored with the search and its code and weights are written.
    """
    search = Store(job["store"], create=False).search(job["search"])
    f = job["final"]
    return retrain(
        search,
        search.trial(job["number"]),
        epochs=f["epochs"],
        threads=1,
        lr=f["lr"],
        batch_size=f["batch_size"],
        weight_decay=f["weight_decay"],
        out_dir=job["out_dir"],
    )


def _train_baselines(
    todo: list[bl.Baseline],
    record: SearchRecord,
    final: dict[str, Any],
    store: Store,
    of: int,
    stored: dict[str, BaselineRecord],
) -> None:
    """Train ``todo`` with the search's proxy and the final protocol, on one thread, and store
    them (:func:`fusion_nas.analysis.baselines.train_baselines`, as ``fusion-nas baselines``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # more threads than free cores slows small networks badly
    protocol = TrainingProtocol(
        dataset=record.dataset,
        space=load_space_text(record.space_toml),
        proxy=ProxyConfig(**record.proxy),
        seed=record.seed,
        data_dir=record.data_dir,
        final_lr=final["lr"],
        final_batch_size=final["batch_size"],
        final_weight_decay=final["weight_decay"],
    )

    def ended(i: int, b: bl.Baseline, rec: BaselineRecord | None, reason: str | None) -> None:
        if rec is None:
            print(f"[{i + 1}/{of}] baseline {b.name} failed: {reason}", flush=True)
            return
        stored[rec.name] = rec
        print(
            f"[{i + 1}/{of}] baseline {rec.name} {rec.macs:,} MACs test "
            f"{rec.test_acc:.4f} ({rec.seconds} s)",
            flush=True,
        )

    try:
        bl.train_baselines(todo, protocol, store, epochs=final["epochs"], on_result=ended)
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Search, retrain the front and the baselines, write the comparison; returns its JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="mnist1d")
    p.add_argument("--dataset", default=None)
    p.add_argument("--name", default=None, help="search name (default: <space>-front)")
    p.add_argument("--store", default=None, help="store URL (default: the project's store)")
    p.add_argument("--strategy", default="optuna:nsga2")
    p.add_argument("--trials", type=int, default=80)
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--proxy-epochs", type=int, default=ProxyConfig().epochs)
    p.add_argument("--proxy-lr", type=float, default=ProxyConfig().lr)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--epochs", type=int, default=150, help="final protocol: epochs")
    p.add_argument("--lr", type=float, default=1e-2, help="final protocol: peak learning rate")
    p.add_argument("--batch-size", type=int, default=128, help="final protocol: batch size")
    p.add_argument("--weight-decay", type=float, default=0.05, help="final protocol: AdamW decay")
    p.add_argument("--max-front", type=int, default=None, help="retrain at most K front members")
    p.add_argument("--max-macs", type=int, default=None, help="retrain front members up to this")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--png", type=Path, default=None, help="also render the plot to this PNG")
    p.add_argument("--from-json", action="store_true", help="redraw from the JSON written before")
    args = p.parse_args(argv)
    quiet_optuna()
    space = load_space(args.space)
    out_json = args.out / f"front_vs_baselines_{space.name}.json"
    if args.from_json:
        doc = json.loads(out_json.read_text())
        return _write(doc, args, out_json)
    name = args.name or f"{space.name}-front"
    store = Store(args.store)
    proxy = ProxyConfig(epochs=args.proxy_epochs, lr=args.proxy_lr, train_subset=args.train_subset)
    config = SearchConfig(
        space=space,
        dataset=args.dataset or space.name,
        strategy=args.strategy,
        trials=args.trials,
        proxy=proxy,
        workers=args.workers,
        seed=args.seed,
        name=name,
        strategy_options={"population": args.population} if "nsga2" in args.strategy else {},
    )
    run_search(config, store)

    final = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "weight_decay": args.weight_decay,
    }
    front = store.trials(name)
    front = front[front["on_front"]].sort_values("macs")
    if args.max_macs:
        front = front[front["macs"] <= args.max_macs]
    if args.max_front and len(front) > args.max_front:
        step = (len(front) - 1) / max(1, args.max_front - 1)  # keep both ends, evenly between
        front = front.iloc[sorted({round(i * step) for i in range(args.max_front)})]
    record = store.search_record(name)
    done = {
        n: r for n, r in read_retrains(store.load_study(name).user_attrs).items() if _same(r, final)
    }
    collection_name = records.collection_name(space.name, record.dataset)
    earlier = store.baselines(collection_name) if collection_name in store.baseline_sets() else []
    stored = {
        r.name: r
        for r in earlier
        if _same(r, final) and r.proxy == record.proxy and r.seed == record.seed
    }
    chosen, _ = bl.select(space)
    exports = Path(tempfile.mkdtemp(prefix="front_vs_baselines_"))
    jobs = [
        {
            "store": store.url,
            "search": name,
            "number": int(n),
            "macs": int(m),
            "final": final,
            "out_dir": str(exports / f"trial{int(n)}"),
        }
        for n, m in zip(front["number"], front["macs"])
        if int(n) not in done
    ]
    todo = [b for b in chosen if b.name not in stored]
    jobs.sort(key=lambda j: -j["macs"])  # longest first: the workers end together
    print(
        f"{len(done)} front members and {len(stored)} baselines already trained with this "
        f"protocol; {len(jobs) + len(todo)} to train",
        flush=True,
    )
    ctx = mp.get_context("spawn")  # fresh interpreters, one thread each
    # The baselines train here, one after another on one thread, while the workers retrain
    # the front; this process is the collection's one writer (Store.save_baseline).
    workers = max(1, args.workers - 1) if todo else args.workers
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        futures = [ex.submit(_retrain_job, j) for j in jobs]
        if todo:
            _train_baselines(todo, record, final, store, len(jobs) + len(todo), stored)
        for i, fut in enumerate(cf.as_completed(futures), len(todo) + 1):
            out = fut.result()
            done[out.trial] = out
            print(
                f"[{i}/{len(jobs) + len(todo)}] trial {out.trial} {out.macs:,} MACs val "
                f"{out.proxy_val_acc:.4f} test {out.test_acc:.4f} ({out.seconds} s)",
                flush=True,
            )
    shutil.rmtree(exports, ignore_errors=True)
    keys = ("trial", "arch_id", "arch", "arch_desc", "macs", "params", "proxy_val_acc")
    searched = sorted(
        (
            {**{k: getattr(r, k) for k in keys}, "test_acc": r.test_acc, "seconds": r.seconds}
            for n, r in done.items()
            if n in set(front["number"])
        ),
        key=lambda r: r["macs"],
    )
    base_rows = [
        {
            "name": r.name,
            "arch_desc": r.arch_desc,
            "macs": r.macs,
            "params": r.params,
            "val_acc": r.val_acc,
            "test_acc": r.test_acc,
            "seconds": r.seconds,
        }
        for r in sorted(stored.values(), key=lambda r: r.macs)
        if r.name in {b.name for b in chosen}
    ]
    doc = headline(space.name, name, searched, base_rows, final, proxy)
    return _write(doc, args, out_json)


def _write(doc: dict[str, Any], args: argparse.Namespace, out_json: Path) -> dict[str, Any]:
    """Write the JSON, the HTML (and the PNG if asked); print the Markdown table."""
    out_json.write_text(json.dumps(doc, indent=1) + "\n")
    fig = figure(doc)
    fig.write_html(out_json.with_suffix(".html"), include_plotlyjs="cdn")
    if args.png:
        write_png(fig, args.png)
    print(markdown(doc))
    return doc


def _lowest(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any] | None:
    """The cheapest row whose test accuracy reaches ``threshold``."""
    hits = [r for r in rows if r["test_acc"] >= threshold]
    return min(hits, key=lambda r: r["macs"]) if hits else None


def headline(
    space: str,
    search: str,
    searched: list[dict[str, Any]],
    baselines: list[dict[str, Any]],
    final: dict[str, Any],
    proxy: ProxyConfig,
) -> dict[str, Any]:
    """The comparison's figures: each point, and the three headline questions answered."""
    cnn = next((b for b in baselines if b["name"] == "paper-cnn"), None)
    figures: dict[str, Any] = {}
    if cnn is not None:
        rivals = [r for r in searched if r["macs"] <= cnn["macs"]]
        best = max(rivals, key=lambda r: r["test_acc"]) if rivals else None
        figures["paper_cnn"] = {"macs": cnn["macs"], "test_acc": cnn["test_acc"]}
        figures["best_searched_at_or_below_cnn_macs"] = best
        figures["beats_cnn_at_or_below_its_macs"] = bool(
            best and best["test_acc"] >= cnn["test_acc"]
        )
    figures["lowest_macs_reaching_94"] = _lowest(searched, 0.94)
    figures["best_front_test_acc"] = (
        max(searched, key=lambda r: r["test_acc"]) if searched else None
    )
    return {
        "space": space,
        "search": search,
        "proxy": proxy.to_dict(),
        "final_protocol": final,
        "searched_front": searched,
        "baselines": baselines,
        "published": PUBLISHED.get(space, []),
        "headline": figures,
    }


def figure(doc: dict[str, Any]) -> go.Figure:
    """Test accuracy against MACs (log axis): retrained front, baselines, published numbers."""
    fig = go.Figure()
    s = doc["searched_front"]
    fig.add_trace(
        go.Scatter(
            x=[r["macs"] for r in s],
            y=[r["test_acc"] for r in s],
            mode="lines+markers",
            name="searched front (retrained)",
            text=[f"trial {r['trial']}: {r['arch_desc']}" for r in s],
        )
    )
    labelled = (
        ("baselines", "baselines (same protocol)", "diamond", "bottom center"),
        ("published", "published", "x", "top center"),
    )
    for key, name, symbol, where in labelled:
        rows = doc[key]
        if rows:
            fig.add_trace(
                go.Scatter(
                    x=[r["macs"] for r in rows],
                    y=[r["test_acc"] for r in rows],
                    mode="markers+text",
                    name=name,
                    text=[r["name"] for r in rows],
                    textposition=where,
                    marker={"symbol": symbol, "size": 10},
                )
            )
    f = doc["final_protocol"]
    fig.update_layout(
        title=f"{doc['space']}: test accuracy against MACs ({f['epochs']} epochs, lr {f['lr']}, "
        f"batch {f['batch_size']}, weight decay {f['weight_decay']})",
        xaxis={"title": "MACs per sample", "type": "log"},
        yaxis={"title": "test accuracy"},
    )
    return fig


def write_png(fig: go.Figure, out: Path, width: int = 900, height: int = 520) -> None:
    """Render ``fig`` to a PNG with headless Chromium (Playwright; plotly.js inlined, offline)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "figure.html"
        fig.update_layout(width=width, height=height)
        fig.write_html(page_file, include_plotlyjs=True, full_html=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": width + 20, "height": height + 20})
                page.goto(page_file.as_uri())
                page.wait_for_selector(".main-svg")
                page.locator(".js-plotly-plot").screenshot(path=str(out))
            finally:
                browser.close()


def markdown(doc: dict[str, Any]) -> str:
    """A Markdown table of every point, cheapest first, for the README."""
    rows = [("searched", f"trial {r['trial']}: {r['arch_desc']}", r) for r in doc["searched_front"]]
    rows += [("baseline", r["name"], r) for r in doc["baselines"]]
    rows += [("published", r["name"], r) for r in doc["published"]]
    lines = ["| kind | network | MACs | params | test acc |", "|---|---|---:|---:|---:|"]
    for kind, label, r in sorted(rows, key=lambda t: t[2]["macs"]):
        params = f"{r['params']:,}" if r.get("params") else ""
        lines.append(f"| {kind} | {label} | {r['macs']:,} | {params} | {r['test_acc']:.1%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
