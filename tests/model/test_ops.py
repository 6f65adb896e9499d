"""Operators: shape, finiteness, gradients, locality, batch independence, init, registry."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from torch import nn

from fusion_nas.errors import SpaceError
from fusion_nas.model import nets
from fusion_nas.model import registry as ops
from fusion_nas.model.nets import FUSION_INIT
from fusion_nas.model.registry import create_op, get_op, list_ops, op_uses
from tests.helpers.op_configs import VARIANTS, WINDOW, Cfg, op_configs
from tests.helpers.op_configs import cfg as make_cfg

CONFIGS = op_configs()
IDS = [c.id for c in CONFIGS]


CORE_OPS = ("conv", "attention", "parallel", "gated")  # the families' ops have their own tests


def test_config_spread_covers_the_matrix() -> None:
    for op in CORE_OPS:
        for dim in (1, 2):
            assert any(c.op == op and c.dim == dim for c in CONFIGS)
    assert {c.block.kernel for c in CONFIGS if c.op == "conv"} == {1, 3, 5, 7}
    assert {(c.block.heads, c.block.attention) for c in CONFIGS if c.op == "attention"} == {
        (h, v) for h in (1, 2, 4) for v in VARIANTS
    } | {(1, "channel")}
    for op in ("attention", "parallel", "gated"):  # channel attention and lean blocks
        assert any(c.op == op and c.block.attention == "channel" for c in CONFIGS)
        assert any(c.op == op and c.block.mlp_ratio == 0 for c in CONFIGS)
    assert any(c.size == (10,) and c.block.attention == "window" for c in CONFIGS)
    assert any(c.size == (7, 5) and c.block.attention == "window" for c in CONFIGS)


# --------------------------------------------------------------------------- shape, grads


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_shape_finite_and_gradients(cfg: Cfg) -> None:
    op = cfg.build().train()
    x = cfg.input().requires_grad_(True)
    y = op(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in op.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in op.parameters())


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_eval_mode_keeps_shape(cfg: Cfg) -> None:
    op = cfg.build().eval()
    with torch.no_grad():
        y = op(cfg.input(batch=1))
    assert y.shape == (1, cfg.channels, *cfg.size)
    assert torch.isfinite(y).all()


# --------------------------------------------------------------------------- attention values


def _reference_mixer(mixer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The attention mixer written out token by token: softmax attention inside each group of
    tokens (one group for ``global``, one per window for ``window``, real tokens only), or
    ``phi(q) (phi(k)^T v) / (phi(q) sum phi(k))`` with ``phi = elu + 1`` for ``linear``;
    ``x * sigmoid(W2 relu(W1 mean(x) + b1) + b2)`` per sample and channel for ``channel``."""
    B, C, *size = x.shape
    if mixer.variant == "channel":
        assert mixer.fc1.out_features == max(1, C // 4)  # reduction 4, at least one unit
        mean = x.flatten(2).mean(-1)  # (B, C)
        hidden = torch.relu(mean @ mixer.fc1.weight.T + mixer.fc1.bias)
        w = torch.sigmoid(hidden @ mixer.fc2.weight.T + mixer.fc2.bias)  # (B, C)
        return x * w.view(B, C, *([1] * len(size)))
    h, variant = mixer.heads, mixer.variant
    hd = C // h
    t = (x + mixer.pos).flatten(2).transpose(1, 2)  # (B, N, C), row-major tokens
    q, k, v = (
        u.reshape(B, -1, h, hd).transpose(1, 2)  # (B, h, N, hd)
        for u in mixer.qkv(mixer.norm(t)).chunk(3, dim=-1)
    )
    coords = list(itertools.product(*[range(s) for s in size]))  # same order as the tokens
    extent = [min(WINDOW, s) for s in size]
    groups: dict[tuple[int, ...], list[int]] = {}
    for n, c in enumerate(coords):
        key = tuple(i // e for i, e in zip(c, extent)) if variant == "window" else ()
        groups.setdefault(key, []).append(n)
    out = torch.zeros_like(q)
    for idx in groups.values():
        qi, ki, vi = q[:, :, idx], k[:, :, idx], v[:, :, idx]
        if variant == "linear":
            fq, fk = torch.nn.functional.elu(qi) + 1, torch.nn.functional.elu(ki) + 1
            num = fq @ (fk.transpose(-2, -1) @ vi)
            out[:, :, idx] = num / (fq @ fk.sum(dim=2).unsqueeze(-1))
        else:
            a = torch.softmax(qi @ ki.transpose(-2, -1) / math.sqrt(hd), dim=-1)
            out[:, :, idx] = a @ vi
    o = mixer.proj(out.transpose(1, 2).reshape(B, -1, C))  # (B, N, C)
    return o.transpose(1, 2).reshape(B, C, *size)


ATTN = [c for c in CONFIGS if c.op in ("attention", "parallel", "gated")]


@pytest.mark.parametrize("cfg", ATTN, ids=[c.id for c in ATTN])
def test_attention_mixer_matches_reference(cfg: Cfg) -> None:
    mixer = cfg.build().attn.eval()
    x = cfg.input(batch=2)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), _reference_mixer(mixer, x), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- fusion formulas


def _conv_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """README's ``conv(x)`` written out: ``GELU(BN(conv_k(x)))``, same padding, eval-mode BN."""
    conv, bn = block.conv.conv, block.conv.norm
    k = conv.weight.shape[-1]
    f = torch.nn.functional
    y = (f.conv1d if x.dim() == 3 else f.conv2d)(x, conv.weight, padding=k // 2)
    shape = (1, -1, *([1] * (x.dim() - 2)))
    y = (y - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return f.gelu(y * bn.weight.view(shape) + bn.bias.view(shape))


def _mlp_branch(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """README's MLP written out per token: ``Linear(GELU(Linear(LN(x))))`` over channels."""
    f = torch.nn.functional
    t = x.flatten(2).transpose(1, 2)  # (B, N, C)
    t = f.layer_norm(t, t.shape[-1:], mlp.norm.weight, mlp.norm.bias, mlp.norm.eps)
    t = f.linear(f.gelu(f.linear(t, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
    return t.transpose(1, 2).reshape(x.shape)


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, *([1] * (x.dim() - 2)))


def _randomise_batchnorm(block: nn.Module) -> None:
    """Non-trivial BN statistics and affine weights, so a skipped BN would show."""
    bn = block.conv.norm
    C = bn.num_features
    bn.running_mean.copy_(torch.randn(C) * 0.3)
    bn.running_var.copy_(torch.rand(C) + 0.5)
    bn.weight.data.copy_(torch.rand(C) + 0.5)
    bn.bias.data.copy_(torch.randn(C) * 0.2)


FORMULA_CASES = [
    ((12,), "global"),
    ((10,), "window"),
    ((5, 6), "linear"),
    ((7, 5), "window"),
    ((9,), "channel"),
    ((4, 6), "channel"),
]


@pytest.mark.parametrize(("size", "variant"), FORMULA_CASES)
def test_parallel_block_is_the_readme_formula(size: tuple[int, ...], variant: str) -> None:
    C = 8
    block = create_op("parallel", size, width=C, kernel=3, heads=2, attention=variant).eval()
    with torch.no_grad():
        _randomise_batchnorm(block)
        # distinct per-channel weights, far from the shared 0.1 start, so a swapped or a
        # scalar weight would not match
        block.conv_weight.copy_(torch.linspace(-1.5, 2.0, C))
        block.attn_weight.copy_(torch.linspace(0.7, -0.9, C))
        x = torch.randn(3, C, *size)
        a = _per_channel(block.conv_weight, x)
        b = _per_channel(block.attn_weight, x)
        # x + a * conv(x) + b * attn(x), then the MLP with its residual
        y = x + a * _conv_branch(block, x) + b * _reference_mixer(block.attn, x)
        want = y + _mlp_branch(block.mlp, y)
        torch.testing.assert_close(block(x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("size", "variant"), FORMULA_CASES)
def test_gated_block_is_the_readme_formula(size: tuple[int, ...], variant: str) -> None:
    C = 8
    block = create_op("gated", size, width=C, kernel=3, heads=2, attention=variant).eval()
    with torch.no_grad():
        _randomise_batchnorm(block)
        block.scale.copy_(torch.linspace(-1.2, 1.8, C))
        # a gate far from 0.5, so g and 1 - g differ clearly
        block.gate.weight.copy_(torch.randn(C, C))
        block.gate.bias.copy_(torch.linspace(-2.0, 2.0, C))
        x = torch.randn(3, C, *size) + torch.arange(3.0).view(3, 1, *([1] * len(size)))
        # g = sigmoid(Linear(mean over space of x)): one gate per sample and channel
        mean = x.flatten(2).mean(-1)  # (B, C)
        g = torch.sigmoid(mean @ block.gate.weight.T + block.gate.bias)
        assert (g - 0.5).abs().max() > 0.3 and g.std(0).max() > 0.05  # varies per sample
        g = g.view(*g.shape, *([1] * len(size)))
        s = _per_channel(block.scale, x)
        conv, attn = _conv_branch(block, x), _reference_mixer(block.attn, x)
        y = x + s * (g * conv + (1 - g) * attn)
        want = y + _mlp_branch(block.mlp, y)
        torch.testing.assert_close(block(x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["attention", "parallel", "gated"])
@pytest.mark.parametrize("variant", ["global", "channel"])
def test_lean_block_has_no_mlp(op: str, variant: str) -> None:
    # mlp_ratio 0: the block ends after its mixing step; no MLP parameters at all.
    C, size = 8, (6,)
    fields = {"heads": 2, "attention": variant}
    if op != "attention":
        fields["kernel"] = 3
    lean = create_op(op, size, width=C, mlp_ratio=0, **fields).eval()
    full = create_op(op, size, width=C, mlp_ratio=2.0, **fields).eval()
    assert lean.mlp is None
    assert {n for n, _ in lean.named_parameters()} == {
        n for n, _ in full.named_parameters() if not n.startswith("mlp.")
    }
    full.load_state_dict(lean.state_dict(), strict=False)
    x = torch.randn(2, C, *size)
    with torch.no_grad():
        # the lean block is the full block stopped before the MLP
        y = lean(x)
        torch.testing.assert_close(y + full.mlp(y), full(x), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- locality


def _perturb_at(x: torch.Tensor, index: tuple[int, ...], sample: int = 0) -> torch.Tensor:
    """Copy of ``x`` with random noise added to one token of one sample.

    Noise, not a constant shift: LayerNorm would cancel a shift that is equal on every channel.
    """
    x2 = x.clone()
    x2[(sample, slice(None), *index)] += torch.randn(x.shape[1])
    return x2


MIXING = [
    c
    for c in CONFIGS
    if c.op in ("attention", "parallel", "gated")
    and c.block.attention != "window"
    # one squeeze-excitation unit may start dead under its ReLU and pass nothing on
    and not (c.block.attention == "channel" and c.block.width < 8)
]


@pytest.mark.parametrize("cfg", MIXING, ids=[c.id for c in MIXING])
def test_attention_mixes_distant_tokens(cfg: Cfg) -> None:
    # A map large enough that the far corner lies outside any conv kernel (k <= 7) of the
    # fused operators, so only the attention branch can carry the change there.
    size = (16,) if cfg.dim == 1 else (9, 9)
    cfg = dataclasses.replace(cfg, size=size)
    op = cfg.build().eval()
    x = cfg.input(batch=1)
    first, last = (0,) * cfg.dim, tuple(s - 1 for s in size)
    with torch.no_grad():
        y, y2 = op(x), op(_perturb_at(x, first))
    change = (y2 - y)[(0, slice(None), *last)].abs().max()
    assert change > 1e-6


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("size", [(10,), (16,), (3,), (7, 5), (8, 8), (3, 6)])
def test_window_attention_stays_in_its_window(size: tuple[int, ...], heads: int) -> None:
    cfg = make_cfg("attention", size, heads=heads, attention="window")
    op = cfg.build().eval()
    x = cfg.input(batch=1)
    extent = [min(WINDOW, s) for s in size]
    src = tuple(s - 1 for s in size)  # last token: in the zero-padded window when s % 4 != 0
    with torch.no_grad():
        diff = (op(_perturb_at(x, src)) - op(x))[0].abs().amax(dim=0)  # (*S)
    n_same = n_other = 0
    for idx in itertools.product(*[range(s) for s in size]):
        same = all(i // e == j // e for i, j, e in zip(idx, src, extent))
        if same:
            assert diff[idx] > 1e-6, f"token {idx} shares a window with {src} but did not change"
            n_same += 1
        else:
            assert diff[idx] == 0, f"token {idx} is in another window than {src} but changed"
            n_other += 1
    assert n_same >= 1
    if size not in ((3,),):
        assert n_other >= 1  # there is more than one window


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_conv_does_not_see_beyond_its_kernel(dim: int, kernel: int) -> None:
    # Eval mode: in train mode BatchNorm's batch statistics span all positions.
    size = (15,) if dim == 1 else (11, 9)
    cfg = make_cfg("conv", size, kernel=kernel)
    op = cfg.build().eval()
    x = cfg.input(batch=1)
    src = tuple(s // 2 for s in size)
    with torch.no_grad():
        diff = (op(_perturb_at(x, src)) - op(x))[0].abs().amax(dim=0)  # (*S)
    r = kernel // 2
    inside = outside = 0
    for idx in itertools.product(*[range(s) for s in size]):
        if max(abs(i - j) for i, j in zip(idx, src)) > r:
            assert diff[idx] == 0, f"k={kernel}: output {idx} changed, source {src}"
            outside += 1
        else:
            inside += 1
    assert diff[src] > 1e-6
    assert inside == (2 * r + 1) ** dim and outside > 0


# --------------------------------------------------------------------------- batch independence


def _mixes_samples(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether changing sample 0 changes any output of the other samples (bit for bit)."""
    x2 = x.clone()
    x2[0] = torch.randn_like(x2[0])
    with torch.no_grad():
        y, y2 = module(x), module(x2)
    if isinstance(y, tuple):  # nn.MultiheadAttention returns (output, weights)
        y, y2 = y[0], y2[0]
    return not torch.equal(y[1:], y2[1:])


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_no_operator_mixes_samples(cfg: Cfg) -> None:
    # model.eval(): BatchNorm normalises with running statistics. In train mode the BatchNorm of
    # the conv branch shares statistics across the batch by design, so it is checked in eval.
    op = cfg.build().eval()
    assert not _mixes_samples(op, cfg.input(batch=3))


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c.op == "attention"][:9])
def test_attention_without_batchnorm_is_independent_in_train_mode_too(cfg: Cfg) -> None:
    op = cfg.build().train()
    assert not _mixes_samples(op, cfg.input(batch=3))


class _HVTStageBug(nn.Module):
    """The article's HVTStage: (B, N, C) fed to nn.MultiheadAttention without batch_first."""

    def __init__(self, dim: int, heads: int, batch_first: bool = False) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.flatten(2).transpose(1, 2)  # (B, N, C)
        return self.attn(t, t, t)[0]


def test_sample_mixing_check_catches_the_article_hvt_bug() -> None:
    x = torch.randn(3, 8, 4, 4)
    assert _mixes_samples(_HVTStageBug(8, 2).eval(), x)  # attends across the batch
    assert not _mixes_samples(_HVTStageBug(8, 2, batch_first=True).eval(), x)


# --------------------------------------------------------------------------- initialisation


@pytest.mark.parametrize("dim", [1, 2])
def test_fusion_weights_start_at_point_one(dim: int) -> None:
    size = (8,) if dim == 1 else (4, 4)
    assert FUSION_INIT == 0.1
    par = create_op("parallel", size, width=8, kernel=3, heads=2, attention="global")
    assert torch.equal(par.conv_weight.data, torch.full((8,), 0.1))
    assert torch.equal(par.attn_weight.data, torch.full((8,), 0.1))
    gated = create_op("gated", size, width=8, kernel=3, heads=2, attention="global")
    assert torch.equal(gated.scale.data, torch.full((8,), 0.1))


@pytest.mark.parametrize("dim", [1, 2])
def test_gate_starts_near_one_half(dim: int) -> None:
    size = (12,) if dim == 1 else (5, 6)
    op = create_op("gated", size, width=16, kernel=3, heads=2, attention="linear").eval()
    seen = []
    op.gate.register_forward_hook(lambda m, a, out: seen.append(torch.sigmoid(out)))
    with torch.no_grad():
        op(torch.randn(4, 16, *size))
    (g,) = seen
    assert g.shape == (4, 16)  # one gate per sample and channel
    assert (g - 0.5).abs().max() < 0.05


@pytest.mark.parametrize("op_name", ["attention", "parallel", "gated"])
def test_query_key_value_weights_are_xavier(op_name: str) -> None:
    C = 64
    op = create_op(op_name, (4, 4), width=C, kernel=3, heads=4, attention="global")
    bound = math.sqrt(6.0 / (C + C))  # xavier_uniform on a (C, C) block
    std = math.sqrt(2.0 / (C + C))
    default_std = 1.0 / math.sqrt(3.0 * C)  # nn.Linear's default kaiming_uniform(a=sqrt(5))
    assert abs(std - default_std) > 0.3 * std  # the check can tell the two apart
    for name, w in zip(("query", "key", "value"), op.attn.qkv.weight.data.chunk(3, dim=0)):
        assert w.abs().max() <= bound + 1e-6, name
        assert 0.9 * std < w.std() < 1.1 * std, name
    w = op.attn.proj.weight.data
    assert w.abs().max() <= bound + 1e-6 and 0.9 * std < w.std() < 1.1 * std


@pytest.mark.parametrize("op_name", ["conv", "parallel", "gated"])
@pytest.mark.parametrize("dim", [1, 2])
def test_conv_weights_are_kaiming(op_name: str, dim: int) -> None:
    C, k = 64, 3
    size = (8,) if dim == 1 else (4, 4)
    op = create_op(op_name, size, width=C, kernel=k, heads=2, attention="global")
    conv = op.mixer.conv if op_name == "conv" else op.conv.conv
    fan_out = C * k**dim
    std = math.sqrt(2.0 / fan_out)  # kaiming_normal, mode fan_out, ReLU gain
    assert 0.9 * std < conv.weight.std() < 1.1 * std
    assert abs(conv.weight.mean()) < 0.1 * std
    assert conv.bias is None  # BatchNorm follows


# --------------------------------------------------------------------------- registry


def test_registry_lists_the_four_operators() -> None:
    # the fusion operators first; the hybrid families' blocks after them (tested in their files)
    assert list_ops()[:4] == ("conv", "attention", "parallel", "gated")
    for name in list_ops():
        assert get_op(name).op_name == name


def test_registry_is_a_view_of_nets() -> None:
    # One registry: the toolkit's names and classes are those nets.py registered.
    assert list_ops() == tuple(nets.OPS)
    assert ops.list_attentions() == tuple(nets.ATTENTIONS)
    assert ops.list_attentions()[:4] == (*VARIANTS, "channel")  # the hybrid families' after
    assert ops.register_op is nets.register_op and ops.BlockCfg is nets.BlockCfg
    for name, cls in nets.OPS.items():
        assert get_op(name) is cls and op_uses(name) == cls.uses
    assert op_uses("conv") == ("kernel", "act", "norm", "tkernel")
    assert op_uses("attention") == ("heads", "attention", "mlp_ratio", "pos")
    fused = ("kernel", "heads", "attention", "mlp_ratio", "act", "norm", "pos", "tkernel")
    assert op_uses("parallel") == op_uses("gated") == fused


def test_create_op_takes_a_config_or_a_name_with_fields() -> None:
    block = nets.BlockCfg("parallel", 8, kernel=5, heads=2, attention="window", window=WINDOW)
    a = create_op(block, (6, 6))
    b = create_op("parallel", (6, 6), width=8, kernel=5, heads=2, attention="window", window=4)
    assert type(a) is type(b) is nets.ParallelBlock
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    with pytest.raises(SpaceError, match="one or the other"):
        create_op(block, (6, 6), kernel=3)


def test_unknown_operator_lists_allowed_ones() -> None:
    with pytest.raises(SpaceError) as info:
        create_op("mlp", (8,), width=8)
    msg = str(info.value)
    assert "\n" not in msg and "'mlp'" in msg
    for name in list_ops():
        assert repr(name) in msg


def test_bad_operator_arguments_raise_space_error() -> None:
    with pytest.raises(SpaceError, match="kernel: 4 is even"):
        create_op("conv", (8,), width=8, kernel=4)
    with pytest.raises(SpaceError, match="heads: 3 heads do not divide width 8"):
        create_op("attention", (8,), width=8, heads=3)
    with pytest.raises(SpaceError, match="attention: 'swin' is not an attention variant"):
        create_op("gated", (8,), width=8, heads=2, attention="swin")
    with pytest.raises(SpaceError, match=r"size \(8, 8, 8\) is not allowed"):
        create_op("conv", (8, 8, 8), width=8, kernel=3)
