"""Parallel fusion (the CAN block done right): conv and attention branches on one input."""

from __future__ import annotations

import torch
from torch import nn

from fusion_nas.ops.attention import AttentionMixer
from fusion_nas.ops.common import Mlp, channel_view
from fusion_nas.ops.conv import ConvMixer
from fusion_nas.ops.registry import register_op

FUSION_INIT = 0.1  # fusion weights start small so neither branch dominates early training


@register_op("parallel")
class ParallelBlock(nn.Module):
    """``x + a * conv(x) + b * attn(x)`` with learned per-channel ``a, b``; then ``x + mlp(x)``."""

    uses = ("kernel", "heads", "attention")

    def __init__(
        self,
        dim: int,
        channels: int,
        size: tuple[int, ...],
        *,
        kernel: int | None = None,
        heads: int | None = None,
        attention: str | None = None,
        window: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.conv = ConvMixer(dim, channels, kernel if kernel is not None else 3)
        self.attn = AttentionMixer(dim, channels, size, heads or 1, attention or "global", window)
        self.conv_weight = nn.Parameter(torch.full((channels,), FUSION_INIT))
        self.attn_weight = nn.Parameter(torch.full((channels,), FUSION_INIT))
        self.mlp = Mlp(channels, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        a = channel_view(self.conv_weight, self.dim)
        b = channel_view(self.attn_weight, self.dim)
        x = x + a * self.conv(x) + b * self.attn(x)
        return x + self.mlp(x)
