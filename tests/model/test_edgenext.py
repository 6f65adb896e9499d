"""EdgeNeXt's pieces in nets.py: the ``convnext`` and ``sdta`` operators, the Fourier position
encoding, the ``xca`` attention variant, and the ``edgenext_xx_small`` zoo network.

Costs are hand counts; block outputs are checked against timm's forward passes, transcribed
below (timm cannot be imported here); exported modules against the toolkit model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusion_nas.analysis.explain import explain_model
from fusion_nas.deploy.export import export_code
from fusion_nas.model import nets
from fusion_nas.model.build import build_model
from fusion_nas.model.cost import arch_cost, count_cost
from fusion_nas.model.nets import BlockCfg, CfgError
from fusion_nas.model.space import SearchSpace, load_space, parse_space

ZOO = Path(nets.__file__).resolve().parents[1] / "zoo" / "edgenext_xx_small.toml"


def _block(operator: str, width: int, size: tuple[int, ...], seed: int = 0, **fields: Any):
    """An eval-mode block with every parameter redrawn (layer scales and temperatures too),
    so that no branch hides behind a near-zero initial scale."""
    torch.manual_seed(seed)
    block = nets.OPS[operator](BlockCfg(operator, width, **fields), size).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.3)
    return block


def _cost(block: nn.Module, width: int, size: tuple[int, ...]) -> tuple[int, int]:
    cost = count_cost(block, torch.randn(1, width, *size))
    return cost.macs, cost.params


# --------------------------------------------------------------------------- timm, transcribed
# timm 1.0.31 edgenext.py's forward passes line by line (2-D, channels-last LayerNorm with eps
# 1e-6, GELU), reading the weights of our blocks: an independent reference for their output.


def _fourier_timm(proj: nn.Conv2d, B: int, H: int, W: int) -> torch.Tensor:
    """PositionalEncodingFourier.forward((B, H, W)) with its token_projection: (B, C, H, W)."""
    hidden, eps, scale = 32, 1e-6, 2 * math.pi
    inv_mask = ~torch.zeros((B, H, W)).to(dtype=torch.bool)
    y_embed = inv_mask.cumsum(1, dtype=torch.float32)
    x_embed = inv_mask.cumsum(2, dtype=torch.float32)
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(hidden, dtype=torch.int64).to(torch.float32)
    dim_t = 10000.0 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / hidden)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4)
    pos = torch.cat((pos_y.flatten(3), pos_x.flatten(3)), dim=3).permute(0, 3, 1, 2)
    return proj(pos)


def _ln(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, 1e-6)


def _convnext_timm(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ConvBlock.forward (stride 1, same width)."""
    shortcut = x
    conv = block.conv
    x = F.conv2d(x, conv.weight, conv.bias, padding=conv.padding, groups=x.shape[1])
    x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    x = block.mlp.fc2(F.gelu(block.mlp.fc1(_ln(x, block.norm))))
    x = block.scale.gamma * x
    return shortcut + x.permute(0, 3, 1, 2)


def _sdta_timm(block: nn.Module, x: torch.Tensor, heads: int) -> torch.Tensor:
    """SplitTransposeBlock.forward, CrossCovarianceAttn.forward inlined."""
    shortcut = x
    spx = x.chunk(len(block.convs.convs) + 1, dim=1)
    spo = []
    sp = spx[0]
    for i, conv in enumerate(block.convs.convs):
        if i > 0:
            sp = sp + spx[i]
        sp = conv(sp)
        spo.append(sp)
    spo.append(spx[-1])
    x = torch.cat(spo, 1)
    B, C, H, W = x.shape
    x = x.reshape(B, C, H * W).permute(0, 2, 1)
    if block.pos is not None:
        pos = _fourier_timm(block.pos.proj, B, H, W).reshape(B, -1, x.shape[1]).permute(0, 2, 1)
        x = x + pos
    t = _ln(x, block.norm_xca)
    N = t.shape[1]
    qkv = block.xca.qkv(t).reshape(B, N, 3, heads, -1).permute(2, 0, 3, 4, 1)
    q, k, v = qkv.unbind(0)
    attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
    attn = (attn * block.xca.temperature).softmax(dim=-1)
    a = (attn @ v).permute(0, 3, 1, 2).reshape(B, N, C)
    x = x + block.scale_xca.gamma * block.xca.proj(a)
    x = x.reshape(B, H, W, C)
    x = block.mlp.fc2(F.gelu(block.mlp.fc1(_ln(x, block.norm))))
    x = block.scale.gamma * x
    return shortcut + x.permute(0, 3, 1, 2)


def test_convnext_is_timms_conv_block() -> None:
    block = _block("convnext", 12, (6, 5), kernel=5, norm="ln", layer_scale=1e-6)
    x = torch.randn(2, 12, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _convnext_timm(block, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("width", "scales", "pos"), [(12, 3, "fourier"), (10, 4, "none")])
def test_sdta_is_timms_split_transpose_block(width: int, scales: int, pos: str) -> None:
    # 10 channels in 4 groups: 3, 3, 3 and the last 1 (Tensor.chunk's sizes)
    block = _block("sdta", width, (5, 7), heads=2, scales=scales, pos=pos, layer_scale=1e-6)
    assert block.convs.widths == nets.split_widths(width, scales)
    x = torch.randn(2, width, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _sdta_timm(block, x, 2), rtol=1e-5, atol=1e-5)


def test_fourier_features_are_timms_and_1d_is_the_first_axis() -> None:
    proj = nn.Conv2d(64, 6, 1)
    feats = nets.fourier_features((5, 7))  # (64, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(proj(feats[None]), _fourier_timm(proj, 1, 5, 7))
    # 1-D: the 32 features of the only axis, equal to the first (row) axis' features in 2-D
    line = nets.fourier_features((5,))
    assert line.shape == (32, 5)
    torch.testing.assert_close(line, feats[:32, :, 0])
    # feature 0 is sin(2 pi i / n), feature 1 cos(2 pi i / n), i = 1..n
    p = torch.arange(1, 6) / 5 * 2 * math.pi
    torch.testing.assert_close(line[0], p.sin(), atol=1e-5, rtol=0)
    torch.testing.assert_close(line[1], p.cos(), atol=1e-5, rtol=0)


def _xca_reference(mixer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The xca variant written out head by head: softmax over channels of the normalised
    query-key covariance, times the temperature, applied to the values."""
    B, C, *size = x.shape
    t = (x + mixer.pos).flatten(2).transpose(1, 2)  # (B, N, C)
    q, k, v = mixer.qkv(mixer.norm(t)).chunk(3, dim=-1)  # (B, N, C) each
    hd, out = C // mixer.heads, []
    for h in range(mixer.heads):
        cols = slice(h * hd, (h + 1) * hd)
        qh, kh = F.normalize(q[..., cols], dim=1), F.normalize(k[..., cols], dim=1)  # over N
        a = torch.softmax(qh.transpose(1, 2) @ kh * mixer.temperature[h], dim=-1)  # (B, hd, hd)
        out.append(v[..., cols] @ a.transpose(1, 2))  # (B, N, hd)
    o = mixer.proj(torch.cat(out, dim=-1))
    return o.transpose(1, 2).reshape(B, C, *size)


@pytest.mark.parametrize("size", [(9,), (4, 5)])
def test_xca_variant_matches_its_formula(size: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    mixer = nets.ATTENTIONS["xca"](BlockCfg("attention", 8, heads=2, attention="xca"), size)
    with torch.no_grad():
        mixer.temperature.uniform_(0.5, 2.0)
        x = torch.randn(2, 8, *size)
        torch.testing.assert_close(mixer(x), _xca_reference(mixer, x), rtol=1e-5, atol=1e-5)
    assert nets.reads("attention", "xca") == ("heads", "attention", "mlp_ratio", "pos")


# --------------------------------------------------------------------------- hand counts


def test_convnext_hand_count() -> None:
    # C = 8, kernel 3, expand 4 (hidden 32), layer scale, 4x4 map (N = 16):
    # params: depthwise conv 8*9 + 8 bias = 80, LayerNorm 16, fc1 8*32 + 32 = 288,
    #   fc2 32*8 + 8 = 264, gamma 8 -> 656;
    # MACs: depthwise 16 * 8 * 9 = 1152, fc1 16 * 8 * 32 = 4096, fc2 4096 -> 9344.
    block = _block("convnext", 8, (4, 4), kernel=3, norm="ln", layer_scale=1e-6)
    assert _cost(block, 8, (4, 4)) == (9344, 656)
    # 1-D, length 10: depthwise 8*3 + 8 = 32, the rest as above (no gamma at layer_scale 0):
    # params 32 + 16 + 288 + 264 = 600; MACs 10*8*3 + 2 * 10*8*32 = 240 + 5120 = 5360.
    block = _block("convnext", 8, (10,), kernel=3, norm="ln")
    assert _cost(block, 8, (10,)) == (5360, 600)
    # BatchNorm instead of LayerNorm: the same 16 parameters (weight, bias; the running
    # statistics are buffers); ReLU and expand 2 (hidden 16): fc1 8*16 + 16 = 144,
    # fc2 16*8 + 8 = 136 -> 32 + 16 + 144 + 136 = 328; MACs 240 + 2 * 10*8*16 = 2800.
    block = _block("convnext", 8, (10,), kernel=3, norm="bn", act="relu", expand=2.0)
    assert isinstance(block.norm, nn.BatchNorm1d) and isinstance(block.mlp.act, nn.ReLU)
    assert _cost(block, 8, (10,)) == (2800, 328)


def test_sdta_hand_count_2d() -> None:
    # C = 8, 2 heads (hd 4), scales 2 (groups 4 + 4), Fourier encoding, layer scale, 4x4 map:
    # params: one depthwise 3x3 conv on 4 channels 4*9 + 4 = 40; Fourier projection
    #   Conv2d(64, 8, 1) 64*8 + 8 = 520; LayerNorm 16; gamma_xca 8; XCA: temperature 2,
    #   qkv 8*24 + 24 = 216, proj 8*8 + 8 = 72; LayerNorm 16; MLP (hidden 32) 288 + 264;
    #   gamma 8 -> 40 + 520 + 16 + 8 + 290 + 16 + 552 + 8 = 1450.
    # MACs (N = 16): conv 16*4*9 = 576; projection 16*64*8 = 8192 (once per forward); qkv
    #   16*8*24 = 3072; q k^T per head hd*hd*N: 2*4*4*16 = 512; attn v the same 512;
    #   proj 16*8*8 = 1024; MLP 2 * 16*8*32 = 8192 -> 22080.
    block = _block("sdta", 8, (4, 4), heads=2, scales=2, pos="fourier", layer_scale=1e-6)
    assert _cost(block, 8, (4, 4)) == (22080, 1450)


def test_sdta_hand_count_1d() -> None:
    # C = 12, 3 heads (hd 4), scales 3 (groups 4, 4, 4: two convs), no encoding, no layer
    # scale, expand 2 (hidden 24), length 10:
    # params: 2 depthwise k3 convs 2 * (4*3 + 4) = 32; LayerNorm 24; XCA: temperature 3,
    #   qkv 12*36 + 36 = 468, proj 12*12 + 12 = 156; LayerNorm 24; fc1 12*24 + 24 = 312,
    #   fc2 24*12 + 12 = 300 -> 32 + 24 + 627 + 24 + 612 = 1319.
    # MACs: convs 2 * 10*4*3 = 240; qkv 10*12*36 = 4320; q k^T 3*4*4*10 = 480; attn v 480;
    #   proj 10*12*12 = 1440; MLP 2 * 10*12*24 = 5760 -> 12720.
    block = _block("sdta", 12, (10,), heads=3, scales=3, pos="none", expand=2.0)
    assert _cost(block, 12, (10,)) == (12720, 1319)
    # the Fourier encoding in 1-D: Conv1d(32, 12, 1), 32*12 + 12 = 396 params, 10*32*12 =
    # 3840 MACs more
    block = _block("sdta", 12, (10,), heads=3, scales=3, pos="fourier", expand=2.0)
    assert _cost(block, 12, (10,)) == (12720 + 3840, 1319 + 396)


def test_xca_variant_hand_count() -> None:
    # C = 8, 2 heads, learned position, 4x4 map: the mixer's position 8*16 = 128, LayerNorm 16,
    # qkv 216, proj 72 and the temperature 2 -> 434 params; MACs qkv 3072 + q k^T 512 +
    # attn v 512 + proj 1024 = 5120 (linear in tokens: no N*N term).
    mixer = nets.ATTENTIONS["xca"](BlockCfg("attention", 8, heads=2, attention="xca"), (4, 4))
    assert _cost(mixer, 8, (4, 4)) == (5120, 434)


# --------------------------------------------------------------------------- mutations


def _drop_xca(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SdtaBlock.forward without the attention branch."""
    t = nets.to_tokens(self.convs(x))
    t = self.scale(self.mlp(self.norm(t)))
    return x + nets.from_tokens(t, tuple(x.shape[2:]))


def test_the_checks_fail_when_the_sdta_forward_drops_attention(monkeypatch) -> None:
    monkeypatch.setattr(nets.SdtaBlock, "forward", _drop_xca)
    with pytest.raises(AssertionError):
        test_sdta_is_timms_split_transpose_block(10, 4, "none")
    with pytest.raises(AssertionError):
        test_sdta_hand_count_2d()


def test_the_checks_fail_when_convnext_skips_its_norm(monkeypatch) -> None:
    def no_norm(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale(self.mlp(self.conv(x).movedim(1, -1))).movedim(-1, 1)

    monkeypatch.setattr(nets.ConvNextBlock, "forward", no_norm)
    with pytest.raises(AssertionError):
        test_convnext_is_timms_conv_block()


def test_the_checks_fail_when_the_fourier_axes_are_swapped(monkeypatch) -> None:
    real = nets.fourier_features

    def swapped(size: tuple[int, ...], device: Any = None) -> torch.Tensor:
        f = real(size, device)
        return torch.cat([f[32:], f[:32]]) if len(size) == 2 else f

    monkeypatch.setattr(nets, "fourier_features", swapped)
    with pytest.raises(AssertionError):
        test_sdta_is_timms_split_transpose_block(12, 3, "fourier")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (
            {"operator": "sdta", "width": 5, "scales": 4},
            r"^scales: 4 groups of 2 channels do not fit width 5; allowed: 1, 2, 3, 5$",
        ),
        (
            {"operator": "sdta", "width": 8, "pos": "bias"},
            r"^pos: 'bias' is not supported by operator 'sdta'; allowed: 'none', 'fourier'",
        ),
        ({"operator": "sdta", "width": 8, "heads": 3}, r"^heads: 3 heads do not divide width 8"),
        ({"operator": "convnext", "width": 8, "kernel": 4}, r"^kernel: 4 is even"),
        ({"operator": "convnext", "width": 8, "layer_scale": -1.0}, r"^layer_scale: -1.0 is not"),
        ({"operator": "sdta", "width": 8, "pos": "rope"}, r"^pos: 'rope' is not allowed"),
    ],
)
def test_bad_values_are_one_line_errors(fields: dict, match: str) -> None:
    with pytest.raises(CfgError, match=match) as err:
        BlockCfg(**fields)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("variant", ["xca", "global", "window", "linear"])
@pytest.mark.parametrize("operator", ["attention", "parallel", "split"])
def test_only_sdta_takes_the_fourier_encoding(operator: str, variant: str) -> None:
    # the attention variants have no Fourier encoding: refused, never silently ignored
    with pytest.raises(CfgError, match=r"^pos: 'fourier' is only supported by operator 'sdta'"):
        BlockCfg(operator, 8, heads=2, attention=variant, pos="fourier")
    # where the block reads no position (conv, squeeze-excitation), the field is ignored
    BlockCfg("conv", 8, pos="fourier")
    BlockCfg(operator, 8, attention="channel", pos="fourier")


# --------------------------------------------------------------------------- export


SMALL_1D = """
name = "edgenext-1d"
description = "convnext, sdta and an xca attention block on sequences"
[input]
kind = "sequence"
length = 24
channels = 2
classes = 3
[network]
norm = "ln"
layer_scale = 0.5
[stem]
kind = "patch"
width = 8
kernel = 2
stride = 2
[[stage]]
operator = "convnext"
width = 8
depth = 2
kernel = 5
[[stage]]
operator = "sdta"
width = 12
heads = 2
scales = 3
pos = "fourier"
downsample = "patch"
[[stage]]
operator = "attention"
attention = "xca"
width = 12
heads = 3
pos = "cpe"
[[stage]]
operator = "parallel"
attention = "xca"
width = 12
heads = 2
pos = "none"
[[stage]]
operator = "gated"
attention = "xca"
width = 12
heads = 4
"""

SMALL_2D = """
name = "edgenext-2d"
description = "convnext with BatchNorm, sdta with learned and conv encodings, gated xca"
[input]
kind = "image"
size = [12, 10]
channels = 3
classes = 4
[stem]
width = 8
kernel = 3
stride = 2
[[stage]]
operator = "convnext"
width = 8
kernel = 3
act = "hardswish"
[[stage]]
operator = "sdta"
width = 8
heads = 2
scales = 2
pos = "learned"
layer_scale = 1e-6
[[stage]]
operator = "sdta"
width = 16
heads = 4
scales = 4
pos = "cpe"
downsample = "conv"
[[stage]]
operator = "gated"
attention = "xca"
width = 16
heads = 4
[[stage]]
operator = "attention"
attention = "xca"
width = 16
heads = 2
pos = "none"
[[stage]]
operator = "parallel"
attention = "xca"
width = 16
heads = 8
"""


def _single(space: SearchSpace):
    (arch,) = space.enumerate()
    return arch


def _round_trip(space: SearchSpace, batch: int) -> None:
    """The exported module, given the toolkit model's weights, gives the same outputs."""
    arch = _single(space)
    namespace: dict[str, Any] = {}
    exec(compile(export_code(arch, space), "<exported>", "exec"), namespace)
    torch.manual_seed(0)
    toolkit = build_model(arch, space).eval()
    with torch.no_grad():
        for p in toolkit.parameters():
            p.normal_(0.0, 0.2)  # layer scales of 1e-6 would hide the blocks
    exported = namespace["FusionNet"]().eval()
    assert list(exported.state_dict()) == list(toolkit.state_dict())
    exported.load_state_dict(toolkit.state_dict())
    x = torch.randn(space.input_shape(batch))
    with torch.no_grad():
        torch.testing.assert_close(exported(x), toolkit(x), rtol=0, atol=1e-6)


def test_export_round_trip_1d() -> None:
    _round_trip(parse_space(SMALL_1D), batch=3)


def test_xca_blocks_in_every_fused_operator_and_dimension() -> None:
    covered = set()
    for text in (SMALL_1D, SMALL_2D):
        space = parse_space(text)
        covered |= {(space.dim, s.operator) for s in _single(space).stages if s.attention == "xca"}
    assert covered == {(d, op) for d in (1, 2) for op in ("attention", "parallel", "gated")}


def test_explain_shows_xca_as_a_channel_map() -> None:
    space = parse_space(SMALL_1D)
    torch.manual_seed(0)
    model = build_model(_single(space), space).eval()
    expl = explain_model(model, torch.randn(6, 2, 24), torch.arange(6) % 3, samples=2)
    maps = [a for a in expl.attention if a.variant == "xca"]
    assert [(a.stage, a.operator, a.heads, a.what) for a in maps] == [
        (2, "attention", 3, "channels"),
        (3, "parallel", 2, "channels"),
        (4, "gated", 4, "channels"),
    ]
    for a in maps:  # per head, each query channel's softmax sums to 1 over the key channels
        assert len(a.received) == 12 and sum(a.received) == pytest.approx(a.heads, abs=1e-3)
    stages = {c.name: c.parts for c in expl.costs}
    assert set(stages["stage 1"]) >= {"transition", "conv", "attention", "mlp"}  # sdta parts


def test_export_round_trip_2d() -> None:
    _round_trip(parse_space(SMALL_2D), batch=2)


def test_export_round_trip_of_the_zoo_network() -> None:
    _round_trip(load_space(str(ZOO)), batch=1)


# --------------------------------------------------------------------------- zoo network


def test_zoo_network_has_timms_params_and_stage_shapes() -> None:
    space = load_space(str(ZOO))
    assert space.zoo["timm"] == "edgenext_xx_small"
    arch = _single(space)
    cost = arch_cost(arch, space)
    # timm 1.0.31's edgenext_xx_small: 1,327,216 parameters; its MACs at 224x224, counted by
    # fusion_nas.model.cost.count_cost on timm's own model: 197,497,958 (0.258 G at 256x256,
    # timm's published 0.26 GMACs).
    assert (cost.params, cost.macs) == (1_327_216, 197_497_958)
    with torch.device("meta"):
        model = build_model(arch, space)
        shapes: list[tuple[int, ...]] = []
        for stage in model.stages:
            stage.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape[1:])))
        model(torch.empty(space.input_shape(1)))
    timm_stages = [(24, 56, 56), (48, 28, 28), (88, 14, 14), (168, 7, 7)]
    assert [shapes[i] for i in space.zoo["stage_ends"]] == timm_stages


# --------------------------------------------------------------------------- every block


@pytest.mark.parametrize(
    ("operator", "size", "fields"),
    [
        ("convnext", (10,), {"kernel": 5, "norm": "ln", "layer_scale": 1e-6}),
        ("convnext", (7, 5), {"kernel": 3, "act": "relu", "expand": 2.0}),
        ("sdta", (3,), {"heads": 2, "scales": 3, "pos": "fourier", "layer_scale": 0.5}),
        ("sdta", (3, 6), {"heads": 4, "scales": 2, "pos": "cpe"}),
        ("sdta", (8, 8), {"heads": 2, "pos": "learned"}),
    ],
)
def test_blocks_keep_the_shape_and_every_parameter_learns(
    operator: str, size: tuple[int, ...], fields: dict
) -> None:
    torch.manual_seed(0)
    block = nets.OPS[operator](BlockCfg(operator, 12, **fields), size).train()
    x = torch.randn(3, 12, *size, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # samples stay independent: a sample's output does not depend on the others
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x[:1]), block(x)[:1], rtol=1e-5, atol=1e-6)
