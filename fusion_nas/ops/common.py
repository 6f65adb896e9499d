"""Pieces shared by the operators: dimension-generic layers, token views, the MLP."""

from __future__ import annotations

import torch
from torch import nn

from fusion_nas.errors import SpaceError


def check_dim(dim: int) -> None:
    """Operators exist for sequences (1) and images (2)."""
    if dim not in (1, 2):
        raise SpaceError(f"dimension {dim!r} is not supported; allowed: 1, 2")


def conv_nd(dim: int) -> type[nn.Module]:
    """``nn.Conv1d`` or ``nn.Conv2d``."""
    check_dim(dim)
    return nn.Conv1d if dim == 1 else nn.Conv2d


def batchnorm_nd(dim: int) -> type[nn.Module]:
    """``nn.BatchNorm1d`` or ``nn.BatchNorm2d``."""
    check_dim(dim)
    return nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, N, C) with N = prod(S)."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(t: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(B, N, C) -> (B, C, *size)."""
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *size)


def channel_view(p: torch.Tensor, dim: int) -> torch.Tensor:
    """Per-channel vector (C,) -> (1, C, 1) or (1, C, 1, 1) to scale a map."""
    return p.view(1, -1, *([1] * dim))


class Mlp(nn.Module):
    """Pre-norm token MLP with residual left to the caller: LN -> Linear -> GELU -> Linear."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        hidden = max(1, int(round(channels * ratio)))
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)
        for fc in (self.fc1, self.fc2):
            nn.init.trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        t = to_tokens(x)  # (B, N, C)
        t = self.fc2(self.act(self.fc1(self.norm(t))))
        return from_tokens(t, tuple(x.shape[2:]))
