"""Gated fusion (the article's DynamicGate done right): a per-channel gate blends both branches."""

from __future__ import annotations

import torch
from torch import nn

from fusion_nas.ops.attention import AttentionMixer
from fusion_nas.ops.common import Mlp, channel_view
from fusion_nas.ops.conv import ConvMixer
from fusion_nas.ops.parallel import FUSION_INIT
from fusion_nas.ops.registry import register_op


@register_op("gated")
class GatedBlock(nn.Module):
    """``x + s * (g * conv(x) + (1 - g) * attn(x))``, then ``x + mlp(x)``.

    ``g = sigmoid(Linear(C, C)(mean over the spatial axes of x))`` is one gate per sample and
    channel (starts near 0.5); ``s`` is a learned per-channel fusion scale starting at 0.1.
    """

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
        self.gate = nn.Linear(channels, channels)
        self.scale = nn.Parameter(torch.full((channels,), FUSION_INIT))
        self.mlp = Mlp(channels, mlp_ratio)
        nn.init.normal_(self.gate.weight, std=0.02)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        pooled = x.mean(dim=tuple(range(2, x.dim())))  # (B, C): spatial axes only
        g = torch.sigmoid(self.gate(pooled)).view(*pooled.shape, *([1] * self.dim))  # (B, C, 1..)
        fused = g * self.conv(x) + (1.0 - g) * self.attn(x)
        x = x + channel_view(self.scale, self.dim) * fused
        return x + self.mlp(x)
