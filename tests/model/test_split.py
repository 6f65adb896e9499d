"""The channel-split fusion operator ``split`` (EdgeNeXt, Next-ViT): the conv branch on the first
``round(split * C)`` channels, an attention variant on the rest, concatenated, mixed by a 1x1
conv, residual, then the MLP. Hand counts, its formula, export round trips in 1-D and 2-D,
mutations that the checks must catch, one-line errors and the explain probe."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusion_nas.analysis.explain import explain_model
from fusion_nas.deploy.export import export_code
from fusion_nas.errors import SpaceError
from fusion_nas.model import nets
from fusion_nas.model.build import build_model
from fusion_nas.model.cost import count_cost
from fusion_nas.model.nets import BlockCfg, CfgError
from fusion_nas.model.space import SearchSpace, parse_space


def _block(width: int, size: tuple[int, ...], seed: int = 0, **fields: Any) -> nn.Module:
    """An eval-mode split block, every parameter and BatchNorm statistic redrawn."""
    torch.manual_seed(seed)
    block = nets.SplitBlock(BlockCfg("split", width, **fields), size).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.3)
        for name, b in block.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                b.normal_(0.0, 0.3)
    return block


def _cost(block: nn.Module, width: int, size: tuple[int, ...]) -> tuple[int, int]:
    cost = count_cost(block, torch.randn(1, width, *size))
    return cost.macs, cost.params


# --------------------------------------------------------------------------- the formula


def _reference(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x + fuse(cat(conv(x_c), attn(x_a)))``, then ``+ mlp``, written out for a BatchNorm +
    GELU conv branch and a global softmax attention branch (learned position)."""
    c, dim = block.share, x.dim() - 2
    xc, xa = x[:, :c], x[:, c:]
    conv, bn = block.conv.conv, block.conv.norm
    k = conv.weight.shape[-1]
    y = (F.conv1d, F.conv2d)[dim - 1](xc, conv.weight, padding=k // 2)
    shape = (1, -1, *([1] * dim))
    y = (y - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    y = F.gelu(y * bn.weight.view(shape) + bn.bias.view(shape))
    m = block.attn
    t = (xa + m.pos).flatten(2).transpose(1, 2)  # (B, N, C_a)
    q, kk, v = m.qkv(m.norm(t)).chunk(3, dim=-1)
    B, N, Ca = q.shape
    h = m.heads
    q, kk, v = (u.reshape(B, N, h, Ca // h).transpose(1, 2) for u in (q, kk, v))
    a = torch.softmax(q @ kk.transpose(-2, -1) / math.sqrt(Ca // h), dim=-1) @ v
    a = m.proj(a.transpose(1, 2).reshape(B, N, Ca)).transpose(1, 2).reshape(xa.shape)
    fused = torch.cat([y, a], dim=1)
    w = block.fuse.weight.flatten(1)  # (C, C): the 1x1 conv
    x = x + torch.einsum("oc,bc...->bo...", w, fused) + block.fuse.bias.view(shape)
    t = x.flatten(2).transpose(1, 2)
    mlp = block.mlp
    t = F.layer_norm(t, t.shape[-1:], mlp.norm.weight, mlp.norm.bias, mlp.norm.eps)
    t = mlp.fc2(F.gelu(mlp.fc1(t)))
    return x + t.transpose(1, 2).reshape(x.shape)


@pytest.mark.parametrize(("size", "split"), [((9,), 0.25), ((4, 5), 0.5), ((3, 4), 0.75)])
def test_split_block_is_its_formula(size: tuple[int, ...], split: float) -> None:
    block = _block(8, size, heads=2, split=split, kernel=3)
    assert block.share == round(split * 8)
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _reference(block, x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- hand counts


def test_split_hand_count_2d() -> None:
    # C = 8, split 0.5: conv branch on 4 channels, global attention (2 heads) on 4; kernel 3,
    # MLP ratio 2, BatchNorm, learned position, 4x4 map (N = 16):
    # params: conv 4*4*9 = 144 (no bias) + BatchNorm 8 = 152; attention on 4 channels: position
    #   4*16 = 64, LayerNorm 8, qkv 4*12 + 12 = 60, proj 4*4 + 4 = 20 -> 152; fuse 1x1 conv
    #   8*8 + 8 = 72; MLP: LayerNorm 16, fc1 8*16 + 16 = 144, fc2 16*8 + 8 = 136 -> 296;
    #   total 152 + 152 + 72 + 296 = 672.
    # MACs: conv 16*4*4*9 = 2304; qkv 16*4*12 = 768; SDPA 2 heads * (16*16*2 + 16*16*2) = 2048;
    #   proj 16*4*4 = 256; fuse 16*8*8 = 1024; MLP 2 * 16*8*16 = 4096 -> 10496.
    block = _block(8, (4, 4), heads=2, kernel=3)
    assert _cost(block, 8, (4, 4)) == (10496, 672)


def test_split_hand_count_1d() -> None:
    # C = 12, split 0.25: conv on 3 channels (kernel 5, LayerNorm, ReLU), xca (3 heads, hd 3,
    # no position) on 9; no MLP (ratio 0); length 10:
    # params: conv 3*3*5 = 45 + LayerNorm 6 = 51; xca: LayerNorm 18, qkv 9*27 + 27 = 270,
    #   proj 9*9 + 9 = 90, temperature 3 -> 381; fuse 12*12 + 12 = 156 -> 588.
    # MACs: conv 10*3*3*5 = 450; qkv 10*9*27 = 2430; q k^T 3*3*3*10 = 270; attn v 270;
    #   proj 10*9*9 = 810; fuse 10*12*12 = 1440 -> 5670.
    block = _block(
        12, (10,), split=0.25, kernel=5, heads=3, attention="xca", mlp_ratio=0, norm="ln",
        act="relu", pos="none",
    )  # fmt: skip
    assert isinstance(block.conv.act, nn.ReLU) and block.mlp is None
    assert _cost(block, 12, (10,)) == (5670, 588)


# --------------------------------------------------------------------------- mutations


def test_the_checks_fail_when_the_branches_swap_channels(monkeypatch) -> None:
    def swapped(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        a = x.shape[1] - self.share  # the attention branch gets the first channels
        y = torch.cat([self.attn(x[:, :a]), self.conv(x[:, a:])], dim=1)
        x = x + self.fuse(y)
        return x + self.mlp(x)

    monkeypatch.setattr(nets.SplitBlock, "forward", swapped)
    with pytest.raises(AssertionError):
        test_split_block_is_its_formula((4, 5), 0.5)


def test_the_checks_fail_when_the_attention_branch_is_dropped(monkeypatch) -> None:
    def conv_only(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        c = self.share
        y = torch.cat([self.conv(x[:, :c]), torch.zeros_like(x[:, c:])], dim=1)
        x = x + self.fuse(y)
        return x + self.mlp(x)

    monkeypatch.setattr(nets.SplitBlock, "forward", conv_only)
    with pytest.raises(AssertionError):
        test_split_block_is_its_formula((9,), 0.25)
    with pytest.raises(AssertionError):
        test_split_hand_count_2d()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"width": 8, "split": 0.05},
            "split: 0.05 of width 8 leaves 0 conv and 8 attention channels; allowed: shares "
            "that leave both at least one, 0.125 to 0.875",
        ),
        (
            {"width": 12, "split": 0.25, "heads": 4},
            "heads: 4 heads do not divide the attention share 9 of width 12 (split 0.25); "
            "allowed: 1, 3",
        ),
        (
            {"width": 8, "split": 1.0},
            "split: 1.0 is not allowed; allowed: numbers in (0, 1)",
        ),
    ],
)
def test_bad_values_are_one_line_errors(fields: dict, message: str) -> None:
    with pytest.raises(CfgError) as err:
        nets.SplitBlock(BlockCfg("split", **fields), (4,))  # checked when built
    assert str(err.value) == message


def test_heads_are_not_checked_where_the_variant_has_none() -> None:
    # squeeze-excitation reads no heads: 4 heads and an attention share of 9 are fine
    cfg = BlockCfg("split", 12, split=0.25, heads=4, attention="channel")
    assert nets.reads("split", "channel") == (
        "kernel",
        "attention",
        "mlp_ratio",
        "act",
        "norm",
        "tkernel",
    )
    assert nets.SplitBlock(cfg, (5,))(torch.randn(2, 12, 5)).shape == (2, 12, 5)


def test_a_space_with_a_bad_split_fails_in_one_line() -> None:
    # refused when the space loads (the operator's check), before anything is built
    with pytest.raises(
        SpaceError, match=r"stage\[0\]\.split: 0.01 of width 12 leaves 0 conv"
    ) as err:
        parse_space(SPACE_1D.replace("split = 0.5", "split = 0.01"))
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- export


SPACE_1D = """
name = "split-1d"
description = "split blocks on sequences"
[input]
kind = "sequence"
length = 18
channels = 2
classes = 3
[stem]
width = 12
kernel = 3
[[stage]]
operator = "split"
width = 12
depth = 2
kernel = 5
heads = 2
attention = "linear"
split = 0.5
[[stage]]
operator = "split"
width = 16
heads = 4
attention = "window"
norm = "ln"
act = "silu"
split = 0.25
window = 4
downsample = "pool"
"""

SPACE_2D = """
name = "split-2d"
description = "split blocks on images, windows that need padding"
[input]
kind = "image"
size = [9, 7]
channels = 3
classes = 4
[stem]
width = 8
kernel = 3
[[stage]]
operator = "split"
width = 8
heads = 2
attention = "window"
window = 4
split = 0.5
[[stage]]
operator = "split"
width = 12
kernel = 3
heads = 3
attention = "xca"
pos = "cpe"
mlp_ratio = 0
split = 0.25
downsample = "conv"
"""


def _round_trip(space: SearchSpace, batch: int) -> None:
    """The exported module, given the toolkit model's weights, gives the same outputs."""
    (arch,) = space.enumerate()
    namespace: dict[str, Any] = {}
    exec(compile(export_code(arch, space), "<exported>", "exec"), namespace)
    torch.manual_seed(0)
    toolkit = build_model(arch, space).eval()
    with torch.no_grad():
        for p in toolkit.parameters():
            p.normal_(0.0, 0.2)
    exported = namespace["FusionNet"]().eval()
    assert list(exported.state_dict()) == list(toolkit.state_dict())
    exported.load_state_dict(toolkit.state_dict())
    x = torch.randn(space.input_shape(batch))
    with torch.no_grad():
        torch.testing.assert_close(exported(x), toolkit(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("text", [SPACE_1D, SPACE_2D], ids=["1d", "2d"])
def test_export_round_trip(text: str) -> None:
    _round_trip(parse_space(text), batch=3)


def test_the_round_trip_fails_when_the_toolkit_forward_differs(monkeypatch) -> None:
    real = nets.SplitBlock.forward

    def no_fuse(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return real(self, x) - self.fuse.bias.view(1, -1, *([1] * (x.dim() - 2)))

    monkeypatch.setattr(nets.SplitBlock, "forward", no_fuse)
    with pytest.raises(AssertionError):
        _round_trip(parse_space(SPACE_1D), batch=2)


# --------------------------------------------------------------------------- explain


def test_explain_reports_channel_shares_and_branch_norms() -> None:
    space = parse_space(SPACE_1D)
    (arch,) = space.enumerate()
    torch.manual_seed(0)
    model = build_model(arch, space).eval()
    x, y = torch.randn(20, 2, 18), torch.arange(20) % 3
    expl = explain_model(model, x, y, samples=2)
    splits = [f for f in expl.fusion if f.operator == "split"]
    assert [(f.stage, f.block) for f in splits] == [(0, 0), (0, 1), (1, 0)]
    assert [f.weights["conv_channels"].mean for f in splits] == [0.5, 0.5, 0.25]
    block = model.stages[0][1]  # stage 0, block 0 (after the transition)
    c = block.share
    with torch.no_grad():
        h = model.stem(x)
        conv_norm = block.conv(h[:, :c]).flatten(1).norm(dim=1)  # (20,)
        attn_norm = block.attn(h[:, c:]).flatten(1).norm(dim=1)
    first = splits[0]
    assert first.weights["conv_norm"].mean == pytest.approx(float(conv_norm.mean()), rel=1e-5)
    assert first.weights["attn_norm"].mean == pytest.approx(float(attn_norm.mean()), rel=1e-5)
    assert 0 < first.weights["conv_share"].mean < 1
    assert set(first.eta2) == {"conv_share"}  # per class: fractions only
    parts = {c.name: c.parts for c in expl.costs}
    assert set(parts["stage 0"]) == {"conv", "attention", "fusion", "mlp"}
    assert parts["stage 0"]["fusion"] == (2 * 18 * 12 * 12, 2 * (12 * 12 + 12))  # 2 fuse convs


@pytest.mark.parametrize(
    ("size", "fields"),
    [
        ((10,), {"heads": 2, "attention": "window", "norm": "ln"}),
        ((3, 6), {"kernel": 5, "heads": 3, "attention": "xca", "split": 0.25}),
        ((7, 5), {"attention": "channel", "mlp_ratio": 0}),
        ((16,), {"heads": 3, "attention": "linear", "act": "silu", "split": 0.75}),
    ],
)
def test_split_keeps_the_shape_and_every_parameter_learns(
    size: tuple[int, ...], fields: dict
) -> None:
    torch.manual_seed(0)
    block = nets.SplitBlock(BlockCfg("split", 12, window=4, **fields), size).train()
    x = torch.randn(3, 12, *size, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x[:1]), block(x)[:1], rtol=1e-5, atol=1e-6)
