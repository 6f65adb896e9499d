"""LeViT: the levit operator (attention with learned offset biases, attention downsample), the
levit stem, the bn head and the zoo network levit_128s: hand counts, a token-form reference,
export round trips (1-D and 2-D), mutations the tests must catch, one-line errors."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusion_nas import build_model, load_space, parse_space
from fusion_nas.deploy.export import export_code, write_export
from fusion_nas.errors import SpaceError
from fusion_nas.model import nets
from fusion_nas.model.cost import arch_cost, count_cost
from fusion_nas.model.nets import BlockCfg, CfgError, FusionNet, NetCfg, StageCfg

ZOO = Path(nets.__file__).resolve().parents[1] / "zoo" / "levit_128s.toml"
ATOL = 1e-5

# Small 2-D space: stem stride 2 of a 9x7 image -> 5x4 (odd height: the downsample's input
# size is not twice its output 3x2); downsampling stage enters with 8 // 4 = 2 heads.
SPACE_2D = """
name = "levit-2d"
[input]
kind = "image"
size = [9, 7]
channels = 3
classes = 4
[network]
act = "hardswish"
key_dim = 4
attn_ratio = 2.0
mlp_ratio = 2.0
[stem]
kind = "levit"
width = 8
kernel = 3
stride = 2
act = "hardswish"
[head]
kind = "bn"
distill = true
[[stage]]
operator = "levit"
width = 8
heads = [1, 2]
depth = 1
[[stage]]
operator = "levit"
width = 12
attn_heads = 3
depth = [1, 2]
downsample = "block"
"""

# The same in 1-D: a length-23 sequence, stem stride 4 (two convs) -> 6, downsample -> 3.
SPACE_1D = """
name = "levit-1d"
[input]
kind = "sequence"
length = 23
channels = 2
classes = 3
[network]
act = "silu"
key_dim = 2
attn_ratio = 1.5
down_ratio = 2.0
mlp_ratio = 1.0
[stem]
kind = "levit"
width = 8
kernel = 3
stride = 4
act = "relu"
[head]
kind = "bn"
[[stage]]
operator = "levit"
width = 8
heads = [2, 4]
depth = [1, 2]
[[stage]]
operator = "levit"
width = 6
attn_heads = 5
depth = 2
downsample = "block"
mlp_ratio = 0
"""


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Eval mode with every BN statistic, BN affine, attention bias and head weight drawn at
    random: the zero-initialised BN scales and biases would otherwise hide whole branches."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, nn.Linear):  # the head: std 0.02 gives logits of ~0.05
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
            if isinstance(m, nets.LevitAttention):
                m.attention_biases.copy_(torch.randn(m.attention_biases.shape, generator=g))
    return model.eval()


# --------------------------------------------------------------------------- hand counts
# One sample. A 1x1 conv + BN from a to b channels: a*b weights + 2b BN params, N*a*b MACs.
# Per head: key width kd, value width vd; N_q query and N_k key positions; bias table h*N_k.


def _block(size: tuple[int, ...], **fields) -> nn.Module:
    return nets.LevitBlock(BlockCfg("levit", 8, **fields), size)


def _cost(module: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    cost = count_cost(module, x)
    return cost.macs, cost.params


@pytest.mark.parametrize("size", [(3, 4), (12,)])
def test_block_hand_count(size: tuple[int, ...]) -> None:
    # C = 8, h = 2, kd = 2, vd = 2 * 2 = 4, MLP hidden 16, N = 12 positions (3x4 or 12).
    block = _block(size, heads=2, key_dim=2, attn_ratio=2.0, mlp_ratio=2.0, act="hardswish")
    # qkv 8 -> 2*(2+2+4) = 16: 128 + 32 | proj 8 -> 8: 64 + 16 | biases 2 * 12 = 24
    # MLP 8 -> 16 -> 8: (128 + 32) + (128 + 16)
    params = (128 + 32) + (64 + 16) + 24 + (128 + 32) + (128 + 16)
    # qkv 12*128 | q^T k 2*12*12*2 | v attn^T 2*4*12*12 | proj 12*64 | MLP 2 * 12*128
    macs = 12 * 128 + 2 * 12 * 12 * 2 + 2 * 4 * 12 * 12 + 12 * 64 + 2 * 12 * 128
    assert (params, macs) == (568, 7104)
    assert _cost(block, torch.zeros(1, 8, *size)) == (macs, params)


@pytest.mark.parametrize(("in_size", "out_size"), [((5, 4), (3, 2)), ((20,), (10,))])
def test_downsample_block_hand_count(in_size: tuple[int, ...], out_size: tuple[int, ...]):
    # 8 -> 12 channels, kd = 2, heads = 8 // 2 = 4, vd = down_ratio 4 * 2 = 8, hidden 24.
    cfg = BlockCfg("levit", 12, key_dim=2, attn_ratio=1.0, down_ratio=4.0, mlp_ratio=2.0)
    block = nets.LevitBlock(cfg, out_size, in_width=8, stride=2, in_size=in_size)
    n_k, n_q = math.prod(in_size), math.prod(out_size)  # 20 keys; 6 or 10 queries
    # kv 8 -> 4*(2+8) = 40: 320 + 80 | q 8 -> 4*2 = 8: 64 + 16 | biases 4 * 20 = 80
    # proj 32 -> 12: 384 + 24 | MLP 12 -> 24 -> 12: (288 + 48) + (288 + 24)
    params = (320 + 80) + (64 + 16) + 80 + (384 + 24) + (288 + 48) + (288 + 24)
    # kv on the keys | q on the queries | q^T k, 4 heads of 2 | v attn^T, 4 heads of 8
    # proj on the queries | MLP on the queries
    macs = n_k * 320 + n_q * 64 + 4 * n_q * n_k * 2 + 4 * 8 * n_q * n_k + n_q * 384
    macs += 2 * n_q * 288
    assert params == 1616 and macs == {6: 17344, 10: 24640}[n_q]
    assert _cost(block, torch.zeros(1, 8, *in_size)) == (macs, params)
    assert block(torch.zeros(2, 8, *in_size)).shape == (2, 12, *out_size)


def test_stem_and_head_hand_count() -> None:
    stage = StageCfg(BlockCfg("levit", 8, heads=2))
    cfg = NetCfg(3, (8, 8), 3, 8, (stage,), stem_stride=4, stem="levit", act="hardswish")
    cfg = dataclasses.replace(cfg, head="bn", distill=True)
    stem = nets.STEMS["levit"](cfg)
    # log2(4) = 2 convs 3x3 stride 2: 3 -> 4 (8x8 -> 4x4), 4 -> 8 (-> 2x2), BN after each
    assert _cost(stem, torch.zeros(1, 3, 8, 8)) == (
        4 * 4 * 4 * 27 + 8 * 2 * 2 * 36,  # out elements * C_in * 9
        (108 + 8) + (288 + 16),
    )
    assert [type(m).__name__ for m in stem] == ["LevitConvNorm", "Hardswish", "LevitConvNorm"]
    head = nets.HEADS["bn"](cfg, 8)
    # two (BN 8: 16, Linear 8 -> 3: 27), averaged; 2 * 24 MACs
    assert _cost(head, torch.zeros(2, 8, 2, 2)) == (2 * 2 * 24, 2 * (16 + 27))


def _cost_formula(space, arch) -> tuple[int, int]:
    """(MACs, params) of a levit network from the counting rules above (no model built)."""
    cfg = space.net_cfg(arch)
    macs = params = 0
    c_in, size = cfg.in_channels, cfg.size
    convs = cfg.stem_stride.bit_length() - 1
    for i in range(convs):  # the stem: 3x3 stride-2 convs + BN
        c_out = cfg.stem_width >> (convs - 1 - i)
        size = tuple((n + 1) // 2 for n in size)
        macs += math.prod(size) * c_in * c_out * cfg.stem_kernel ** len(size)
        params += c_in * c_out * cfg.stem_kernel ** len(size) + 2 * c_out
        c_in = c_out
    width = c_in
    for st in cfg.stages:
        b = st.block
        kd = b.key_dim or b.width // (b.attn_heads or b.heads)
        hidden = int(b.width * b.mlp_ratio)
        mlp_p = 2 * b.width * hidden + 2 * hidden + 2 * b.width if hidden else 0
        for j in range(st.depth):
            if j == 0 and st.downsample == "block":
                h, vd = width // kd, int(b.down_ratio * kd)
                n_k, size = math.prod(size), tuple((n + 1) // 2 for n in size)
                n_q = math.prod(size)
                params += width * h * (2 * kd + vd) + 2 * h * (2 * kd + vd) + h * n_k
                params += h * vd * b.width + 2 * b.width + mlp_p
                macs += n_k * width * h * (kd + vd) + n_q * width * h * kd
                macs += h * n_q * n_k * (kd + vd) + n_q * h * vd * b.width
                macs += 2 * n_q * b.width * hidden
            else:
                h, vd, n = b.attn_heads or b.heads, int(b.attn_ratio * kd), math.prod(size)
                params += b.width * h * (2 * kd + vd) + 2 * h * (2 * kd + vd) + h * n
                params += h * vd * b.width + 2 * b.width + mlp_p
                macs += n * b.width * h * (2 * kd + vd) + h * n * n * (kd + vd)
                macs += n * h * vd * b.width + 2 * n * b.width * hidden
        width = b.width
    heads = 2 if cfg.distill else 1
    params += heads * (2 * width + width * cfg.classes + cfg.classes)
    return macs + heads * width * cfg.classes, params


def test_zoo_network_is_timm_levit_128s() -> None:
    """timm 1.0.31 ``levit_128s`` (distilled): 7,777,058 parameters; stage outputs
    (128, 14, 14), (256, 7, 7), (384, 4, 4); 304,660,832 MACs by the rules above."""
    space = load_space(ZOO)
    (arch,) = space.enumerate()
    assert space.zoo["timm"] == "levit_128s" and space.zoo["stage_ends"] == [0, 1, 2]
    cost = arch_cost(arch, space)
    assert (cost.macs, cost.params) == _cost_formula(space, arch) == (304_660_832, 7_777_058)
    with torch.device("meta"):
        model = build_model(arch, space)
        x = model.stem(torch.empty(1, 3, 224, 224))
        shapes = []
        for stage in model.stages:
            x = stage(x)
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(128, 14, 14), (256, 7, 7), (384, 4, 4)]


@pytest.mark.parametrize("text", [SPACE_2D, SPACE_1D])
def test_small_networks_match_the_formula(text: str) -> None:
    space = parse_space(text)
    for arch in space.enumerate():
        cost = arch_cost(arch, space)
        assert (cost.macs, cost.params) == _cost_formula(space, arch), arch.describe()


# --------------------------------------------------------------------------- reference


def _ref_conv_bn(m: nets.LevitConvNorm, t: torch.Tensor) -> torch.Tensor:
    """Eval-mode 1x1 conv + BN on tokens (B, N, a) -> (B, N, b): timm's LinearNorm."""
    bn = m.bn
    y = t @ m.linear.weight.flatten(1).T
    return (y - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def _ref_bias(a: nets.LevitAttention, step: int) -> torch.Tensor:
    """(h, N_q, N_k) biases: pair (q, k) reads entry ravel(|q - k| per axis) of each head."""
    size = a.size
    keys = list(itertools.product(*(range(n) for n in size)))
    queries = list(itertools.product(*(range(0, n, step) for n in size)))
    flat = torch.empty(len(queries), len(keys), dtype=torch.long)
    for i, q in enumerate(queries):
        for j, k in enumerate(keys):
            off = [abs(u - v) for u, v in zip(q, k)]
            index = 0
            for axis, o in enumerate(off):
                index = index * size[axis] + o
            flat[i, j] = index
    return a.attention_biases[:, flat]


def _ref_block(block: nets.LevitBlock, x: torch.Tensor) -> torch.Tensor:
    """timm's token-form LeViT block (or LevitDownsample) written out, eval mode."""
    a = block.attn
    B, h, kd, vd = x.shape[0], a.heads, a.key_dim, a.val_dim
    t = x.flatten(2).transpose(1, 2)  # (B, N, C_in)
    if a.down:
        sub = x[(..., *[slice(None, None, 2)] * (x.dim() - 2))]
        out_size = sub.shape[2:]
        k, v = _ref_conv_bn(a.kv, t).view(B, -1, h, kd + vd).split([kd, vd], dim=3)
        q = _ref_conv_bn(a.q, sub.flatten(2).transpose(1, 2)).view(B, -1, h, kd)
    else:
        out_size = x.shape[2:]
        q, k, v = _ref_conv_bn(a.qkv, t).view(B, -1, h, 2 * kd + vd).split([kd, kd, vd], dim=3)
    logits = torch.einsum("bqhd,bkhd->bhqk", q, k) * kd**-0.5 + _ref_bias(a, 2 if a.down else 1)
    o = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), v).flatten(2)  # (B, N_q, h*vd)
    o = _ref_conv_bn(a.proj[1], a.proj[0](o))  # act, then 1x1 conv + BN back to C
    y = o if a.down else t + o
    if block.mlp is not None:
        m = block.mlp
        y = y + _ref_conv_bn(m.ln2, m.act(_ref_conv_bn(m.ln1, y)))
    return y.transpose(1, 2).reshape(B, -1, *out_size)


REF_CASES = [
    ((3, 4), {}, dict(heads=2, key_dim=3, attn_ratio=2.0, act="hardswish")),
    ((7,), {}, dict(heads=4, attn_ratio=1.5, mlp_ratio=0)),
    ((3, 2), dict(in_width=6, stride=2, in_size=(5, 3)), dict(key_dim=2, act="silu")),
    ((4,), dict(in_width=8, stride=2, in_size=(7,)), dict(key_dim=4, down_ratio=2.5)),
]


def _check_reference(size, build, fields) -> None:
    torch.manual_seed(0)
    block = _randomize(nets.LevitBlock(BlockCfg("levit", 8, **fields), size, **build))
    c_in, in_size = build.get("in_width", 8), build.get("in_size", size)
    x = torch.randn(2, c_in, *in_size)
    with torch.no_grad():
        got, want = block(x), _ref_block(block, x)
    assert got.shape == want.shape == (2, 8, *size)
    assert torch.allclose(got, want, atol=ATOL, rtol=0), (got - want).abs().max()


@pytest.mark.parametrize(("size", "build", "fields"), REF_CASES)
def test_block_is_the_token_form_formula(size, build, fields) -> None:
    _check_reference(size, build, fields)


def test_breaking_the_block_fails_the_reference_check(monkeypatch: pytest.MonkeyPatch) -> None:
    size, build, fields = REF_CASES[0]
    down = REF_CASES[2]
    # 1. the MLP residual dropped
    with monkeypatch.context() as m:
        m.setattr(nets.LevitBlock, "forward", lambda self, x: x + self.attn(x))
        with pytest.raises(AssertionError):
            _check_reference(size, build, fields)
    # 2. every pair reads the same bias: the relative-offset table lost
    with monkeypatch.context() as m:
        m.setattr(nets, "levit_bias_index", lambda s, step=1: _zeros_index(s, step))
        with pytest.raises(AssertionError):
            _check_reference(size, build, fields)
        with pytest.raises(AssertionError):
            _check_reference(*down)
    # 3. the downsample with a residual it does not have (shapes agree: 8 -> 8 channels here)
    with monkeypatch.context() as m:
        m.setattr(nets.LevitBlock, "forward", _residual_everywhere)
        with pytest.raises(AssertionError):
            _check_reference((3, 2), dict(in_width=8, stride=2, in_size=(6, 4)), down[2])
    _check_reference(size, build, fields)  # unpatched again: passes


def _zeros_index(size: tuple[int, ...], step: int) -> torch.Tensor:
    n_q = math.prod(len(range(0, n, step)) for n in size)
    return torch.zeros(n_q, math.prod(size), dtype=torch.long)


def _residual_everywhere(self, x: torch.Tensor) -> torch.Tensor:
    y = self.attn(x)
    y = y + F.avg_pool2d(x, 1, 2) if self.down else x + y
    return y if self.mlp is None else y + self.mlp(y)


# --------------------------------------------------------------------------- export


def _load(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "<exported>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("text", [SPACE_2D, SPACE_1D])
def test_export_round_trip(text: str) -> None:
    space = parse_space(text)
    for i, arch in enumerate(space.enumerate()):
        source = export_code(arch, space)
        assert "class LevitBlock" in source and "class BnHead" in source
        assert "class RepConvBlock" not in source  # pruned to what the network uses
        torch.manual_seed(i)
        toolkit = _randomize(build_model(arch, space), seed=i)
        exported = _load(source)["FusionNet"]().eval()
        exported.load_state_dict(toolkit.state_dict(), strict=True)
        x = torch.randn(space.input_shape(3))
        with torch.no_grad():
            want, got = toolkit(x), exported(x)
        assert got.shape == (3, space.classes)
        assert torch.allclose(got, want, atol=ATOL, rtol=0), arch.describe()
        assert want.std() > 0.05  # outputs of order one: the tolerance means something


def test_zoo_network_exports() -> None:
    space = load_space(ZOO)
    (arch,) = space.enumerate()
    namespace = _load(export_code(arch, space))
    with torch.device("meta"):
        model = namespace["FusionNet"]()
    assert sum(p.numel() for p in model.parameters()) == 7_777_058


# --------------------------------------------------------------------------- training mode


def test_trains_and_every_parameter_gets_a_gradient() -> None:
    space = parse_space(SPACE_2D)
    arch = space.enumerate()[-1]
    model = build_model(arch, space).train()
    out = model(torch.randn(4, *space.input_shape(1)[1:]))
    out.square().mean().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None]
    assert not silent


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("down_ratio = 2.0", "down_ratio = 0", r"network\.down_ratio: 0 is not allowed"),
        ("attn_heads = 5", "attn_heads = -1", r"stage\[1\]\.attn_heads: -1 is too small"),
        ("attn_heads = 5", "attn_heads = [5]", r"stage\[1\]\.attn_heads: .*one value"),
        ('operator = "levit"\nwidth = 6', 'operator = "conv"\nwidth = 6', r"'block' needs"),
    ],
)
def test_bad_space_values_get_one_line(old: str, new: str, message: str) -> None:
    assert old in SPACE_1D
    with pytest.raises(SpaceError, match=message) as err:
        parse_space(SPACE_1D.replace(old, new, 1))
    assert "\n" not in str(err.value)


def _net(**fields) -> NetCfg:
    stage = StageCfg(BlockCfg("levit", 8, heads=2, **fields.pop("block", {})))
    base = dict(stem_stride=4, stem="levit", head="bn")
    return NetCfg(3, (8, 8), 3, fields.pop("stem_width", 8), (stage,), **{**base, **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(stem_stride=6), r"^stem_stride: 6 is not allowed by a levit stem; allowed: 2, 4"),
        (dict(stem_stride=1), r"^stem_stride: 1 is not allowed by a levit stem"),
        (dict(stem_stride=8, stem_width=6), r"^stem_width: 6 does not halve 2 times .*of 4$"),
        (dict(head_width=16), r"^head_width: 16 is not allowed by a bn head; allowed: 0$"),
        (dict(block=dict(attn_ratio=0.1)), r"^attn_ratio: 0.1 times key width 4 leaves no"),
    ],
)
def test_bad_network_values_get_one_line(fields: dict, message: str) -> None:
    with pytest.raises(CfgError, match=message) as err:
        FusionNet(_net(**fields))
    assert "\n" not in str(err.value)


def test_downsample_needs_heads_and_value_channels() -> None:
    cfg = BlockCfg("levit", 8, key_dim=16)
    with pytest.raises(CfgError, match=r"^key_dim: 16 is wider than the 8 channels .*1\.\.8$"):
        nets.LevitBlock(cfg, (2, 2), in_width=8, stride=2)
    cfg = BlockCfg("levit", 8, key_dim=4, down_ratio=0.2)
    with pytest.raises(CfgError, match=r"^down_ratio: 0.2 times key width 4 leaves no value"):
        nets.LevitBlock(cfg, (2, 2), in_width=8, stride=2)
    with pytest.raises(ValueError, match="stride 3 is not allowed by a levit block"):
        nets.LevitBlock(cfg, (2, 2), in_width=8, stride=3)


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")),
    reason="onnx and onnxruntime not installed",
)
@pytest.mark.parametrize("text", [SPACE_2D, SPACE_1D])
def test_onnx_export_matches_pytorch(text: str, tmp_path: Path) -> None:
    # write_export checks onnxruntime's output against the PyTorch model (atol 1e-4)
    space = parse_space(text)
    arch = space.enumerate()[-1]
    torch.manual_seed(0)
    state = _randomize(build_model(arch, space)).state_dict()
    write_export(arch, space, tmp_path / "net.py", state_dict=state, onnx=tmp_path / "net.onnx")
    assert (tmp_path / "net.onnx").stat().st_size > 0
