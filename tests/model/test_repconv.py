"""The re-parameterisable conv (``repconv``, RepVGG / MobileOne / FastViT style): hand counts
before and after folding, the block formula, fold equality, export round trips (1-D and 2-D,
ONNX of the folded form), mutations the tests must catch, one-line errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusion_nas import build_model, parse_space
from fusion_nas.deploy.export import export_code, fold_branches, write_export
from fusion_nas.errors import ExportError, SpaceError
from fusion_nas.model import nets
from fusion_nas.model.cost import count_cost
from fusion_nas.model.nets import BlockCfg, CfgError

FOLD_ATOL = 1e-5  # the brief's bound; measured differences are ~1e-6 (float32 rounding)

SPACE = """
name = "repconv-{dim}d"
[input]
{input}
classes = 3
[stem]
width = 6
kernel = 3
stride = 1
[[stage]]
operator = "repconv"
kernel = [1, 3]
act = ["relu", "gelu"]
width = 6
depth = 2
[[stage]]
operator = ["repconv", "conv"]
kernel = 5
act = "silu"
width = 8
downsample = "conv"
"""
INPUTS = {
    1: 'kind = "sequence"\nlength = 11\nchannels = 2',
    2: 'kind = "image"\nsize = [7, 5]\nchannels = 3',
}


def _space(dim: int):
    return parse_space(SPACE.format(dim=dim, input=INPUTS[dim]))


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Eval mode; BN statistics and affine parameters drawn at random (the defaults, mean 0
    var 1 scale 1 shift 0, would let a fold that forgot a BN term pass)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, nn.Linear):  # the head: logits of order one
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
    return model.eval()


def _block(size: tuple[int, ...], kernel: int = 3, act: str = "relu", width: int = 4):
    torch.manual_seed(0)
    cfg = BlockCfg("repconv", width, kernel=kernel, act=act)
    return _randomize(nets.RepConvBlock(cfg, size))


def _cost(module: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    cost = count_cost(module, x)
    return cost.macs, cost.params


# --------------------------------------------------------------------------- hand counts


@pytest.mark.parametrize(
    ("size", "kernel", "counts", "folded"),
    [
        # C = 4. Branches: k-conv C*C*k^d (no bias) + BN 2C; 1x1 conv C*C + BN 2C; BN 2C.
        # 2-D, k = 3, 5x5: params 144 + 8 + 16 + 8 + 8; MACs 25 * 4 * (36 + 4) (conv, 1x1)
        ((5, 5), 3, (4000, 184), (3600, 148)),  # folded: one 3x3 conv with bias, 144 + 4
        # 1-D, k = 3, length 7: params 48 + 8 + 16 + 8 + 8; MACs 7 * 4 * (12 + 4)
        ((7,), 3, (448, 88), (336, 52)),  # folded: 48 + 4 params, 7 * 4 * 12 MACs
        # 2-D, k = 5, 3x4: params 400 + 8 + 16 + 8 + 8; MACs 12 * 4 * (100 + 4)
        ((3, 4), 5, (4992, 440), (4800, 404)),
    ],
)
def test_hand_count_before_and_after_folding(size, kernel, counts, folded) -> None:
    block = _block(size, kernel)
    x = torch.zeros(1, 4, *size)
    assert _cost(block, x) == counts
    block.fuse()
    assert _cost(block, x) == folded
    assert [n for n, _ in block.named_parameters()] == ["fused.weight", "fused.bias"]


# --------------------------------------------------------------------------- formula, folding


def _bn(x: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0, bn.eps)


def _check_formula(size, kernel, act) -> None:
    """Eval mode: ``x + act(BN(conv_k(x)) + BN(conv_1(x)) + BN(x))``, written out."""
    block = _block(size, kernel, act)
    conv = (F.conv1d, F.conv2d)[len(size) - 1]
    x = torch.randn(2, 4, *size)
    with torch.no_grad():
        k = _bn(conv(x, block.conv[0].weight, padding=kernel // 2), block.conv[1])
        one = _bn(conv(x, block.scale[0].weight), block.scale[1])
        want = x + nets.make_act(act)(k + one + _bn(x, block.identity))
        got = block(x)
    assert torch.allclose(got, want, atol=1e-6, rtol=0), (got - want).abs().max()


def _check_fold(size, kernel, act) -> None:
    block = _block(size, kernel, act)
    x = torch.randn(3, 4, *size)
    with torch.no_grad():
        before = block(x)
        block.fuse()
        after = block(x)
    assert block.fused is not None and not hasattr(block, "identity")
    assert torch.allclose(before, after, atol=FOLD_ATOL, rtol=0), (before - after).abs().max()


CASES = [((9,), 3, "relu"), ((6,), 1, "gelu"), ((5, 7), 3, "hardswish"), ((6, 6), 5, "silu")]


@pytest.mark.parametrize(("size", "kernel", "act"), CASES)
def test_block_is_the_formula(size, kernel, act) -> None:
    _check_formula(size, kernel, act)


@pytest.mark.parametrize(("size", "kernel", "act"), CASES)
def test_folded_conv_equals_the_branches(size, kernel, act) -> None:
    _check_fold(size, kernel, act)


def test_breaking_a_branch_or_the_fold_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[2]

    def no_identity(self, x):
        return x + self.act(self.conv(x) + self.scale(x))

    def no_shift(weight, bn):  # the fold forgets the BN shift (running mean, bias)
        std = (bn.running_var + bn.eps).sqrt()
        return weight * (bn.weight / std).view(-1, *[1] * (weight.dim() - 1)), bn.bias * 0

    with monkeypatch.context() as m:
        m.setattr(nets.RepConvBlock, "forward", no_identity)
        with pytest.raises(AssertionError):
            _check_formula(*case)
    with monkeypatch.context() as m:
        m.setattr(nets, "fold_conv_bn", no_shift)
        with pytest.raises(AssertionError):
            _check_fold(*case)
    _check_formula(*case)  # unpatched again: both pass
    _check_fold(*case)


def test_fuse_twice_is_a_no_op_and_training_mode_still_runs() -> None:
    block = _block((5, 5))
    block.fuse()
    weight = block.fused.weight.clone()
    block.fuse()
    assert torch.equal(block.fused.weight, weight)
    block.train()
    out = block(torch.randn(2, 4, 5, 5))
    out.sum().backward()
    assert block.fused.weight.grad is not None


def test_whole_network_folds() -> None:
    for dim in (1, 2):
        space = _space(dim)
        for arch in space.enumerate():
            torch.manual_seed(0)
            model = _randomize(build_model(arch, space))
            x = torch.randn(space.input_shape(2))
            with torch.no_grad():
                before = model(x)
                folded = fold_branches(model)
                after = model(x)
            n_rep = sum(st.depth for st in arch.stages if st.operator == "repconv")
            assert folded == n_rep > 0
            assert torch.allclose(before, after, atol=FOLD_ATOL, rtol=0), arch.describe()


# --------------------------------------------------------------------------- export


def _load(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "<exported>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("dim", [1, 2])
def test_export_round_trip(dim: int) -> None:
    space = _space(dim)
    for i, arch in enumerate(space.enumerate()):
        source = export_code(arch, space)
        assert "class RepConvBlock" in source and "def fold_conv_bn" in source
        torch.manual_seed(i)
        toolkit = _randomize(build_model(arch, space), seed=i)
        exported = _load(source)["FusionNet"]().eval()
        exported.load_state_dict(toolkit.state_dict(), strict=True)
        x = torch.randn(space.input_shape(3))
        with torch.no_grad():
            want, got = toolkit(x), exported(x)
            assert torch.allclose(got, want, atol=1e-5, rtol=0), arch.describe()
            assert want.std() > 0.05  # outputs of order one: the tolerance means something
            fold_branches(exported)  # the exported file's own fuse()
            assert torch.allclose(exported(x), want, atol=FOLD_ATOL, rtol=0)


HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))


@pytest.mark.skipif(not HAS_ONNX, reason="onnx and onnxruntime not installed")
def test_onnx_of_the_folded_form(tmp_path: Path) -> None:
    import onnx

    space = _space(2)
    arch = next(a for a in space.enumerate() if a.stages[1].operator == "repconv")
    torch.manual_seed(0)
    state = _randomize(build_model(arch, space)).state_dict()
    convs = {}
    for fold in (False, True):
        path = tmp_path / f"net-{fold}.onnx"
        # the ONNX model is checked against the unfolded PyTorch model inside write_export
        write_export(
            arch, space, tmp_path / f"net-{fold}.py", state_dict=state, onnx=path, fold=fold
        )
        graph = onnx.load(str(path)).graph
        convs[fold] = sum(node.op_type == "Conv" for node in graph.node)
    # stem 1 + strided transition 1; 3 repconv blocks (depths 2 + 1): 2 convs each (k and
    # 1x1; the identity branch is a BN), 1 when folded
    assert convs == {False: 2 + 3 * 2, True: 2 + 3}


def test_fold_needs_onnx(tmp_path: Path) -> None:
    space = _space(1)
    arch = space.enumerate()[0]
    with pytest.raises(ExportError, match="^fold applies to the ONNX file; give onnx too$"):
        write_export(arch, space, tmp_path / "net.py", fold=True)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("kernel = [1, 3]", "kernel = [2, 3]", r"stage\[0\]\.kernel: 2 is even"),
        ('act = ["relu", "gelu"]', 'act = ["relu", "tanh"]', r"stage\[0\]\.act: 'tanh'"),
        ('act = "silu"', 'act = "elu"', r"stage\[1\]\.act: 'elu' is not allowed; allowed: 'gelu'"),
    ],
)
def test_bad_values_get_one_line(old: str, new: str, message: str) -> None:
    text = SPACE.format(dim=2, input=INPUTS[2])
    assert old in text
    with pytest.raises(SpaceError, match=message) as err:
        parse_space(text.replace(old, new, 1))
    assert "\n" not in str(err.value)
    with pytest.raises(CfgError, match=r"^kernel: 4 is even"):
        BlockCfg("repconv", 4, kernel=4)


def test_repconv_reads_kernel_and_act_only() -> None:
    assert nets.OPS["repconv"].uses == ("kernel", "act")
    assert _space(2).stages[0].count() == 4  # kernel x act
