"""Build an ``nn.Module`` from an architecture: stem, stages, head; 1-D and 2-D alike.

    input (B, C_in, *S)
      -> stem: conv(k, stride) -> BN -> GELU                      (B, W_0, *S_0)
      -> per stage i: transition, then ``depth`` operator blocks    (B, W_i, *S_i)
      -> head: global average pool -> LayerNorm -> Linear         (B, classes)

The transition into stage i adapts the map to the stage (the HVT-style 1x1 projection):
``AvgPool(2)`` when the stage downsamples (sizes halve, rounding down), then ``conv1x1 -> BN``
when the width changes; it is the identity otherwise. Blocks inside a stage keep the shape.
"""

from __future__ import annotations

import torch
from torch import nn

from fusion_nas.arch import Architecture
from fusion_nas.ops.common import batchnorm_nd, conv_nd
from fusion_nas.ops.registry import create_op
from fusion_nas.space import SearchSpace, load_space


def transition(dim: int, in_width: int, out_width: int, downsample: bool) -> nn.Module:
    """Stage entry: optional ``AvgPool(2)``, then ``conv1x1 -> BN`` if the width changes."""
    layers: list[nn.Module] = []
    if downsample:
        layers.append((nn.AvgPool1d if dim == 1 else nn.AvgPool2d)(2))
    if in_width != out_width:
        conv = conv_nd(dim)(in_width, out_width, 1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        layers += [conv, batchnorm_nd(dim)(out_width)]
    return nn.Sequential(*layers) if layers else nn.Identity()


class FusionNet(nn.Module):
    """The network of one architecture of one search space."""

    def __init__(self, arch: Architecture, space: SearchSpace) -> None:
        super().__init__()
        space.validate(arch)
        dim, stem = space.dim, space.stem
        self.arch = arch
        conv = conv_nd(dim)(
            space.channels, stem.width, stem.kernel, stride=stem.stride, padding=stem.kernel // 2
        )
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.stem = nn.Sequential(conv, batchnorm_nd(dim)(stem.width), nn.GELU())
        stages, width = [], stem.width
        for choice, spec, size in zip(arch.stages, space.stages, space.stage_sizes()):
            blocks = [transition(dim, width, choice.width, spec.downsample)]
            blocks += [
                create_op(
                    choice.operator,
                    dim,
                    choice.width,
                    size,
                    kernel=choice.kernel,
                    heads=choice.heads,
                    attention=choice.attention,
                    window=spec.window,
                    mlp_ratio=space.mlp_ratio,
                )
                for _ in range(choice.depth)
            ]
            stages.append(nn.Sequential(*blocks))
            width = choice.width
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, space.classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S) -> logits (B, classes)."""
        x = self.stages(self.stem(x))  # (B, W, *S_last)
        x = x.mean(dim=tuple(range(2, x.dim())))  # (B, W)
        return self.head(self.norm(x))


def build_model(arch: Architecture, space: SearchSpace | None = None) -> FusionNet:
    """The ``nn.Module`` of ``arch``; the space defaults to the built-in one it names."""
    return FusionNet(arch, space if space is not None else load_space(arch.space))
