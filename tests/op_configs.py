"""The operator configurations shared by the operator and cost tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fusion_nas.ops import create_op

WINDOW = 4
# Sizes per dimension; (10,), (3,), (7, 5) and (3, 6) are not multiples of the window (4).
SIZES = {1: [(10,), (16,), (3,)], 2: [(7, 5), (8, 8), (3, 6)]}
VARIANTS = ("global", "window", "linear")


@dataclass(frozen=True)
class Cfg:
    """One operator configuration."""

    op: str
    dim: int
    size: tuple[int, ...]
    channels: int = 8
    kernel: int | None = None
    heads: int | None = None
    attention: str | None = None
    mlp_ratio: float = 2.0

    @property
    def id(self) -> str:
        size = "x".join(map(str, self.size))
        return (
            f"{self.op}-{self.dim}d-{size}-c{self.channels}-k{self.kernel}-h{self.heads}"
            f"-{self.attention}-r{self.mlp_ratio}"
        )

    def build(self) -> nn.Module:
        return create_op(
            self.op,
            self.dim,
            self.channels,
            self.size,
            kernel=self.kernel,
            heads=self.heads,
            attention=self.attention,
            window=WINDOW,
            mlp_ratio=self.mlp_ratio,
        )

    def input(self, batch: int = 2) -> torch.Tensor:
        return torch.randn(batch, self.channels, *self.size)


def op_configs() -> list[Cfg]:
    """Every operator x 1-D/2-D x kernels, heads, variants and window-padding sizes."""
    out = []
    for dim in (1, 2):
        for i, k in enumerate((1, 3, 5, 7)):
            out.append(Cfg("conv", dim, SIZES[dim][i % 3], kernel=k))
        for hi, h in enumerate((1, 2, 4)):
            for vi, v in enumerate(VARIANTS):
                # C = 12 with mlp_ratio 1.3 gives a hidden width that needs rounding (15.6 -> 16).
                c, r = ((8, 2.0), (12, 1.3))[(hi + vi) % 2]
                out.append(Cfg("attention", dim, SIZES[dim][(hi + vi) % 3], c, None, h, v, r))
        fused = [(1, 1, "global"), (3, 2, "window"), (5, 4, "linear"), (7, 2, "window")]
        fused += [(3, 4, "global"), (5, 1, "linear"), (3, 1, "window")]
        for op in ("parallel", "gated"):
            for i, (k, h, v) in enumerate(fused):
                c, r = ((8, 2.0), (12, 1.3))[i % 2]
                out.append(Cfg(op, dim, SIZES[dim][i % 3], c, k, h, v, r))
    return out
