"""Searched front against hand design on real images: Fashion-MNIST and CIFAR-10 on a CPU.

1. Runs (or resumes) a search of ``--trials`` trials on the dataset's built-in space
   (``fashion-mnist`` or ``cifar10``) with :func:`fusion_nas.search.session.run_search`, on a
   training subset (``--train-per-class``) with a short proxy, under a MAC and a parameter
   budget (CIFAR-10: at most 20M MACs; Fashion-MNIST: under 100k params).
2. Retrains ``--retrain`` front members (within the budgets, spread over the front) from
   scratch on all training data of that subset with one final protocol
   (:class:`fusion_nas.training.protocol.TrainingProtocol`: ``--epochs``, ``--lr``,
   ``--batch-size``, ``--weight-decay``) and tests each once.
3. Trains the baselines (``resnet20``, ``all-conv``, ``all-attention``, ``paper-cnn``; those the
   space offers) with the same protocol.
4. CIFAR-10, ``--tau N``: proxy-trains N networks sampled within the budgets twice, with and
   without augmentation (``--aug-on`` / ``--aug-off``: ProxyConfig fields), retrains them, and
   reports Kendall's tau between the two proxies' rankings and between each proxy and the test
   accuracy, with the mean rank of conv-heavy and attention-heavy networks under each proxy.
5. Writes ``<out>/vision_front_<dataset>.json``, ``.md`` (a table) and ``.html`` (test accuracy
   against MACs, published figures beside). Every finished training is appended to
   ``.runs.jsonl`` and reused by a rerun with the same settings, so a killed run goes on.

Augmentation and other proxy settings go through as :class:`ProxyConfig` fields:
``--augment`` (``crop,flip``, ``crop``, ``flip``, ``none``; default: the dataset's, crop and flip
for CIFAR-10, none for Fashion-MNIST), ``--crop-padding``, ``--cutout``, ``--mixup`` and
``--label-smoothing`` set the fields of those names, ``--proxy-extra KEY=VALUE`` any field (a
field ProxyConfig lacks is refused in one line, naming the fields it has). The final run
trains with what :meth:`TrainingProtocol.schedule` carries over from the proxy: its
augmentation and precision settings.

The CIFAR-10 data is ``../shared/data/cifar10-jpeg.tar.gz`` extracted to ``--data`` (default
``/tmp/cifar10``): a public JPEG (quality 75) re-encoding of CIFAR-10, so absolute accuracies come
out below those of the original data. ``--estimate`` times a few training steps of each kind of
network and prints how long the given settings would take, without training anything.

    python benchmarks/vision_front.py --dataset fashion-mnist --estimate
    python benchmarks/vision_front.py --dataset cifar10 --train-per-class 1000 --trials 40 \\
        --proxy-epochs 3 --epochs 15 --retrain 4 --tau 8 --workers 2
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import gzip
import hashlib
import json
import math
import multiprocessing as mp
import os
import random
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from fusion_nas.analysis import baselines as bl
from fusion_nas.deploy.latency import measure_latency
from fusion_nas.errors import FusionNasError, allowed
from fusion_nas.model.arch import Architecture
from fusion_nas.model.build import build_model
from fusion_nas.model.cost import arch_cost
from fusion_nas.model.space import SearchSpace, load_space, parse_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.store.store import Store, quiet_optuna
from fusion_nas.training.augment import default_augment
from fusion_nas.training.data import FASHION_MNIST_DIR, IDX_FILES, read_idx
from fusion_nas.training.loop import ProxyConfig
from fusion_nas.training.protocol import TrainingProtocol

RESULTS = Path(__file__).parent / "results"
DATASETS = ("fashion-mnist", "cifar10")
CIFAR_DIR = Path("/tmp/cifar10")
JPEG_NOTE = (
    "CIFAR-10 here is a public JPEG (quality 75) re-encoding of the original images, so absolute "
    "accuracies come out below those of the original data."
)
# Per dataset: MAC budget, parameter budget, baselines, published figures (their own training,
# original data; MACs None where the source gives none).
SETTINGS: dict[str, dict[str, Any]] = {
    "fashion-mnist": {
        "max_macs": None,
        "max_params": 100_000,
        "baselines": ("resnet20", "all-conv", "all-attention", "paper-cnn"),
        "published": [
            {"name": "small CNNs under 100k params (published)", "macs": None, "test_acc": 0.925},
            {"name": "Google AutoML (published)", "macs": None, "test_acc": 0.939},
        ],
    },
    "cifar10": {
        "max_macs": 20_000_000,
        "max_params": None,
        "baselines": ("resnet20", "all-conv", "all-attention", "paper-cnn"),
        "published": [
            {"name": "ResNet-20, 182 epochs (published)", "macs": 40_800_000, "test_acc": 0.9125},
            {"name": "CCT-2/3x2, 200 epochs (published)", "macs": 33_000_000, "test_acc": 0.8917},
        ],
    },
}
# ProxyConfig fields the named options set (the augmentation the final run carries over too).
AUG_OPTIONS = ("augment", "crop_padding", "cutout", "mixup", "label_smoothing")


# --------------------------------------------------------------------------- proxy settings


def proxy_fields() -> dict[str, dataclasses.Field]:
    """The fields of :class:`ProxyConfig` in this version, by name."""
    return {f.name: f for f in dataclasses.fields(ProxyConfig)}


def _bool(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "on", "yes", "1"):
        return True
    if low in ("false", "off", "no", "0"):
        return False
    raise FusionNasError(f"{name}={text!r} is not a boolean; allowed: true, false")


def parse_value(name: str, text: str) -> Any:
    """``text`` as a value of ProxyConfig field ``name``, by the type of the field's default
    (an optional field: a number, a boolean or ``none`` where it reads as one, else text; a text
    field such as ``augment`` keeps its text, ``none`` included, for ProxyConfig to check)."""
    field = proxy_fields()[name]
    default = None if field.default is dataclasses.MISSING else field.default
    if str(field.type).startswith("str"):  # "str" or "str | None": augment="none" is a value
        return text
    if text.strip().lower() in ("none", "null"):
        return None
    if isinstance(default, bool):
        return _bool(name, text)
    if isinstance(default, (int, float)):
        kind = type(default)
        try:
            return kind(text)
        except ValueError:
            raise FusionNasError(
                f"{name}={text!r} is not a number; allowed: a {kind.__name__}"
            ) from None
    if isinstance(default, str):
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return _bool(name, text)
    except FusionNasError:
        return text


def parse_extra(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as ProxyConfig fields (checked against this version's fields)."""
    fields, out = proxy_fields(), {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise FusionNasError(f"--proxy-extra {pair!r}: expected KEY=VALUE")
        if key not in fields:
            raise FusionNasError(
                f"ProxyConfig has no field {key!r} in this version; allowed: {allowed(fields)}"
            )
        out[key] = parse_value(key, value)
    return out


def named_options(args: argparse.Namespace) -> list[str]:
    """``--augment`` etc. as ``KEY=VALUE`` pairs (only those given)."""
    return [f"{k}={getattr(args, k)}" for k in AUG_OPTIONS if getattr(args, k) is not None]


def make_proxy(base: dict[str, Any], extra: dict[str, Any]) -> ProxyConfig:
    """A ProxyConfig of ``base`` settings and ``extra`` fields (its own checks apply)."""
    return ProxyConfig(**{**base, **extra})


# --------------------------------------------------------------------------- data


def _subset_dir(dataset: str, per_class: int | None, test_per_class: int | None) -> Path:
    tag = f"{per_class or 'all'}-{test_per_class or 'all'}"
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"vision_front_{dataset}_{tag}"


def cifar_data(root: Path, per_class: int | None, test_per_class: int | None) -> str:
    """``folder:`` dataset of the extracted CIFAR-10 folders, or of a subset: the first
    ``per_class`` (``test_per_class``) files of each class, by name, linked into a folder."""
    if not (root / "train").is_dir():
        raise FusionNasError(
            f"no CIFAR-10 folders in '{root}'; extract them first: mkdir -p {root} && tar -xzf "
            f"../shared/data/cifar10-jpeg.tar.gz -C {root}"
        )
    if per_class is None and test_per_class is None:
        return f"folder:{root}"
    out = _subset_dir("cifar10", per_class, test_per_class)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            target = out / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for f in sorted(class_dir.iterdir())[:n]:
                link = target / f.name
                if not link.exists():
                    link.symlink_to(f.resolve())
    return f"folder:{out}"


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file (uint8), gzipped: magic 0x0000 08 ndim, big-endian dims, the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def fashion_data(root: Path, per_class: int | None, test_per_class: int | None) -> str | None:
    """The idx directory of Fashion-MNIST, or of a subset (the first ``per_class`` images of
    each class, in file order) written next to the system's temporary files."""
    if per_class is None and test_per_class is None:
        return str(root)
    out = _subset_dir("fashion-mnist", per_class, test_per_class)
    if all((out / f"{stem}.gz").is_file() for stem in IDX_FILES):
        return str(out)
    out.mkdir(parents=True, exist_ok=True)
    for (images, labels), n in zip((IDX_FILES[:2], IDX_FILES[2:]), (per_class, test_per_class)):
        x, y = (read_idx(root / f"{stem}.gz") for stem in (images, labels))
        keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:n] for c in np.unique(y)]))
        _write_idx(out / f"{images}.gz", x[keep])
        _write_idx(out / f"{labels}.gz", y[keep])
    return str(out)


# --------------------------------------------------------------------------- ranking


def kendall_tau(a: list[float], b: list[float]) -> float | None:
    """Kendall's tau-b of two score lists (scipy's when installed; else counted exactly)."""
    if len(a) < 2:
        return None
    try:
        from scipy.stats import kendalltau
    except ImportError:  # pragma: no cover - scipy is in the venv here
        kendalltau = None
    if kendalltau is not None:
        tau = kendalltau(a, b).statistic
        return None if tau is None or math.isnan(tau) else float(tau)
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    n0 = concordant + discordant
    denom = math.sqrt((n0 + ties_a) * (n0 + ties_b))
    return (concordant - discordant) / denom if denom else None


def conv_share(arch: Architecture) -> float:
    """Share of the built blocks that are plain convolutions (1: all conv, 0: none)."""
    blocks = [(st.operator, st.depth) for st in arch.stages if st.depth]
    total = sum(d for _, d in blocks)
    return sum(d for op, d in blocks if op == "conv") / total if total else 0.0


def mean_ranks(scores: list[float], heavy: list[bool]) -> dict[str, float | None]:
    """Mean rank (1: best) of conv-heavy and of attention-heavy networks under ``scores``."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    rank = {i: r + 1 for r, i in enumerate(order)}

    def mean(flag: bool) -> float | None:
        rs = [rank[i] for i in range(len(scores)) if heavy[i] == flag]
        return round(sum(rs) / len(rs), 2) if rs else None

    return {"conv_heavy": mean(True), "attention_heavy": mean(False)}


# --------------------------------------------------------------------------- training jobs


def _protocol(job: dict[str, Any]) -> TrainingProtocol:
    """The job's protocol: its proxy with its extra fields; the final schedule keeps the
    proxy's augmentation and precision (:meth:`TrainingProtocol.schedule`)."""
    space = parse_space(job["space_toml"], source=f"<{job['dataset']} space>")
    final = job["final"]
    return TrainingProtocol(
        dataset=job["dataset"],
        space=space,
        proxy=make_proxy(job["proxy"], job["extra"]),
        seed=job["seed"],
        data_dir=job["data_dir"],
        final_lr=final["lr"],
        final_batch_size=final["batch_size"],
        final_weight_decay=final["weight_decay"],
    )


def network(job: dict[str, Any], space: SearchSpace) -> Callable[[], torch.nn.Module]:
    """The builder of the job's network: a zoo member, a baseline or an architecture."""
    if job["baseline"] and job["baseline"].startswith(bl.ZOO_PREFIX):
        (b,) = bl.select_zoo(space, [job["baseline"]])
        return b.build
    if job["baseline"]:
        (b,) = bl.select(space, [job["baseline"]])[0]
        return b.build
    arch = space.validate(Architecture.from_dict(job["arch"]))
    return lambda: build_model(arch, space)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One training, in a one-thread worker: ``final`` (train on all training data, test once)
    or ``proxy`` (the search's proxy score, with ``job["proxy"]`` and ``job["extra"]``)."""
    torch.set_num_threads(1)
    protocol = _protocol(job)
    build = network(job, protocol.space)
    start = time.perf_counter()
    if job["phase"] == "proxy":
        _, result = protocol.proxy_score(build)
        return {**job["row"], "val_acc": result.val_acc, "seconds": round(result.seconds, 1)}
    _, final = protocol.retrain(build, job["final"]["epochs"])
    return {
        **job["row"],
        "test_acc": final.test_acc,
        "train_samples": final.train_samples,
        "test_samples": final.test_samples,
        "seconds": round(time.perf_counter() - start, 1),
    }


def cpu_latency_ms(job: dict[str, Any], space: SearchSpace) -> float:
    """Median CPU forward time (ms) of the job's network, batch 1, one thread, 30 runs."""
    model = network(job, space)()
    record = measure_latency(model, space.input_shape(1), batch_sizes=(1,), warmup=5, runs=30)
    return round(record.points[0].median_ms, 3)


def job_key(job: dict[str, Any]) -> str:
    """What makes two trainings the same: everything in the job but its row's free text."""
    parts = {k: v for k, v in job.items() if k != "row"}
    parts["who"] = job["row"].get("arch_id") or job["row"].get("name")
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_jobs(
    jobs: list[dict[str, Any]], workers: int, cache: Path, runner=run_job
) -> list[dict[str, Any]]:
    """Every job's result, from ``cache`` (JSON lines) where done before, else trained by
    ``runner`` (a module-level function of a job) in ``workers`` one-thread processes (longest
    first) and appended to ``cache``."""
    done: dict[str, dict[str, Any]] = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["key"]] = rec["result"]
    keys = [job_key(j) for j in jobs]
    todo = [(k, j) for k, j in zip(keys, jobs) if k not in done]
    todo.sort(key=lambda kj: -kj[1]["row"].get("macs", 0) * kj[1]["epochs_weight"])
    print(f"{len(jobs) - len(todo)} trainings reused from {cache}; {len(todo)} to run", flush=True)
    if todo:
        ctx = mp.get_context("spawn")  # fresh interpreters, one thread each
        with cf.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx) as ex:
            futures = {ex.submit(runner, j): k for k, j in todo}
            for i, fut in enumerate(cf.as_completed(futures), 1):
                result = fut.result()
                done[futures[fut]] = result
                with cache.open("a") as f:
                    f.write(json.dumps({"key": futures[fut], "result": result}) + "\n")
                score = result.get("test_acc", result.get("val_acc"))
                print(
                    f"[{i}/{len(todo)}] {result['label']} ({result.get('phase')}"
                    f"{' ' + result['proxy'] if 'proxy' in result else ''}) "
                    f"{result.get('macs', 0):,} MACs: {score:.4f} in {result['seconds']} s",
                    flush=True,
                )
    return [{**done[k], **j["row"]} for k, j in zip(keys, jobs)]


# --------------------------------------------------------------------------- networks


def operator_sampler(space: SearchSpace, seed: int):
    """A sampler drawing, per stage, an operator uniformly (the skipped stage counts as one),
    then one of that operator's choices uniformly. Uniform sampling over all choices almost
    never draws a conv stage (a conv has far fewer choices than a fused block), which would
    leave a study of conv-heavy against attention-heavy networks without conv-heavy ones."""
    rng = random.Random(seed)
    groups = []
    for spec in space.stages:
        by_op: dict[str, list] = {}
        for choice in spec.iter_options():
            by_op.setdefault(choice.operator, []).append(choice)
        groups.append(list(by_op.values()))

    def draw() -> Architecture:
        return Architecture(space.name, tuple(rng.choice(rng.choice(g)) for g in groups))

    return draw


def sample_within(
    space: SearchSpace, n: int, max_macs: int | None, max_params: int | None, seed: int
) -> list[Architecture]:
    """``n`` distinct architectures within the budgets (:func:`operator_sampler`), half of
    them conv-heavy (more than half of the blocks plain conv), half not, where the draw allows."""
    draw = operator_sampler(space, seed)
    picked: dict[str, Architecture] = {}
    want = {True: (n + 1) // 2, False: n // 2}
    for _ in range(200 * max(1, n)):
        if len(picked) >= n:
            break
        arch = draw()
        heavy = conv_share(arch) > 0.5
        if arch.arch_id in picked or want[heavy] <= 0:
            continue
        cost = arch_cost(arch, space)
        if (max_macs and cost.macs > max_macs) or (max_params and cost.params > max_params):
            continue
        picked[arch.arch_id] = arch
        want[heavy] -= 1
    return list(picked.values())


def arch_row(label: str, arch: Architecture, space: SearchSpace, **more: Any) -> dict[str, Any]:
    cost = arch_cost(arch, space)
    return {
        "label": label,
        "arch_id": arch.arch_id,
        "arch_desc": arch.describe(),
        "macs": cost.macs,
        "params": cost.params,
        "conv_share": round(conv_share(arch), 3),
        **more,
    }


def front_members(store: Store, name: str, k: int, caps: dict[str, int | None]) -> list[dict]:
    """Up to ``k`` complete front members within the budgets, cheapest to dearest, spread
    evenly over the front (both ends kept)."""
    df = store.trials(name)
    front = df[df["on_front"]].sort_values("macs")
    if caps["max_macs"]:
        front = front[front["macs"] <= caps["max_macs"]]
    if caps["max_params"]:
        front = front[front["params"] <= caps["max_params"]]
    if len(front) > k:
        step = (len(front) - 1) / max(1, k - 1)
        front = front.iloc[sorted({round(i * step) for i in range(k)})]
    return [
        {"number": int(r.number), "arch": r.arch, "val_acc": float(r.val_acc)}
        for r in front.itertuples()
    ]


# --------------------------------------------------------------------------- estimate


def images_per_second(build, space: SearchSpace, batch: int, steps: int = 3) -> float:
    """Training images per second of a model on one thread (AdamW steps on random data)."""
    torch.manual_seed(0)
    model = build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(space.input_shape(batch))
    y = torch.randint(0, space.classes, (batch,))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def estimate(args: argparse.Namespace, space: SearchSpace, caps: dict, n_train: int) -> dict:
    """Seconds the settings would take on this machine, from timed training steps."""
    torch.set_num_threads(1)
    batch = args.batch_size
    sampled = sample_within(space, 4, caps["max_macs"], caps["max_params"], args.seed)
    ips_search = [
        images_per_second(lambda a=a: build_model(a, space), space, batch) for a in sampled
    ]
    chosen, _ = bl.select(space, list(args.baselines))
    ips_base = {b.name: images_per_second(b.build, space, batch) for b in chosen}
    mean_ips = len(ips_search) / sum(1 / v for v in ips_search)  # harmonic: mean time
    n_proxy = min(args.proxy_subset or n_train, int(n_train * (1 - 0.2)))
    # trained trials: the share of the space within the budgets, at least a third of them
    trained = args.trials * max(1 / 3, args.feasible_share)
    work = {
        "search": trained * n_proxy * args.proxy_epochs / mean_ips,
        "front": args.retrain * n_train * args.epochs / mean_ips,
        "baselines": sum(n_train * args.epochs / v for v in ips_base.values()),
        "tau": args.tau * (2 * n_proxy * args.proxy_epochs + n_train * args.epochs) / mean_ips,
    }
    workers = max(1, args.workers)
    out = {
        "images_per_second_sampled": [round(v, 1) for v in ips_search],
        "images_per_second_baselines": {k: round(v, 1) for k, v in ips_base.items()},
        "seconds_one_thread": {k: round(v) for k, v in work.items()},
        "workers": workers,
        "minutes_wall_estimate": round(sum(work.values()) / workers / 60, 1),
    }
    return out


# --------------------------------------------------------------------------- report


def figure(doc: dict[str, Any]) -> go.Figure:
    """Test accuracy against MACs (log axis): front, baselines, published figures."""
    fig = go.Figure()
    front = doc["searched_front"]
    fig.add_trace(
        go.Scatter(
            x=[r["macs"] for r in front],
            y=[r["test_acc"] for r in front],
            mode="lines+markers",
            name="searched front (retrained)",
            text=[f"{r['label']}: {r['arch_desc']}" for r in front],
        )
    )
    if doc["baselines"]:
        rows = doc["baselines"]
        fig.add_trace(
            go.Scatter(
                x=[r["macs"] for r in rows],
                y=[r["test_acc"] for r in rows],
                mode="markers+text",
                name="baselines (same protocol)",
                text=[r["label"] for r in rows],
                textposition="bottom center",
                marker={"symbol": "diamond", "size": 10},
            )
        )
    if doc.get("tau_study"):
        rows = doc["tau_study"]["networks"]
        fig.add_trace(
            go.Scatter(
                x=[r["macs"] for r in rows],
                y=[r["test_acc"] for r in rows],
                mode="markers",
                name="sampled (tau study)",
                text=[r["arch_desc"] for r in rows],
                marker={"symbol": "circle-open", "size": 8},
            )
        )
    placed = [r for r in doc["published"] if r["macs"]]
    if placed:
        fig.add_trace(
            go.Scatter(
                x=[r["macs"] for r in placed],
                y=[r["test_acc"] for r in placed],
                mode="markers+text",
                name="published (own schedules)",
                text=[r["name"] for r in placed],
                textposition="top center",
                marker={"symbol": "x", "size": 10},
            )
        )
    for r in doc["published"]:
        if not r["macs"]:
            fig.add_hline(y=r["test_acc"], line_dash="dot", annotation_text=r["name"])
    f = doc["final_protocol"]
    fig.update_layout(
        title=f"{doc['dataset']}: test accuracy against MACs ({f['epochs']} epochs, lr "
        f"{f['lr']}, batch {f['batch_size']}, {doc['train_samples']:,} training images)",
        xaxis={"title": "MACs per sample", "type": "log"},
        yaxis={"title": "test accuracy"},
    )
    if doc.get("note"):
        fig.add_annotation(
            text=doc["note"], xref="paper", yref="paper", x=0, y=-0.18, showarrow=False
        )
    return fig


def markdown(doc: dict[str, Any]) -> str:
    """The comparison as a Markdown table, cheapest first, with the notes under it."""
    rows = [("searched", f"{r['label']}: {r['arch_desc']}", r) for r in doc["searched_front"]]
    rows += [("baseline", f"{r['label']}: {r['arch_desc']}", r) for r in doc["baselines"]]
    rows += [("published", r["name"], r) for r in doc["published"]]
    lines = [
        f"# {doc['dataset']}: searched front against baselines",
        "",
        "| kind | network | MACs | params | proxy val acc | test acc | CPU ms, batch 1 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for kind, label, r in sorted(rows, key=lambda t: t[2]["macs"] or 0):
        macs = f"{r['macs']:,}" if r.get("macs") else ""
        params = f"{r['params']:,}" if r.get("params") else ""
        val = f"{r['val_acc']:.1%}" if r.get("val_acc") is not None else ""
        ms = f"{r['latency_ms']:.2f}" if r.get("latency_ms") is not None else ""
        test = f"{r['test_acc']:.1%}"
        lines.append(f"| {kind} | {label} | {macs} | {params} | {val} | {test} | {ms} |")
    f = doc["final_protocol"]
    lines += [
        "",
        f"Final protocol: {f['epochs']} epochs, AdamW lr {f['lr']}, batch {f['batch_size']}, "
        f"weight decay {f['weight_decay']}, augmentation {f['augment']} (crop padding "
        f"{f['crop_padding']}, cutout {f['cutout']}, mixup {f['mixup']}, label smoothing "
        f"{f['label_smoothing']}), {f['precision']}, other proxy fields "
        f"{ {k: v for k, v in doc['extra'].items() if k not in f} or 'none' }; trained on "
        f"{doc['train_samples']:,} images, tested on {doc['test_samples']:,}.",
    ]
    if doc.get("tau_study"):
        t = doc["tau_study"]
        lines += [
            "",
            f"Kendall tau over {len(t['networks'])} sampled networks: proxies "
            f"{t['tau_on_off']}, on/test {t['tau_on_test']}, off/test {t['tau_off_test']}; "
            f"mean ranks {t['mean_ranks']}.",
        ]
    if doc.get("note"):
        lines += ["", doc["note"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument("--data", type=Path, default=None, help="CIFAR-10 root or idx directory")
    p.add_argument("--train-per-class", type=int, default=None, help="training images per class")
    p.add_argument("--test-per-class", type=int, default=None, help="test images per class")
    p.add_argument("--name", default=None, help="search name (default: vision-<dataset>)")
    p.add_argument("--store", default=None, help="store URL (default: the project's store)")
    p.add_argument("--strategy", default="optuna:tpe")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--proxy-epochs", type=int, default=3)
    p.add_argument("--proxy-lr", type=float, default=ProxyConfig().lr)
    p.add_argument("--proxy-subset", type=int, default=None, help="proxy training images")
    p.add_argument("--batch-size", type=int, default=128, help="proxy and final batch size")
    p.add_argument("--max-macs", type=int, default=-1, help="budget (-1: dataset's, 0: none)")
    p.add_argument("--max-params", type=int, default=-1, help="budget (-1: dataset's, 0: none)")
    p.add_argument("--retrain", type=int, default=4, help="front members to retrain")
    p.add_argument("--epochs", type=int, default=15, help="final protocol: epochs")
    p.add_argument("--lr", type=float, default=1e-2, help="final protocol: peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05, help="final protocol: decay")
    p.add_argument("--baselines", default=None, help="comma-separated (default: dataset's)")
    p.add_argument("--space", default=None, help="search space (default: the dataset's)")
    p.add_argument("--zoo", action="store_true", help="also train the space's zoo members")
    p.add_argument("--start-from", default="", help="zoo members queued as the first trials")
    p.add_argument("--tag", default="", help="suffix of the output files")
    p.add_argument("--latency", action="store_true", help="CPU latency, batch 1, of every row")
    for name in AUG_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", default=None, help=f"ProxyConfig.{name}")
    p.add_argument("--proxy-extra", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tau", type=int, default=0, help="networks of the augmentation tau study")
    p.add_argument("--aug-on", action="append", default=None, metavar="KEY=VALUE")
    p.add_argument("--aug-off", action="append", default=None, metavar="KEY=VALUE")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--estimate", action="store_true", help="time the settings, train nothing")
    p.add_argument("--feasible-share", type=float, default=0.5, help="for --estimate")
    args = p.parse_args(argv)
    defaults = SETTINGS[args.dataset]
    args.baselines = tuple(
        n.strip() for n in (args.baselines or ",".join(defaults["baselines"])).split(",")
    )
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Search, retrain the front and the baselines, write the comparison; returns its JSON."""
    args = parse_args(argv)
    quiet_optuna()
    settings = SETTINGS[args.dataset]
    caps = {
        "max_macs": settings["max_macs"] if args.max_macs < 0 else (args.max_macs or None),
        "max_params": settings["max_params"] if args.max_params < 0 else (args.max_params or None),
    }
    space = load_space(args.space or args.dataset)
    extra = parse_extra(named_options(args) + args.proxy_extra)
    aug_on = parse_extra(args.aug_on or ["augment=crop,flip"]) if args.tau else {}
    aug_off = parse_extra(args.aug_off or ["augment=none"]) if args.tau else {}
    if args.dataset == "cifar10":
        data_dir = None
        dataset = cifar_data(args.data or CIFAR_DIR, args.train_per_class, args.test_per_class)
        n_train = 10 * (args.train_per_class or 5000)
    else:
        data_dir = fashion_data(
            args.data or FASHION_MNIST_DIR, args.train_per_class, args.test_per_class
        )
        dataset = "fashion-mnist"
        n_train = 10 * (args.train_per_class or 6000)
    base = {
        "epochs": args.proxy_epochs,
        "lr": args.proxy_lr,
        "batch_size": args.batch_size,
        "train_subset": args.proxy_subset,
    }
    proxy = make_proxy(base, extra)
    if args.estimate:
        est = estimate(args, space, caps, n_train)
        print(json.dumps(est, indent=1))
        return est
    final = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "weight_decay": args.weight_decay,
    }
    name = args.name or f"vision-{args.dataset}"
    store = Store(args.store)
    config = SearchConfig(
        space=space,
        dataset=dataset,
        strategy=args.strategy,
        trials=args.trials,
        proxy=proxy,
        workers=args.workers,
        seed=args.seed,
        name=name,
        data_dir=data_dir,
        max_flops=caps["max_macs"],
        max_params=caps["max_params"],
        latency="off",
        start_from=tuple(n for n in args.start_from.split(",") if n),
    )
    start = time.perf_counter()
    run_search(config, store)
    search_seconds = time.perf_counter() - start
    common = {
        "dataset": dataset,
        "data_dir": data_dir,
        "space_toml": space.source,
        "proxy": base,
        "extra": extra,
        "seed": args.seed,
        "final": final,
        "epochs_weight": args.epochs,
    }
    jobs = []
    for m in front_members(store, name, args.retrain, caps):
        arch = Architecture.from_dict(m["arch"])
        row = arch_row(f"trial {m['number']}", arch, space, val_acc=m["val_acc"], kind="front")
        jobs.append({**common, "phase": "final", "baseline": None, "arch": m["arch"], "row": row})
    chosen, skipped = bl.select(space, list(args.baselines))
    chosen += bl.select_zoo(space) if args.zoo else []
    for b in chosen:
        row = {"label": b.name, "arch_desc": b.describe(), "macs": b.macs, "params": b.params}
        row["kind"] = "baseline"
        jobs.append({**common, "phase": "final", "baseline": b.name, "arch": None, "row": row})
    tau_archs = sample_within(space, args.tau, caps["max_macs"], caps["max_params"], args.seed)
    for i, arch in enumerate(tau_archs):
        row = arch_row(f"sample {i}", arch, space, kind="tau")
        a = {**common, "baseline": None, "arch": arch.to_dict()}
        jobs.append({**a, "phase": "final", "extra": {**extra, **aug_on}, "row": row})
        for tag, setting in (("on", aug_on), ("off", aug_off)):
            jobs.append(
                {
                    **a,
                    "phase": "proxy",
                    "extra": {**extra, **setting},
                    "epochs_weight": args.proxy_epochs,
                    "row": {**row, "proxy": tag},
                }
            )
    for j in jobs:
        j["row"]["phase"] = j["phase"]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"vision_front_{args.dataset}{args.tag}"
    start = time.perf_counter()
    results = run_jobs(jobs, args.workers, stem.with_suffix(".runs.jsonl"))
    train_seconds = time.perf_counter() - start
    front = [r for r in results if r.get("kind") == "front"]
    # What the final run carries over from the proxy (augment None: the dataset's default).
    carried = {k: getattr(proxy, k) for k in (*AUG_OPTIONS, "precision")}
    carried["augment"] = proxy.augment or default_augment(dataset)
    base_rows = [r for j, r in zip(jobs, results) if j["baseline"]]
    if args.latency:  # after training, one thread, so the trainings do not disturb it
        for j, r in zip(jobs, results):
            if j["phase"] == "final" and "latency_ms" not in r:
                r["latency_ms"] = cpu_latency_ms(j, space)
    doc: dict[str, Any] = {
        "dataset": args.dataset,
        "data": dataset if data_dir is None else data_dir,
        "space": space.name,
        "search": name,
        "strategy": args.strategy,
        "trials": args.trials,
        "budgets": caps,
        "proxy": proxy.to_dict(),
        "extra": extra,
        "final_protocol": {**final, **carried},
        "train_samples": next((r["train_samples"] for r in results if "train_samples" in r), 0),
        "test_samples": next((r["test_samples"] for r in results if "test_samples" in r), 0),
        "searched_front": sorted(front, key=lambda r: r["macs"]),
        "baselines": sorted(base_rows, key=lambda r: r["macs"]),
        "unavailable_baselines": {u.name: u.reason for u in skipped},
        "published": settings["published"],
        "seconds": {"search": round(search_seconds), "training": round(train_seconds)},
        "workers": args.workers,
        "threads_per_training": 1,
        "torch": torch.__version__,
        "note": JPEG_NOTE if args.dataset == "cifar10" else "",
    }
    if tau_archs:
        doc["tau_study"] = tau_study(results, aug_on, aug_off)
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    figure(doc).write_html(stem.with_suffix(".html"), include_plotlyjs="cdn")
    print(markdown(doc))
    print(f"wrote {stem}.json, .md, .html", flush=True)
    return doc


def tau_study(results: list[dict[str, Any]], on: dict, off: dict) -> dict[str, Any]:
    """Kendall tau of the proxies with and without augmentation, and of each with the test
    accuracy, over the sampled networks; mean ranks of conv- and attention-heavy networks."""
    nets: dict[str, dict[str, Any]] = {}
    for r in results:
        if r.get("kind") != "tau":
            continue
        n = nets.setdefault(r["arch_id"], {k: r[k] for k in ("arch_id", "arch_desc", "macs")})
        n.update(params=r["params"], conv_share=r["conv_share"])
        if r["phase"] == "final":
            n["test_acc"] = r["test_acc"]
        else:
            n[f"val_acc_{r['proxy']}"] = r["val_acc"]
    rows = list(nets.values())
    on_s, off_s = [r["val_acc_on"] for r in rows], [r["val_acc_off"] for r in rows]
    test = [r["test_acc"] for r in rows]
    heavy = [r["conv_share"] > 0.5 for r in rows]
    return {
        "aug_on": on,
        "aug_off": off,
        "networks": rows,
        "tau_on_off": kendall_tau(on_s, off_s),
        "tau_on_test": kendall_tau(on_s, test),
        "tau_off_test": kendall_tau(off_s, test),
        "mean_ranks": {
            "proxy_on": mean_ranks(on_s, heavy),
            "proxy_off": mean_ranks(off_s, heavy),
            "test": mean_ranks(test, heavy),
        },
    }


if __name__ == "__main__":
    try:
        main()
    except FusionNasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
