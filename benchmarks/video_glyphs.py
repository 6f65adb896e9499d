"""The ``video-glyphs`` dataset: how long it takes to generate, and that time matters in it.

Times :func:`~fusion_nas.training.data.video.make_video_glyphs` for the whole dataset (6000
train + 1200 test clips) at ``--size`` (median of ``--repeat``), then trains three small plain
torch networks with one protocol (Adam, ``--epochs`` epochs, batch 64, on the loader's
train split; early stopping on nothing) and reports their test accuracy:

- ``conv3d``: two 3x3x3 convolutions and a linear head: sees the frame order;
- ``frames_ordered``: a 2-D convolution per frame, features of the T frames concatenated in
  order: sees the frame order too;
- ``frame_average``: the same per-frame convolution, features averaged over the frames before
  the head: ignores the frame order, so it should sit at chance (1/6).

For ``conv3d`` also the accuracy on a frame-shuffled copy of the test clips
(:func:`~fusion_nas.training.data.video.shuffle_frames`): near chance if the order carries the
class. These networks are controls for the dataset, not searched networks.

Writes ``benchmarks/results/video_glyphs.json``. Run:
``OMP_NUM_THREADS=1 python benchmarks/video_glyphs.py`` (a few minutes on one core).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fusion_nas.training.data import load_dataset
from fusion_nas.training.data.video import N_TEST, N_TRAIN, make_video_glyphs, shuffle_frames

RESULTS = Path(__file__).resolve().parent / "results" / "video_glyphs.json"


class Conv3d(nn.Module):
    """(B, 1, T, H, W) -> two 3x3x3 conv blocks -> global pool -> (B, 6)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1),
            nn.BatchNorm3d(width),
            nn.ReLU(),
            nn.MaxPool3d((1, 2, 2)),  # (B, w, T, H/2, W/2)
            nn.Conv3d(width, 2 * width, 3, padding=1),
            nn.BatchNorm3d(2 * width),
            nn.ReLU(),
            nn.AdaptiveMaxPool3d((None, 1, 1)),  # (B, 2w, T, 1, 1): where the glyph is
        )
        self.head = nn.LazyLinear(6)  # over (2w * T): the frame order stays visible

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


class PerFrame(nn.Module):
    """A 2-D conv net on each frame; ``average``: mean over frames, else frames concatenated."""

    def __init__(self, average: bool, width: int = 16) -> None:
        super().__init__()
        self.average = average
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),  # (B*T, 2w, 1, 1)
        )
        self.head = nn.LazyLinear(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, C, H, W)
        f = self.body(frames).reshape(b, t, -1)  # (B, T, 2w)
        return self.head(f.mean(dim=1) if self.average else f.flatten(1))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return float((pred == y).float().mean())


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> float:
    """Adam, batch 64; returns the seconds it took."""
    torch.manual_seed(seed)
    model(x[:2])  # materialise the lazy head
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark with command-line ``argv``; write and return the result."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, nargs=3, default=(8, 16, 16), metavar=("T", "H", "W"))
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-subset", type=int, default=None, help="train on this many clips")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = tuple(args.size)

    gen = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        make_video_glyphs(N_TRAIN, size)
        make_video_glyphs(N_TEST, size, 1)
        gen.append(time.perf_counter() - start)

    splits = load_dataset(
        "video-glyphs",
        kind="video",
        channels=1,
        size=size,
        classes=6,
        train_subset=args.train_subset,
    )
    x, y = splits.train.tensors
    x_test, y_test = splits.test.tensors
    x_shuffled = shuffle_frames(x_test, args.seed)
    rows = {}
    for name, model in (
        ("conv3d", Conv3d()),
        ("frames_ordered", PerFrame(average=False)),
        ("frame_average", PerFrame(average=True)),
    ):
        seconds = train(model, x, y, args.epochs, args.seed)
        rows[name] = {
            "test_acc": round(accuracy(model, x_test, y_test), 4),
            "shuffled_test_acc": round(accuracy(model, x_shuffled, y_test), 4),
            "train_seconds": round(seconds, 1),
        }
        print(name, rows[name], flush=True)
    result = {
        "size": list(size),
        "n_train": len(x),
        "n_test": len(x_test),
        "generate_seconds_median": round(statistics.median(gen), 3),
        "epochs": args.epochs,
        "threads": args.threads,
        "chance": round(1 / 6, 4),
        "networks": rows,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
