"""The operator configurations shared by the operator and cost tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fusion_nas.model.nets import BlockCfg
from fusion_nas.model.registry import create_op

WINDOW = 4
# Sizes per dimension; (10,), (3,), (7, 5) and (3, 6) are not multiples of the window (4).
SIZES = {1: [(10,), (16,), (3,)], 2: [(7, 5), (8, 8), (3, 6)]}
VARIANTS = ("global", "window", "linear")


@dataclass(frozen=True)
class Cfg:
    """One operator configuration: a block config and the spatial size of its map."""

    block: BlockCfg
    size: tuple[int, ...]

    @property
    def op(self) -> str:
        return self.block.operator

    @property
    def dim(self) -> int:
        return len(self.size)

    @property
    def channels(self) -> int:
        return self.block.width

    @property
    def id(self) -> str:
        b, size = self.block, "x".join(map(str, self.size))
        return (
            f"{b.operator}-{self.dim}d-{size}-c{b.width}-k{b.kernel}-h{b.heads}"
            f"-{b.attention}-r{b.mlp_ratio}"
        )

    def build(self) -> nn.Module:
        return create_op(self.block, self.size)

    def input(self, batch: int = 2) -> torch.Tensor:
        return torch.randn(batch, self.channels, *self.size)


def cfg(op: str, size: tuple[int, ...], channels: int = 8, **fields: object) -> Cfg:
    """``Cfg`` of operator ``op`` at ``size`` with ``channels`` and the window of these tests."""
    return Cfg(BlockCfg(op, channels, window=WINDOW, **fields), size)


def op_configs() -> list[Cfg]:
    """Every operator x 1-D/2-D x kernels, heads, variants and window-padding sizes."""
    out = []
    for dim in (1, 2):
        for i, k in enumerate((1, 3, 5, 7)):
            out.append(cfg("conv", SIZES[dim][i % 3], kernel=k))
        for hi, h in enumerate((1, 2, 4)):
            for vi, v in enumerate(VARIANTS):
                # C = 12 with mlp_ratio 1.3 gives a hidden width that needs rounding (15.6 -> 16).
                c, r = ((8, 2.0), (12, 1.3))[(hi + vi) % 2]
                out.append(
                    cfg(
                        "attention", SIZES[dim][(hi + vi) % 3], c, heads=h, attention=v, mlp_ratio=r
                    )
                )
        fused = [(1, 1, "global"), (3, 2, "window"), (5, 4, "linear"), (7, 2, "window")]
        fused += [(3, 4, "global"), (5, 1, "linear"), (3, 1, "window")]
        for op in ("parallel", "gated"):
            for i, (k, h, v) in enumerate(fused):
                c, r = ((8, 2.0), (12, 1.3))[i % 2]
                out.append(
                    cfg(op, SIZES[dim][i % 3], c, kernel=k, heads=h, attention=v, mlp_ratio=r)
                )
        # Channel attention (squeeze-excitation; C = 3 has one hidden unit) and lean blocks
        # (mlp_ratio 0: no MLP).
        lean = [("attention", 8, 1, 1, "channel", 2.0), ("parallel", 3, 3, 1, "channel", 0)]
        lean += [("gated", 12, 5, 1, "channel", 1.3), ("attention", 8, 1, 2, "global", 0)]
        lean += [("gated", 8, 3, 2, "window", 0), ("parallel", 8, 5, 4, "linear", 0)]
        for i, (op, c, k, h, v, r) in enumerate(lean):
            out.append(cfg(op, SIZES[dim][i % 3], c, kernel=k, heads=h, attention=v, mlp_ratio=r))
        # MobileViT and EfficientFormer blocks (their costs: tests/model/test_mobilevit.py and
        # test_efficientformer.py); (10,), (7, 5) and (3, 6) are not multiples of the patch (2).
        mobile = [("mv2", 8, 3, dict(expand=2.0, act="silu"))]
        mobile += [("mobilevit", 8, 3, dict(heads=2, inner=12, layers=2, act="silu"))]
        mobile += [("mv2", 4, 5, dict(expand=1.5))]
        for i, (op, c, k, fields) in enumerate(mobile):
            out.append(cfg(op, SIZES[dim][i % 3], c, kernel=k, **fields))
        meta = [("pool", 8, 3, dict(layer_scale=1e-5, mlp_ratio=4.0))]
        meta += [("meta3d", 8, 1, dict(heads=2, key_dim=4, attn_ratio=2.0, layer_scale=0.5))]
        meta += [
            ("pool", 8, 5, dict(mlp_ratio=0, layer_scale=0.5)),
            ("meta3d", 8, 1, dict(heads=1, mlp_ratio=0)),
        ]
        for i, (op, c, k, fields) in enumerate(meta):
            out.append(cfg(op, SIZES[dim][(i + 1) % 3], c, kernel=k, **fields))
    return out
