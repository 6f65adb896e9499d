"""EfficientFormer pieces: the pool (Meta4D) and meta3d blocks, the efficientformer stem, the
tokenln head, the zoo network.

Costs are counted by hand in the comments; values are checked against a reference written here
(attention biases looked up offset by offset); exported files compute what the toolkit does.
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
    """Every parameter and BatchNorm statistic redrawn (variances positive; layer scales near
    1, not 1e-5), eval mode: every branch shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
                if name.endswith(("running_var", "gamma")):
                    t.abs_().add_(0.5)
    return module.eval()


def _pool(width: int = 4, **fields) -> BlockCfg:
    return BlockCfg("pool", width, **{"mlp_ratio": 2.0, "layer_scale": 0.5, **fields})


def _meta3d(width: int = 8, **fields) -> BlockCfg:
    base = dict(heads=2, key_dim=4, attn_ratio=2.0, mlp_ratio=2.0, layer_scale=0.5)
    return BlockCfg("meta3d", width, **{**base, **fields})


# --------------------------------------------------------------------------- hand counts


def test_pool_hand_count() -> None:
    # C 4, mlp 2 (hidden 8), pool 3x3, 5x5 map: pooling is no MAC;
    #   fc1 1x1: 25 * 8 * 4 = 800; fc2 1x1: 25 * 4 * 8 = 800                  -> 1600 MACs
    #   params: fc1 32 + 8, BN 16, fc2 32 + 4, BN 8, ls1 4, ls2 4             -> 108
    assert _cost(nets.PoolBlock(_pool(), (5, 5)), 4, 5, 5) == (1600, 108)
    # 1-D, length 7: 2 * 7 * 32 = 448 MACs, same parameters
    assert _cost(nets.PoolBlock(_pool(), (7,)), 4, 7) == (448, 108)
    # no layer scale, no MLP: no parameters, no MACs
    assert _cost(nets.PoolBlock(_pool(mlp_ratio=0, layer_scale=0), (5, 5)), 4, 5, 5) == (0, 0)


def test_pool_downsampling_hand_count() -> None:
    # in 3 -> C 4, conv 3x3 stride 2 with bias, 5x5 -> 3x3: 9 * 4 * 3 * 9 = 972 MACs,
    # 108 + 4 params, BN 8; then the block on 3x3: 2 * 9 * 32 = 576 MACs, 108 params
    block = nets.PoolBlock(_pool(), (3, 3), in_width=3, stride=2)
    assert _cost(block, 3, 5, 5) == (972 + 576, 112 + 8 + 108)
    assert block(torch.randn(2, 3, 5, 5)).shape == (2, 4, 3, 3)


def test_meta3d_hand_count() -> None:
    # C 8, heads 2, key_dim 4, value 2 * 4 = 8 per head, 3x3 map (N 9), mlp 2 (hidden 16):
    #   qkv 9 * 8 * 2 * (4 + 4 + 8) = 2304; QK^T 2 * 9 * 9 * 4 = 648; AV 2 * 9 * 9 * 8 = 1296;
    #   proj 9 * 16 * 8 = 1152; fc1 9 * 8 * 16 = 1152; fc2 1152                 -> 7704 MACs
    #   params: LN 16, qkv 256 + 32, proj 128 + 8, biases 2 * 9, ls1 8, LN 16,
    #           fc1 128 + 16, fc2 128 + 8, ls2 8                                  -> 770
    assert _cost(nets.Meta3DBlock(_meta3d(), (3, 3)), 8, 3, 3) == (7704, 770)
    # 1-D, length 5: qkv 5*8*32 = 1280; QK^T 2*25*4 = 200; AV 2*25*8 = 400; proj 5*16*8 = 640;
    # fc1, fc2 640 each -> 3800 MACs; params 770 - 18 + 2 * 5 = 762 (one bias per offset 0..4)
    assert _cost(nets.Meta3DBlock(_meta3d(), (5,)), 8, 5) == (3800, 762)


def test_efficientformer_stem_and_tokenln_head_hand_count() -> None:
    cfg = NetCfg(
        3, (8, 8), 5, 8, (StageCfg(_pool(8)),), stem_kernel=3, stem_stride=4,
        stem="efficientformer", act="relu", head="tokenln", distill=True,
    )  # fmt: skip
    assert cfg.stem_size() == (2, 2)
    # stem: 3 -> 4, 3x3 s2 on 8x8 -> 4x4: 16 * 4 * 27 = 1728; 4 -> 8, 3x3 s2 -> 2x2:
    # 4 * 8 * 36 = 1152 -> 2880 MACs; params 108 + 4, BN 8, 288 + 8, BN 16 -> 432
    assert _cost(nets.STEMS["efficientformer"](cfg), 3, 8, 8) == (2880, 432)
    # head on (8, 2, 2): LN 16 params; fc and fc_dist 8 -> 5: 2 * 40 MACs, 2 * 45 params
    assert _cost(nets.HEADS["tokenln"](cfg, 8), 8, 2, 2) == (80, 106)


# --------------------------------------------------------------------------- reference values


def test_offset_index_is_timms_relative_position_index() -> None:
    # timm: rel = |dy| * W + |dx| between positions in row-major order
    H, W = 3, 4
    pos = [(i, j) for i in range(H) for j in range(W)]
    want = torch.tensor([[abs(a - c) * W + abs(b - d) for (c, d) in pos] for (a, b) in pos])
    assert torch.equal(nets.offset_index((H, W)), want)
    assert torch.equal(
        nets.offset_index((4,)), torch.tensor([[abs(i - j) for j in range(4)] for i in range(4)])
    )


def _bn(bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    shape = (1, -1, *([1] * (x.dim() - 2)))
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean.view(shape)) * scale.view(shape) + bn.bias.view(shape)


def reference_pool(block: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    """Meta4D written out: the mean over the k-neighbourhood inside the map (padding not
    counted) minus x, scaled; then the BN conv MLP, scaled."""
    size = x.shape[2:]
    pooled = torch.empty_like(x)
    for idx in torch.cartesian_prod(*(torch.arange(n) for n in size)).reshape(-1, len(size)):
        window = tuple(slice(max(0, i - k // 2), i + k // 2 + 1) for i in idx.tolist())
        pooled[(..., *idx.tolist())] = x[(..., *window)].flatten(2).mean(-1)
    view = (1, -1, *([1] * len(size)))
    x = x + block.ls1.gamma.view(view) * (pooled - x)
    fc1, bn1, _, fc2, bn2 = block.mlp
    conv = (F.conv1d, F.conv2d)[len(size) - 1]
    h = F.gelu(_bn(bn1, conv(x, fc1.weight, fc1.bias)))
    return x + block.ls2.gamma.view(view) * _bn(bn2, conv(h, fc2.weight, fc2.bias))


def reference_meta3d(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Meta3D written out, the bias of each query/key pair found from their coordinates."""
    B, C, *size = x.shape
    attn, h = block.attn, block.attn.heads
    kd, vd = attn.key_dim, attn.val_dim
    t = x.flatten(2).transpose(1, 2)  # (B, N, C)
    qkv = attn.qkv(block.norm1(t)).reshape(B, -1, h, 2 * kd + vd)
    q, k, v = qkv[..., :kd], qkv[..., kd : 2 * kd], qkv[..., 2 * kd :]  # (B, N, h, *)
    coords = [
        tuple(int(c) for c in idx)
        for idx in torch.cartesian_prod(*(torch.arange(n) for n in size)).reshape(-1, len(size))
    ]
    strides = [math.prod(size[i + 1 :]) for i in range(len(size))]
    bias = torch.stack(
        [
            torch.stack(
                [
                    attn.biases[:, sum(abs(a - b) * s for a, b, s in zip(p, r, strides))]
                    for r in coords
                ],
                -1,
            )
            for p in coords
        ],
        -2,
    )  # (h, N, N)
    logits = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(kd) + bias
    o = torch.einsum("bhnm,bmhd->bnhd", torch.softmax(logits, -1), v).reshape(B, -1, h * vd)
    t = t + block.ls1.gamma * attn.proj(o)
    t = t + block.ls2.gamma * block.mlp(block.norm2(t))
    return t.transpose(1, 2).reshape(B, C, *size)


def _check_pool(size: tuple[int, ...], k: int = 3) -> None:
    block = _randomise(nets.PoolBlock(_pool(kernel=k), size))
    x = torch.randn(2, 4, *size)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_pool(block, x, k), rtol=1e-4, atol=1e-5)


def _check_meta3d(size: tuple[int, ...], **fields) -> None:
    block = _randomise(nets.Meta3DBlock(_meta3d(**fields), size))
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_meta3d(block, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("size", "k"), [((5, 4), 3), ((3, 6), 5), ((7,), 3), ((4,), 5)])
def test_pool_matches_reference(size: tuple[int, ...], k: int) -> None:
    _check_pool(size, k)


@pytest.mark.parametrize(
    ("size", "fields"),
    [((3, 3), {}), ((4, 2), {"heads": 4, "key_dim": 0, "attn_ratio": 1.5}), ((6,), {"heads": 1})],
)
def test_meta3d_matches_reference(size: tuple[int, ...], fields: dict) -> None:
    _check_meta3d(size, **fields)


def test_checks_fail_when_a_branch_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutations: without the attention biases, the pooling mixer or the MLP, the reference
    checks above must fail."""

    def no_bias(self, t):
        B, N, _ = t.shape
        qkv = self.qkv(t).reshape(B, N, self.heads, -1).transpose(1, 2)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=-1)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))

    with monkeypatch.context() as m:
        m.setattr(nets.BiasedAttention, "forward", no_bias)
        with pytest.raises(AssertionError):
            _check_meta3d((3, 3))
    for mutant in (
        lambda self, x: x + self.ls2(self.mlp(x)),  # no pooling mixer
        lambda self, x: x + self.ls1(self.pool(x) - x),  # no MLP
    ):
        with monkeypatch.context() as m:
            m.setattr(nets.PoolBlock, "forward", mutant)
            with pytest.raises(AssertionError):
                _check_pool((5, 4))


# --------------------------------------------------------------------------- export round trip

SPACE_2D = """
name = "efficientformer-small-2d"
[input]
kind = "image"
size = [18, 14]
channels = 3
classes = 5
[network]
mlp_ratio = 4.0
layer_scale = 1e-5
[stem]
kind = "efficientformer"
width = 8
kernel = 3
stride = 4
act = "relu"
[head]
kind = "tokenln"
distill = true
[[stage]]
operator = "pool"
width = 8
depth = 2
[[stage]]
operator = "pool"
width = 12
downsample = "block"
kernel = 5
[[stage]]
operator = "meta3d"
width = 12
heads = 3
key_dim = 4
attn_ratio = 2.0
depth = 2
"""

SPACE_1D = """
name = "efficientformer-small-1d"
[input]
kind = "sequence"
length = 24
channels = 2
classes = 4
[network]
layer_scale = 0.1
[stem]
kind = "efficientformer"
width = 6
kernel = 3
stride = 4
[head]
kind = "tokenln"
[[stage]]
operator = "pool"
width = 6
[[stage]]
operator = "pool"
width = 8
downsample = "block"
[[stage]]
operator = "meta3d"
width = 8
heads = 2
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
    monkeypatch.setattr(nets.Meta3DBlock, "forward", lambda self, x: x)  # the block dropped
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


def test_zoo_efficientformer_l1_is_timms_network() -> None:
    space = load_space(ZOO / "efficientformer_l1.toml")
    assert space.num_architectures() == 1 and space.zoo["timm"] == "efficientformer_l1"
    (arch,) = space.enumerate()
    with torch.device("meta"):
        model = build_model(arch, space)
    # timm 1.0.31: sum of efficientformer_l1's parameters (head_dist included), and its stage
    # outputs at 224 (its last stage gives the 7x7 map as 49 tokens)
    assert sum(p.numel() for p in model.parameters()) == 12_289_928
    timm_stages = [(48, 56, 56), (96, 28, 28), (224, 14, 14), (448, 7, 7)]
    shapes = []
    x = model.stem(torch.empty(1, 3, 224, 224, device="meta"))
    for stage in model.stages:
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    assert [shapes[i] for i in space.zoo["stage_ends"]] == timm_stages


# --------------------------------------------------------------------------- bad values


def test_bad_values_are_one_line_errors() -> None:
    with pytest.raises(CfgError, match=r"^attn_ratio: 0.1 gives value width < 1 per head"):
        _meta3d(attn_ratio=0.1)
    with pytest.raises(CfgError, match=r"^layer_scale: -1 is not allowed; allowed: 0 \(none\)"):
        _pool(layer_scale=-1)
    with pytest.raises(CfgError, match=r"^key_dim: -2 is too small"):
        _meta3d(key_dim=-2)
    for bad in ("stride = 4", "kernel = 3"):
        new = {"stride = 4": "stride = 2", "kernel = 3": "kernel = 5"}[bad]
        with pytest.raises(
            SpaceError, match=r"an efficientformer stem .* allowed: kernel = 3"
        ) as e:
            parse_space(SPACE_2D.replace(bad, new, 1))
        assert "\n" not in str(e.value)
    with pytest.raises(SpaceError, match=r"'block' needs an operator that downsamples itself"):
        parse_space(SPACE_2D + 'downsample = "block"\n')  # on the meta3d stage


def test_registered_with_their_fields() -> None:
    assert nets.OPS["pool"].uses == ("kernel", "mlp_ratio", "act") and nets.OPS["pool"].downsamples
    assert nets.OPS["meta3d"].uses == ("heads", "mlp_ratio", "act")
    assert not nets.OPS["meta3d"].downsamples
    assert "efficientformer" in nets.STEMS and "tokenln" in nets.HEADS
