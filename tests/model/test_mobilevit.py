"""MobileViT pieces: the mv2 and mobilevit blocks, the convbn stem, the conv head, the zoo network.

Costs are counted by hand in the comments; values are checked against a reference written here
(token by token for the transformer over patches); exported files compute what the toolkit does.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusion_nas.deploy.export import export_code, write_onnx
from fusion_nas.errors import SpaceError
from fusion_nas.model import nets
from fusion_nas.model.build import build_model
from fusion_nas.model.cost import count_cost
from fusion_nas.model.nets import BlockCfg, CfgError, NetCfg, StageCfg
from fusion_nas.model.space import load_space, parse_space

ZOO = Path(nets.__file__).resolve().parents[1] / "zoo"


def _cost(module: nn.Module, *shape: int) -> tuple[int, int]:
    """(MACs for a batch of one, parameters) of ``module`` on an input of ``shape``."""
    c = count_cost(module, torch.randn(1, *shape))
    return c.macs, c.params


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BatchNorm statistic redrawn (variances positive), eval mode: values
    of order 1 everywhere, so a dropped branch shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
                if name.endswith("running_var"):
                    t.abs_().add_(0.5)
    return module.eval()


def _mv2(width: int = 4, **fields) -> BlockCfg:
    return BlockCfg("mv2", width, **{"expand": 2.0, "act": "silu", **fields})


def _mobilevit(width: int = 4, **fields) -> BlockCfg:
    base = dict(inner=8, heads=2, layers=1, patch=2, mlp_ratio=2.0, act="silu")
    return BlockCfg("mobilevit", width, **{**base, **fields})


# --------------------------------------------------------------------------- hand counts


def test_mv2_hand_count_2d() -> None:
    # width 4, expand 2 -> hidden 8, kernel 3, 5x5 map, stride 1:
    #   expand 1x1:    25 * 8 * 4     =  800 MACs; 4 * 8 = 32 weights + BN 2 * 8 = 16
    #   depthwise 3x3: 25 * 8 * 9     = 1800 MACs; 8 * 9 = 72 weights + BN 16
    #   project 1x1:   25 * 4 * 8     =  800 MACs; 8 * 4 = 32 weights + BN 8
    block = nets.InvertedResidual(_mv2(), (5, 5))
    assert _cost(block, 4, 5, 5) == (3400, 32 + 16 + 72 + 16 + 32 + 8)
    assert block.residual


def test_mv2_downsampling_hand_count() -> None:
    # in 4 -> width 6, stride 2, 5x5 -> 3x3; hidden 8 = in_width 4 * expand 2 (timm's bottle_in):
    #   expand on 5x5:       25 * 8 * 4 = 800; depthwise on 3x3: 9 * 8 * 9 = 648;
    #   project on 3x3:       9 * 6 * 8 = 432                         -> 1880 MACs
    #   params: 32 + 16, 72 + 16, 48 + 12                             -> 196
    block = nets.InvertedResidual(_mv2(6), (3, 3), in_width=4, stride=2)
    assert _cost(block, 4, 5, 5) == (1880, 196)
    assert not block.residual
    assert block(torch.randn(2, 4, 5, 5)).shape == (2, 6, 3, 3)


def test_mv2_hand_count_1d() -> None:
    # width 4, hidden 8, kernel 3, length 6: 6*8*4 + 6*8*3 + 6*4*8 = 192 + 144 + 192 = 528 MACs;
    # params 32 + 16 + 8 * 3 + 16 + 32 + 8 = 128
    assert _cost(nets.InvertedResidual(_mv2(), (6,)), 4, 6) == (528, 128)


def _transformer_hand(tokens: int, seqs: int, n: int, D: int, heads: int, hidden: int) -> int:
    """MACs of one transformer layer over ``seqs`` sequences of ``n`` tokens (``tokens`` in all):
    qkv + (QK^T + AV per head) + proj + fc1 + fc2."""
    return tokens * 3 * D * D + seqs * 2 * n * n * D + tokens * D * D + 2 * tokens * D * hidden


def test_mobilevit_hand_count_2d() -> None:
    # C 4, inner D 8, heads 2, one layer, patch 2, mlp 2 (hidden 16), kernel 3, 4x4 map:
    #   local 3x3:  16 * 4 * 4 * 9 = 2304;  inner 1x1: 16 * 8 * 4 = 512
    #   transformer: 16 tokens in 4 sequences (one per position in a 2x2 patch) of 4 patches:
    #     qkv 16 * 24 * 8 = 3072; QK^T and AV 4 seqs * 2 heads * 2 * 4 * 4 * 4 = 1024;
    #     proj 16 * 8 * 8 = 1024; fc1 16 * 16 * 8 = 2048; fc2 2048
    #   proj 1x1: 16 * 4 * 8 = 512;  fusion 3x3 (8 -> 4): 16 * 4 * 8 * 9 = 4608  -> 17152
    # params: local 144 + BN 8; inner 32; LN 16, qkv 192 + 24, proj 64 + 8, LN 16,
    #   fc1 128 + 16, fc2 128 + 8; final LN 16; proj 32 + BN 8; fusion 288 + BN 8   -> 1136
    assert _transformer_hand(16, 4, 4, 8, 2, 16) == 3072 + 1024 + 1024 + 2048 + 2048
    block = nets.MobileViTBlock(_mobilevit(), (4, 4))
    assert _cost(block, 4, 4, 4) == (17152, 1136)


def test_mobilevit_hand_count_resized_map() -> None:
    # 3x3 map, patch 2: the convs run at 3x3 (9 positions), the transformer at 4x4 (as above):
    #   local 9*4*4*9 = 1296; inner 9*8*4 = 288; transformer 9216; proj 9*4*8 = 288;
    #   fusion 9*4*8*9 = 2592 -> 13680 (resizing is not a MAC); params as at 4x4
    block = nets.MobileViTBlock(_mobilevit(), (3, 3))
    assert _cost(block, 4, 3, 3) == (13680, 1136)


def test_mobilevit_hand_count_1d() -> None:
    # length 6, patch 2: 2 sequences of 3 patches, 6 tokens; C 4, D 8, heads 2, kernel 3:
    #   local 6*4*4*3 = 288; inner 6*8*4 = 192; qkv 6*24*8 = 1152;
    #   QK^T and AV 2 seqs * 2 * 3 * 3 * 8 = 288; proj 6*8*8 = 384; fc1, fc2 768 each;
    #   proj 6*4*8 = 192; fusion 6*4*8*3 = 576                                -> 4608
    # params: local 48 + 8, inner 32, layer 600, LN 16, proj 32 + 8, fusion 96 + 8 -> 848
    assert _transformer_hand(6, 2, 3, 8, 2, 16) == 1152 + 288 + 384 + 768 + 768
    block = nets.MobileViTBlock(_mobilevit(), (6,))
    assert _cost(block, 4, 6) == (4608, 848)


def test_convbn_stem_and_conv_head_hand_count() -> None:
    cfg = NetCfg(
        3, (8, 8), 5, 8, (StageCfg(_mv2(8)),), stem_stride=2, stem="convbn", act="silu",
        head="conv", head_width=16,
    )  # fmt: skip
    # stem: 3 -> 8, 3x3 stride 2, no bias: 4x4 outputs * 8 * 27 = 3456 MACs; 216 + BN 16 = 232
    stem = nets.STEMS["convbn"](cfg)
    assert _cost(stem, 3, 8, 8) == (3456, 232)
    assert stem[0].bias is None
    # head on a (8, 2, 2) map: conv 8 -> 16: 4 * 16 * 8 = 512 MACs, 128 + BN 32 params;
    # fc 16 -> 5: 80 MACs, 85 params
    head = nets.HEADS["conv"](cfg, 8)
    assert _cost(head, 8, 2, 2) == (592, 128 + 32 + 85)
    # head width 0: no conv, mean then fc (8 -> 5: 40 MACs, 45 params)
    plain = nets.HEADS["conv"](NetCfg(**{**cfg.__dict__, "head_width": 0}), 8)
    assert _cost(plain, 8, 2, 2) == (40, 45)


# --------------------------------------------------------------------------- reference values


def _bn(bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    shape = (1, -1, *([1] * (x.dim() - 2)))
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean.view(shape)) * scale.view(shape) + bn.bias.view(shape)


def _conv_bn_act(seq: nn.Sequential, x: torch.Tensor, stride: int = 1, act: bool = True):
    conv = seq[0]
    k = conv.weight.shape[-1]
    fn = (F.conv1d, F.conv2d)[x.dim() - 3]
    y = _bn(seq[1], fn(x, conv.weight, None, stride, k // 2, groups=conv.groups))
    return F.silu(y) if act else y


def reference_mv2(block: nn.Module, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """expand -> depthwise -> project from the block's weights, plus x when the shape stays."""
    y = _conv_bn_act(block.expand, x)
    y = _conv_bn_act(block.dw, y, stride)
    y = _conv_bn_act(block.project, y, act=False)
    return x + y if y.shape == x.shape else y


def reference_mobilevit(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The MobileViT block written out: the positions sharing their offset inside a patch form
    one sequence (patches in row-major order), attended to with an explicit softmax."""
    size, p = tuple(x.shape[2:]), block.patch
    y = block.inner(_conv_bn_act(block.local, x))  # (B, D, *S)
    padded = tuple(math.ceil(n / p) * p for n in size)
    mode = ("linear", "bilinear")[len(size) - 1]
    if padded != size:
        y = F.interpolate(y, size=padded, mode=mode, align_corners=False)
    B, D = y.shape[:2]
    out = torch.empty_like(y)
    offsets = (
        [(i,) for i in range(p)] if len(size) == 1 else [(i, j) for i in range(p) for j in range(p)]
    )
    for off in offsets:
        index = (slice(None), slice(None), *(slice(o, None, p) for o in off))
        t = y[index].flatten(2).transpose(1, 2)  # (B, N, D): this offset in every patch
        for layer in block.layers:
            h = layer.heads
            q, k, v = (
                u.reshape(B, -1, h, D // h).transpose(1, 2)
                for u in layer.qkv(layer.norm1(t)).chunk(3, -1)
            )
            a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // h), dim=-1)
            t = t + layer.proj((a @ v).transpose(1, 2).reshape(B, -1, D))
            t = t + layer.mlp(layer.norm2(t))
        t = block.norm(t)
        out[index] = t.transpose(1, 2).reshape(B, D, *y[index].shape[2:])
    if padded != size:
        out = F.interpolate(out, size=size, mode=mode, align_corners=False)
    z = _conv_bn_act(block.proj, out)
    return _conv_bn_act(block.fusion, torch.cat((x, z), dim=1))


MV_CASES = [((4, 4), {}), ((5, 3), {"layers": 2}), ((3, 6), {"heads": 4, "kernel": 5})]
MV_CASES += [((8,), {}), ((7,), {"layers": 2, "patch": 3})]


def _check_mobilevit(size: tuple[int, ...], fields: dict) -> None:
    block = _randomise(nets.MobileViTBlock(_mobilevit(**fields), size))
    x = torch.randn(2, 4, *size)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_mobilevit(block, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("size", "fields"), MV_CASES)
def test_mobilevit_matches_reference(size: tuple[int, ...], fields: dict) -> None:
    _check_mobilevit(size, fields)


def _check_mv2(size: tuple[int, ...], in_width: int | None = None, stride: int = 1) -> None:
    block = _randomise(nets.InvertedResidual(_mv2(6), size, in_width=in_width, stride=stride))
    x = torch.randn(2, in_width or 6, *(n * stride for n in size))
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_mv2(block, x, stride), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [(5, 4), (7,)])
def test_mv2_matches_reference(size: tuple[int, ...]) -> None:
    _check_mv2(size)
    _check_mv2(size, in_width=4, stride=2)


def test_checks_fail_when_a_branch_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutations: without the transformer, the residual or the fusion's shortcut input, the
    reference checks above must fail."""

    def no_transformer(self, x):
        y = self.inner(self.local(x))
        return self.fusion(torch.cat((x, self.proj(y)), dim=1))

    def no_shortcut(self, x):
        y = nets.fold_patches(
            self.norm(self.layers(nets.unfold_patches(self.inner(self.local(x)), self.patch))),
            self.patch,
            self.padded,
        )
        return self.fusion(torch.cat((torch.zeros_like(x), self.proj(y)), dim=1))

    for mutant in (no_transformer, no_shortcut):
        with monkeypatch.context() as m:
            m.setattr(nets.MobileViTBlock, "forward", mutant)
            with pytest.raises(AssertionError):
                _check_mobilevit((4, 4), {})
    with monkeypatch.context() as m:
        m.setattr(
            nets.InvertedResidual, "forward", lambda self, x: self.project(self.dw(self.expand(x)))
        )
        with pytest.raises(AssertionError):
            _check_mv2((5, 4))


# --------------------------------------------------------------------------- export round trip

SPACE_2D = """
name = "mobilevit-small-2d"
[input]
kind = "image"
size = [12, 10]
channels = 3
classes = 5
[network]
act = "silu"
expand = 2.0
[stem]
kind = "convbn"
width = 8
kernel = 3
stride = 2
act = "silu"
[head]
kind = "conv"
width = 24
[[stage]]
operator = "mv2"
width = 8
[[stage]]
operator = "mv2"
width = 12
depth = 2
downsample = "block"
[[stage]]
operator = "mobilevit"
width = 12
heads = 2
inner = 16
layers = 2
"""

SPACE_1D = """
name = "mobilevit-small-1d"
[input]
kind = "sequence"
length = 20
channels = 2
classes = 4
[network]
expand = 3.0
[stem]
kind = "convbn"
width = 6
[head]
kind = "conv"
distill = true
[[stage]]
operator = "mv2"
width = 8
downsample = "block"
kernel = 5
[[stage]]
operator = "mobilevit"
width = 8
heads = 2
[[stage]]
operator = "mv2"
width = 10
downsample = "block"
[[stage]]
operator = "mobilevit"
width = 10
heads = 5
inner = 10
patch = 2
"""


def _round_trip(text: str, batch: int = 3) -> None:
    space = parse_space(text)
    (arch,) = space.enumerate()
    torch.manual_seed(0)
    model = _randomise(build_model(arch, space))
    namespace: dict = {}
    exec(compile(export_code(arch, space), "<exported>", "exec"), namespace)
    exported = namespace["FusionNet"]().eval()
    exported.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(space.input_shape(batch))
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(exported(x), want, rtol=0, atol=1e-5)
    assert want.shape == (batch, space.classes)


@pytest.mark.parametrize("text", [SPACE_2D, SPACE_1D], ids=["2d", "1d"])
def test_export_round_trip(text: str) -> None:
    _round_trip(text)


def test_round_trip_fails_when_the_toolkit_block_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    # the exported file holds its own copy of the block: a toolkit block that drops its
    # transformer must make the two disagree
    def no_transformer(self, x):
        return self.fusion(torch.cat((x, self.proj(self.inner(self.local(x)))), dim=1))

    monkeypatch.setattr(nets.MobileViTBlock, "forward", no_transformer)
    with pytest.raises(AssertionError):
        _round_trip(SPACE_2D)


@pytest.mark.parametrize("text", [SPACE_2D, SPACE_1D], ids=["2d", "1d"])
def test_onnx_export_agrees(text: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    space = parse_space(text)
    (arch,) = space.enumerate()
    model = _randomise(build_model(arch, space))
    write_onnx(model, torch.zeros(space.input_shape(1)), tmp_path / "m.onnx")
    x = torch.randn(space.input_shape(3))  # another batch than the traced one
    (got,) = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- zoo network


def test_zoo_mobilevit_xxs_is_timms_network() -> None:
    space = load_space(ZOO / "mobilevit_xxs.toml")
    assert space.num_architectures() == 1 and space.zoo["timm"] == "mobilevit_xxs"
    (arch,) = space.enumerate()
    with torch.device("meta"):
        model = build_model(arch, space)
    # timm 1.0.31: sum of mobilevit_xxs's parameters, and the outputs of its 5 stages at 224
    assert sum(p.numel() for p in model.parameters()) == 1_272_024
    timm_stages = [(16, 112, 112), (24, 56, 56), (48, 28, 28), (64, 14, 14), (80, 7, 7)]
    shapes = []
    x = torch.empty(1, 3, 224, 224, device="meta")
    x = model.stem(x)
    for stage in model.stages:
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    assert [shapes[i] for i in space.zoo["stage_ends"]] == timm_stages


# --------------------------------------------------------------------------- bad values


def test_bad_values_are_one_line_errors() -> None:
    with pytest.raises(CfgError, match=r"^heads: 3 heads do not divide inner width 16; allowed: "):
        _mobilevit(6, heads=3, inner=16)
    with pytest.raises(CfgError, match=r"^patch: 0 is too small"):
        _mobilevit(patch=0)
    with pytest.raises(CfgError, match=r"^expand: "):
        _mv2(expand=0)
    with pytest.raises(CfgError, match=r"^act: 'tanh' is not allowed; allowed: 'gelu'"):
        _mv2(act="tanh")
    bad_stem = SPACE_2D.replace('kind = "convbn"', 'kind = "convnb"')
    with pytest.raises(
        SpaceError, match=r"stem.kind: 'convnb' is not allowed; allowed: .*'convbn'"
    ) as err:
        parse_space(bad_stem)
    assert "\n" not in str(err.value)
    bad_head = SPACE_2D.replace('kind = "conv"', 'kind = "convs"')
    with pytest.raises(
        SpaceError, match=r"head.kind: 'convs' is not allowed; allowed: .*'conv'"
    ) as err:
        parse_space(bad_head)
    assert "\n" not in str(err.value)
    # "block" downsampling belongs to operators that downsample themselves: mv2 does, the
    # mobilevit block does not
    with pytest.raises(SpaceError, match=r"'block' needs an operator that downsamples itself"):
        parse_space(SPACE_2D.replace("inner = 16", 'inner = 16\ndownsample = "block"'))


def test_registered_with_their_fields() -> None:
    assert nets.OPS["mv2"].uses == ("kernel", "act", "expand") and nets.OPS["mv2"].downsamples
    assert nets.OPS["mobilevit"].uses == ("kernel", "heads", "mlp_ratio", "act")
    assert not nets.OPS["mobilevit"].downsamples
    assert "convbn" in nets.STEMS and "conv" in nets.HEADS


# --------------------------------------------------------------------------- separable attention


def _separable(width: int = 4, **fields) -> BlockCfg:
    base = dict(attention="separable", pos="none", mlp_ratio=0)
    return BlockCfg("attention", width, **{**base, **fields})


def test_separable_hand_count() -> None:
    # C 4, 3x3 map (N 9), no MLP, no position embedding:
    #   qkv 9 * 4 * (1 + 2 * 4) = 324; context (1 x N) @ (N x C) = 9 * 4 = 36; proj 9 * 4 * 4 = 144
    #   params: LN 8, qkv 36 + 9, proj 16 + 4 -> 73; a learned position embedding adds 4 * 9
    attn = nets.OPS["attention"]
    assert _cost(attn(_separable(), (3, 3)), 4, 3, 3) == (504, 73)
    assert _cost(attn(_separable(pos="learned"), (3, 3)), 4, 3, 3) == (504, 73 + 36)
    # 1-D, length 5: 5 * 4 * 9 + 5 * 4 + 5 * 16 = 280 MACs
    assert _cost(attn(_separable(), (5,)), 4, 5) == (280, 73)
    assert nets.reads("attention", "separable") == ("attention", "mlp_ratio", "pos")


def reference_separable(mixer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Separable attention written out: context = sum_n softmax_n(q) k_n; out = relu(v) * it."""
    B, C, *size = x.shape
    t = mixer.norm(x.flatten(2).transpose(1, 2))  # (B, N, C), no position embedding
    W, b = mixer.qkv.weight, mixer.qkv.bias
    q = t @ W[0] + b[0]  # (B, N)
    k, v = t @ W[1 : C + 1].T + b[1 : C + 1], t @ W[C + 1 :].T + b[C + 1 :]
    w = torch.exp(q - q.max(1, keepdim=True).values)
    context = (w[..., None] * k).sum(1) / w.sum(1)[:, None]  # (B, C)
    o = mixer.proj(torch.clamp(v, min=0) * context[:, None])
    return o.transpose(1, 2).reshape(B, C, *size)


def _check_separable(size: tuple[int, ...]) -> None:
    mixer = _randomise(nets.OPS["attention"](_separable(6), size)).attn
    x = torch.randn(2, 6, *size)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), reference_separable(mixer, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [(3, 4), (7,)])
def test_separable_matches_reference(size: tuple[int, ...]) -> None:
    _check_separable(size)


def test_separable_check_fails_without_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_context(self, qkv):  # values only: the tokens never meet
        C = (qkv.shape[-1] - 1) // 2
        return F.relu(qkv[..., 1 + C :])

    monkeypatch.setattr(nets.SeparableAttention, "attend", no_context)
    with pytest.raises(AssertionError):
        _check_separable((3, 4))


SEPARABLE_SPACE = """
name = "separable-small"
[input]
kind = "{kind}"
{size}
channels = 2
classes = 3
[stem]
width = 8
[[stage]]
operator = "{op}"
attention = "separable"
width = 8
depth = 2
"""


@pytest.mark.parametrize("op", ["attention", "parallel", "gated"])
@pytest.mark.parametrize("kind", ["image", "sequence"])
def test_separable_export_round_trip(op: str, kind: str) -> None:
    size = "size = [5, 6]" if kind == "image" else "length = 11"
    _round_trip(SEPARABLE_SPACE.format(kind=kind, size=size, op=op))


# --------------------------------------------------------------------------- initialisation


def test_initialisation_is_the_projects() -> None:
    # Kaiming (fan-out) for convolutions, Xavier for query/key/value (each a (D, D) block)
    D = 64
    block = nets.MobileViTBlock(_mobilevit(32, inner=D, heads=4), (4, 4))
    conv = block.inner.weight  # (D, 32, 1, 1): fan-out D
    assert 0.9 < conv.std() / math.sqrt(2.0 / D) < 1.1
    std = math.sqrt(2.0 / (D + D))
    for w in block.layers[0].qkv.weight.data.chunk(3, dim=0):
        assert w.abs().max() <= math.sqrt(6.0 / (D + D)) + 1e-6
        assert 0.9 * std < w.std() < 1.1 * std
    assert 0.9 * 0.02 < block.layers[0].mlp[0].weight.std() < 1.1 * 0.02  # truncated normal
    assert not block.layers[0].qkv.bias.any()
