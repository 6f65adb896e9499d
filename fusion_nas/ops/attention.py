"""Self-attention operator over the tokens of a map, with three variants.

- ``global``: every token attends to every token (cost quadratic in tokens);
- ``window``: tokens attend within non-overlapping windows of ``window`` tokens per axis
  (Swin-style); the map is zero-padded up to a multiple of the window and padded keys are masked;
- ``linear``: kernelised attention ``phi(Q) (phi(K)^T V)`` with ``phi = elu + 1`` (the linear
  transformer feature map of the Performer family), cost linear in tokens.

Tokens carry a learned absolute position embedding, so a network of attention stages alone still
knows where each token is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fusion_nas.errors import SpaceError, allowed
from fusion_nas.ops.common import Mlp, check_dim, from_tokens, to_tokens
from fusion_nas.ops.registry import register_op

ATTENTION_VARIANTS = ("global", "window", "linear")


def window_shape(size: tuple[int, ...], window: int) -> tuple[int, ...]:
    """Window extent per axis: ``window``, or the whole axis when the axis is shorter."""
    return tuple(min(window, s) for s in size)


def padded_size(size: tuple[int, ...], window: int) -> tuple[int, ...]:
    """Axis lengths rounded up to a multiple of the window extent."""
    return tuple(math.ceil(s / w) * w for s, w in zip(size, window_shape(size, window)))


def _partition(x: torch.Tensor, win: tuple[int, ...]) -> torch.Tensor:
    """(B, *P, D) with P divisible by win -> (B * nW, prod(win), D)."""
    B, D = x.shape[0], x.shape[-1]
    if len(win) == 1:
        (w,) = win
        return x.reshape(B * (x.shape[1] // w), w, D)
    (wh, ww), (H, W) = win, x.shape[1:3]
    x = x.reshape(B, H // wh, wh, W // ww, ww, D).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, D)


def _merge(x: torch.Tensor, win: tuple[int, ...], padded: tuple[int, ...], B: int) -> torch.Tensor:
    """Inverse of :func:`_partition`: (B * nW, prod(win), D) -> (B, *padded, D)."""
    D = x.shape[-1]
    if len(win) == 1:
        return x.reshape(B, padded[0], D)
    (wh, ww), (H, W) = win, padded
    x = x.reshape(B, H // wh, W // ww, wh, ww, D).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, D)


class AttentionMixer(nn.Module):
    """Position embedding + LayerNorm + multi-head self-attention on a (B, C, *S) map.

    Returns the attention output (after the output projection), without the residual.
    Xavier initialisation for the query/key/value and output projections.
    """

    def __init__(
        self, dim: int, channels: int, size: tuple[int, ...], heads: int, variant: str, window: int
    ) -> None:
        super().__init__()
        check_dim(dim)
        if variant not in ATTENTION_VARIANTS:
            raise SpaceError(
                f"unknown attention variant {variant!r}; allowed: {allowed(ATTENTION_VARIANTS)}"
            )
        if not isinstance(heads, int) or heads < 1 or channels % heads:
            raise SpaceError(f"heads {heads!r} must be a positive divisor of width {channels}")
        if len(size) != dim:
            raise SpaceError(f"size {size!r} does not have {dim} axes")
        self.size, self.heads, self.variant, self.window = tuple(size), heads, variant, window
        self.pos = nn.Parameter(torch.zeros(1, channels, *size))
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.trunc_normal_(self.pos, std=0.02)
        for chunk in self.qkv.weight.data.chunk(3, dim=0):  # query, key, value: (C, C) each
            nn.init.xavier_uniform_(chunk)
        nn.init.zeros_(self.qkv.bias)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B', N, C) -> (B', heads, N, C // heads)."""
        Bp, N, C = t.shape
        return t.reshape(Bp, N, self.heads, C // self.heads).transpose(1, 2)

    def _global(self, qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = (self._heads(t) for t in qkv.chunk(3, dim=-1))  # (B, h, N, hd)
        o = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, hd)
        return o.transpose(1, 2).flatten(2)  # (B, N, C)

    def _linear(self, qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = (self._heads(t) for t in qkv.chunk(3, dim=-1))  # (B, h, N, hd)
        q, k = F.elu(q) + 1.0, F.elu(k) + 1.0  # positive features phi(.)
        kv = torch.matmul(k.transpose(-2, -1), v)  # (B, h, hd, hd)
        num = torch.matmul(q, kv)  # (B, h, N, hd)
        den = torch.matmul(q, k.sum(dim=2, keepdim=True).transpose(-2, -1))  # (B, h, N, 1)
        return (num / (den + 1e-6)).transpose(1, 2).flatten(2)  # (B, N, C)

    def _windowed(self, qkv: torch.Tensor) -> torch.Tensor:
        B, N, C3 = qkv.shape
        win = window_shape(self.size, self.window)
        padded = padded_size(self.size, self.window)
        grid = qkv.reshape(B, *self.size, C3)  # (B, *S, 3C)
        pad = [p - s for s, p in zip(self.size, padded)]
        mask = None
        if any(pad):
            # F.pad takes (last axis first) pairs; channels last, so skip it with (0, 0).
            spec = [0, 0]
            for extra in reversed(pad):
                spec += [0, extra]
            grid = F.pad(grid, spec)
            valid = torch.zeros(1, *padded, 1, dtype=torch.bool, device=qkv.device)
            valid[(slice(None), *(slice(0, s) for s in self.size))] = True
            # (nW, 1, 1, T): True where the key is a real token, broadcast over heads and queries.
            mask = _partition(valid, win).squeeze(-1)[:, None, None, :]
        windows = _partition(grid, win)  # (B * nW, T, 3C), T = prod(win)
        q, k, v = (self._heads(t) for t in windows.chunk(3, dim=-1))  # (B * nW, h, T, hd)
        if mask is not None:
            mask = mask.repeat(B, 1, 1, 1)  # (B * nW, 1, 1, T)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B * nW, h, T, hd)
        o = _merge(o.transpose(1, 2).flatten(2), win, padded, B)  # (B, *padded, C)
        o = o[(slice(None), *(slice(0, s) for s in self.size))]  # crop the padding
        return o.reshape(B, N, C3 // 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        t = to_tokens(x + self.pos)  # (B, N, C)
        qkv = self.qkv(self.norm(t))  # (B, N, 3C)
        if self.variant == "global":
            o = self._global(qkv)
        elif self.variant == "linear":
            o = self._linear(qkv)
        else:
            o = self._windowed(qkv)
        return from_tokens(self.proj(o), self.size)


@register_op("attention")
class AttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(x)``, then ``x + mlp(x)``."""

    uses = ("heads", "attention")

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
        self.attn = AttentionMixer(dim, channels, size, heads or 1, attention or "global", window)
        self.mlp = Mlp(channels, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        x = x + self.attn(x)
        return x + self.mlp(x)
