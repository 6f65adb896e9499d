"""Images per second of the project's trainer against a plain PyTorch loop, side by side.

Both train the same network (built from the same space and seed) on the same generated
dataset of 32x32 RGB uint8 images with the same augmentation (random crop with 4 pixels of
padding and horizontal flip) and the same optimiser and schedule (AdamW, warm-up + cosine):

- ``trainer``: :func:`fusion_nas.training.loop.train_proxy` on an
  :class:`~fusion_nas.training.data.ArrayImages` (uint8 rows gathered per batch, normalised and
  augmented as one batch on the device: :mod:`fusion_nas.training.augment`), no validation;
- ``plain``: a hand-written loop: a random permutation, ``pixels[idx]`` to float, normalise,
  pad, then random crop and flip by two ``gather`` s, forward, backward, step.

The two alternate, ``--repeats`` times each, so a busy machine slows both alike; the median
images per second of each and their ratio (trainer / plain; required >= 0.9) are reported.

    python benchmarks/throughput.py --images 5000 --epochs 2 --repeats 3 --threads 1

Writes ``benchmarks/results/throughput.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fusion_nas.model.build import build_model
from fusion_nas.model.space import parse_space
from fusion_nas.training.data import ArrayImages
from fusion_nas.training.data.images import pixel_stats
from fusion_nas.training.loop import ProxyConfig, train_proxy

RESULTS = Path(__file__).resolve().parent / "results"

SPACE = """
name = "rgb32"
description = "32x32 RGB: a conv stage, then an attention stage"

[input]
kind = "image"
size = [32, 32]
channels = 3
classes = 10

[stem]
width = 16
kernel = 3
stride = 2

[[stage]]
operator = ["conv"]
kernel = [3]
width = 32

[[stage]]
operator = ["attention"]
attention = ["global"]
heads = [2]
width = 32
downsample = true
"""


def make_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uint8 RGB 32x32 images ``(N, 3, 32, 32)`` in 10 classes and their labels."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    angle = math.pi * y.float() / 10
    ramp = torch.cos(angle)[:, None, None] * xx + torch.sin(angle)[:, None, None] * yy  # (N, H, W)
    base = torch.stack([ramp, 32 - ramp, 16 + 8 * torch.sin(ramp / 4)], dim=1) * 6
    noise = torch.randn(n, 3, 32, 32, generator=gen) * 30
    return (base + noise).clamp(0, 255).to(torch.uint8), y


def plain_loop(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    proxy: ProxyConfig,
    seed: int,
) -> float:
    """Train ``model`` by hand for ``proxy.epochs``; return the seconds it took."""
    start = time.perf_counter()
    mean, std = pixel_stats(pixels)
    n, b, pad = len(labels), proxy.batch_size, proxy.crop_padding
    steps = math.ceil(n / b) * proxy.epochs
    warmup = max(1, round(proxy.warmup_epochs * math.ceil(n / b)))
    opt = torch.optim.AdamW(model.parameters(), lr=proxy.lr, weight_decay=proxy.weight_decay)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    gen = torch.Generator().manual_seed(seed)
    ar = torch.arange(32)
    model.train()
    for _ in range(proxy.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, b):
            idx = order[i : i + b]
            x = pixels[idx].float().div_(255.0).sub_(mean).div_(std)  # (B, 3, 32, 32)
            k = len(idx)
            padded = F.pad(x, (pad, pad, pad, pad))
            dy = torch.randint(0, 2 * pad + 1, (k,), generator=gen)
            dx = torch.randint(0, 2 * pad + 1, (k,), generator=gen)
            rows = (dy[:, None] + ar)[:, None, :, None].expand(k, 3, 32, 32 + 2 * pad)
            x = padded.gather(2, rows)
            flip = torch.rand(k, generator=gen) < 0.5  # flipped: the columns run backwards
            cols = dx[:, None] + torch.where(flip[:, None], 31 - ar, ar)  # (B, 32)
            x = x.gather(3, cols[:, None, None, :].expand(k, 3, 32, 32))
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    space = parse_space(SPACE)
    arch = space.sample(0)
    pixels, labels = make_data(args.images)
    mean, std = pixel_stats(pixels)
    data = ArrayImages(pixels, labels, mean, std, 3, natural=True)  # as cifar10:PATH loads
    proxy = ProxyConfig(epochs=args.epochs, batch_size=args.batch_size, augment="crop,flip")

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(arch, space)

    # warm-up, untimed: the first optimiser step and forward of a process pay one-time costs
    warm = ProxyConfig(epochs=1, batch_size=args.batch_size, augment="crop,flip")
    warm_n = min(256, args.images)
    train_proxy(model(), data.subset(torch.arange(warm_n)), None, warm)
    plain_loop(model(), pixels[:warm_n], labels[:warm_n], warm, seed=0)
    seconds: dict[str, list[float]] = {"trainer": [], "plain": []}
    data_seconds = []
    for r in range(args.repeats):  # alternating which goes first
        for which in ("trainer", "plain") if r % 2 == 0 else ("plain", "trainer"):
            if which == "trainer":
                result = train_proxy(model(), data, None, proxy, seed=r)
                seconds["trainer"].append(result.seconds)
                data_seconds.append(result.data_seconds)
            else:
                seconds["plain"].append(plain_loop(model(), pixels, labels, proxy, seed=r))
        print(r, {k: round(v[-1], 2) for k, v in seconds.items()}, flush=True)
    images = args.images * args.epochs
    ips = {k: images / statistics.median(v) for k, v in seconds.items()}
    # each pair ran back to back under the same load: their ratio is the least noisy figure
    paired = [p / t for t, p in zip(seconds["trainer"], seconds["plain"])]
    result = {
        "images": args.images,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "network": arch.describe(),
        "augment": "crop (padding 4) + flip",
        "seconds": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
        "trainer_data_seconds": [round(s, 3) for s in data_seconds],
        "images_per_s": {k: round(v, 1) for k, v in ips.items()},
        "ratio": round(statistics.median(paired), 3),
        "ratio_of_medians": round(ips["trainer"] / ips["plain"], 3),
        "ratio_of_best": round(min(seconds["plain"]) / min(seconds["trainer"]), 3),
        "ratio_per_pair": [round(r, 3) for r in paired],
        "required": "ratio (median over back-to-back pairs of plain / trainer seconds) >= 0.9",
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), CPU",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
