"""Memory and data time of a search over a large image folder (uint8 cache, lazy decoding).

Generates a folder of ``--images`` RGB JPEGs of ``--size`` x ``--size`` pixels in 10 classes
(``DIR/train/<class>/*.jpg``, plus one corrupt file that must be skipped), then runs a short
search over all of it (2 trials, 1 epoch, a small network, the whole training split: no
``train_subset``) in a fresh process, and a second process that loads the same folder again.
Each process reports its peak RSS (``VmHWM``) and that of its loader workers; each trial its
training seconds, the seconds spent fetching batches (``TrainResult.data_seconds``) and the
JPEGs it decoded. The first process decodes every file once, into the cache next to the data;
its trials and the second process decode none.

    python benchmarks/data_memory.py --dir /tmp/fnas-jpegs --images 100000 --size 64

Writes ``benchmarks/results/data_memory.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = 10

SPACE = """
name = "rgb{size}"
description = "{size}x{size} RGB images: a small conv network for the memory benchmark"

[input]
kind = "image"
size = [{size}, {size}]
channels = 3
classes = 10

[stem]
width = 8
kernel = 3
stride = 4

[[stage]]
operator = ["conv"]
kernel = [3, 5]
width = 8
"""


def generate(root: Path, n: int, size: int, seed: int = 0) -> float:
    """Write ``n`` JPEGs (quality 75) in ``root/train/<class>/`` and one corrupt file; return
    the seconds it took (0 when the folder is already complete)."""
    import numpy as np
    from PIL import Image

    done = root / "train" / ".complete"
    if done.is_file() and done.read_text() == f"{n} {size}":
        return 0.0
    start = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (S, S) each
    for c in range(CLASSES):
        (root / "train" / f"c{c}").mkdir(parents=True)
    for i in range(n):
        c = i % CLASSES
        # class c: a colour gradient at angle c; noise and a random brightness per image
        angle = np.pi * c / CLASSES
        ramp = np.cos(angle) * xx + np.sin(angle) * yy  # (S, S)
        base = np.stack([ramp, 1 - ramp, 0.5 + 0.5 * np.sin(6 * ramp + c)], axis=-1)
        img = base * rng.uniform(0.5, 1.0) + rng.normal(0, 0.15, (size, size, 3))
        pixels = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "train" / f"c{c}" / f"{i:06d}.jpg", quality=75)
    (root / "train" / "c0" / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    done.write_text(f"{n} {size}")
    seconds = time.perf_counter() - start
    (root / "train" / ".seconds").write_text(f"{seconds:.1f}")
    return seconds


def _vm_hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> dict:
    """One process: a 2-trial search (or, with --load-only, only loading the data)."""
    import torch

    torch.set_num_threads(args.threads)
    from fusion_nas.evaluation import trainer
    from fusion_nas.evaluation.trainer import TrainingEvaluator
    from fusion_nas.model.space import parse_space
    from fusion_nas.search.config import SearchConfig
    from fusion_nas.search.session import run_search
    from fusion_nas.store.store import Store
    from fusion_nas.training.data import dataset_for, decoded_images
    from fusion_nas.training.loop import ProxyConfig

    space = parse_space(SPACE.format(size=args.size))
    dataset = f"folder:{args.dir}"
    proxy = ProxyConfig(epochs=1, batch_size=256)
    start = time.perf_counter()
    splits = dataset_for(dataset, space.source, None, proxy.val_fraction, 0, None)
    out: dict = {
        "load_seconds": round(time.perf_counter() - start, 2),
        "load_decoded": decoded_images(),
        "train": len(splits.train),
        "val": len(splits.val),
        "skipped": splits.skipped,
        "dataset_type": type(splits.train).__name__,
    }
    if not args.load_only:
        trials: list[dict] = []
        train_proxy = trainer.train_proxy

        def recorded(*a, **k):  # the evaluator's train_proxy, timed (this process only)
            before = decoded_images()
            result = train_proxy(*a, **k)
            trials.append(
                {
                    "seconds": round(result.seconds, 2),
                    "data_seconds": round(result.data_seconds, 2),
                    "decoded": decoded_images() - before,
                    "val_acc": result.val_acc,
                }
            )
            return result

        trainer.train_proxy = recorded
        config = SearchConfig(
            name="data-memory",
            space=space,
            dataset=dataset,
            strategy="optuna:random",
            trials=2,
            proxy=proxy,
            latency="off",
        )
        run_search(config, Store.in_memory(), evaluator=TrainingEvaluator())
        out["trials"] = trials
    out["peak_rss_mb"] = round(_vm_hwm_mb(), 1)
    out["peak_rss_loader_workers_mb"] = round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/fnas-jpegs"))
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the search")
    ap.add_argument("--keep-cache", action="store_true", help="reuse a cache of an earlier run")
    ap.add_argument("--out", type=Path, default=RESULTS / "data_memory.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        out = child(args)
        print(json.dumps(out))
        return out
    gen = generate(args.dir, args.images, args.size)
    generated = (args.dir / "train" / ".seconds").read_text() if gen == 0 else f"{gen:.1f}"
    if not args.keep_cache:
        shutil.rmtree(args.dir / ".fusion-nas-cache", ignore_errors=True)
    base = [sys.executable, __file__, "--child", "--dir", str(args.dir), "--size", str(args.size)]
    base += ["--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    runs = {}
    for name, extra in (("first_process", []), ("second_process", [])):
        done = subprocess.run(base + extra, capture_output=True, text=True, env=env, check=False)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, json.dumps(runs[name]), flush=True)
    cache = args.dir / ".fusion-nas-cache"
    result = {
        "images": args.images,
        "size": args.size,
        "threads": args.threads,
        "generate_seconds": float(generated),  # one process, PIL JPEG quality 75
        "cache_mb": round(sum(f.stat().st_size for f in cache.glob("*.npy")) / 2**20, 1),
        "runs": runs,
        "required": "peak RSS < 2000 MB; the second trial and the second process decode no JPEG",
        "passed": all(
            r["peak_rss_mb"] < 2000 and all(t["decoded"] == 0 for t in r.get("trials", []))
            for r in runs.values()
        )
        and runs["second_process"]["load_decoded"] == 0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
