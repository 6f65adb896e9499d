"""Convolution operator: conv(k) -> BatchNorm -> GELU with a residual connection."""

from __future__ import annotations

import torch
from torch import nn

from fusion_nas.errors import SpaceError
from fusion_nas.ops.common import batchnorm_nd, conv_nd
from fusion_nas.ops.registry import register_op


class ConvMixer(nn.Module):
    """Same-padding convolution of odd kernel ``k`` over C channels, then BN and GELU.

    Kaiming (fan-out) initialisation, as recommended for conv layers.
    """

    def __init__(self, dim: int, channels: int, kernel: int) -> None:
        super().__init__()
        if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise SpaceError(f"kernel size {kernel!r} must be an odd positive integer")
        self.conv = conv_nd(dim)(channels, channels, kernel, padding=kernel // 2, bias=False)
        self.norm = batchnorm_nd(dim)(channels)
        self.act = nn.GELU()
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        return self.act(self.norm(self.conv(x)))


@register_op("conv")
class ConvBlock(nn.Module):
    """``x + GELU(BN(conv_k(x)))``: local mixing only, receptive field ``k`` per block."""

    uses = ("kernel",)

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
        self.mixer = ConvMixer(dim, channels, kernel if kernel is not None else 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        return x + self.mixer(x)
