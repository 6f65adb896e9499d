"""nets.py: torch-only, self-contained; configs hold the defaults and check every value."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from fusion_nas.model import nets
from fusion_nas.model.nets import BlockCfg, CfgError, NetCfg, StageCfg

SOURCE = inspect.getsource(nets)
TREE = ast.parse(SOURCE)


def test_imports_only_torch_and_the_standard_library() -> None:
    roots = set()
    for node in ast.walk(TREE):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            roots.add(node.module.split(".")[0])
    assert roots == {"math", "dataclasses", "torch"}
    assert all(r == "torch" or r in sys.stdlib_module_names for r in roots)


def test_runs_alone_in_an_isolated_interpreter() -> None:
    # -I: no current folder, no PYTHONPATH; the file must need nothing but torch.
    script = (
        "import runpy, sys\n"
        f"ns = runpy.run_path({nets.__file__!r})\n"
        "assert not [m for m in sys.modules if m.startswith('fusion_nas')]\n"
        "import torch\n"
        "cfg = ns['NetCfg'](1, (8,), 3, 4, (ns['StageCfg'](ns['BlockCfg']('gated', 4)),))\n"
        "print(tuple(ns['FusionNet'](cfg)(torch.zeros(2, 1, 8)).shape))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(2, 3)"


def test_every_forward_documents_its_shapes() -> None:
    for node in TREE.body:
        if isinstance(node, ast.ClassDef):
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "forward":
                    doc = ast.get_docstring(fn) or ""
                    assert "->" in doc and "(B" in doc, f"{node.name}.forward: {doc!r}"


def test_registries_hold_the_operators_and_variants() -> None:
    # the core vocabulary, in order; the families' pieces register after them
    assert list(nets.OPS)[:4] == ["conv", "attention", "parallel", "gated"]
    assert list(nets.ATTENTIONS)[:4] == ["global", "window", "linear", "channel"]
    for name, cls in nets.OPS.items():
        assert cls.op_name == name and set(cls.uses) <= set(nets.SEARCHABLE)
        assert issubclass(cls, nn.Module)


def test_register_op_refuses_a_second_name_and_unknown_fields() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        nets.register_op("conv", uses=("kernel",))(type("Again", (nn.Module,), {}))
    with pytest.raises(ValueError, match="'window' cannot be chosen"):
        nets.register_op("windowed", uses=("window",))(type("W", (nn.Module,), {}))
    assert "windowed" not in nets.OPS
    with pytest.raises(ValueError, match="registered twice"):
        nets.register_attention("global")(type("G", (nn.Module,), {}))


# --------------------------------------------------------------------------- configs


def test_defaults_live_in_block_cfg() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(BlockCfg)}
    assert defaults == {
        "operator": dataclasses.MISSING,
        "width": dataclasses.MISSING,
        "kernel": 3,
        "heads": 1,
        "attention": "global",
        "window": 4,
        "mlp_ratio": 2.0,
        "act": "gelu",
        "norm": "bn",
        "expand": 4.0,
        "pos": "learned",
        "se": 0.0,
        "key_dim": 0,
        "attn_ratio": 1.0,
        "layer_scale": 0.0,
        "inner": 0,
        "layers": 1,
        "patch": 2,
        "scales": 1,
        "split": 0.5,
        "down_ratio": 4.0,
        "attn_heads": 0,
        "tkernel": 1,
    }
    cfg = BlockCfg("conv", 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.kernel = 5  # type: ignore[misc]


BAD_BLOCKS = [
    ({"operator": "mlp"}, "operator", "'mlp' is not an operator; allowed: 'conv', 'attention'"),
    ({"operator": ["conv"]}, "operator", "['conv'] is not an operator"),
    ({"width": 0}, "width", "0 is too small; allowed: integers >= 1"),
    ({"width": 8.0}, "width", "8.0 is not an integer"),
    ({"width": True}, "width", "True is not an integer"),
    ({"kernel": 4}, "kernel", "4 is even; allowed: odd integers"),
    ({"kernel": -1}, "kernel", "-1 is too small"),
    ({"heads": 3}, "heads", "3 heads do not divide width 8; allowed: 1, 2, 4, 8"),
    ({"heads": 0}, "heads", "0 is too small"),
    ({"attention": "swin"}, "attention", "'swin' is not an attention variant; allowed: 'global'"),
    ({"attention": None}, "attention", "None is not an attention variant"),
    ({"window": 0}, "window", "0 is too small"),
    ({"mlp_ratio": -1}, "mlp_ratio", "-1 is not allowed; allowed: 0 (no MLP) or positive numbers"),
    ({"mlp_ratio": float("inf")}, "mlp_ratio", "inf is not allowed"),
    ({"mlp_ratio": float("nan")}, "mlp_ratio", "nan is not allowed"),
    ({"mlp_ratio": "2"}, "mlp_ratio", "'2' is not allowed"),
]


@pytest.mark.parametrize(("change", "field", "reason"), BAD_BLOCKS, ids=[b[2] for b in BAD_BLOCKS])
def test_block_cfg_names_the_bad_field(change: dict, field: str, reason: str) -> None:
    with pytest.raises(CfgError) as info:
        BlockCfg(**{"operator": "attention", "width": 8, **change})
    assert info.value.field == field
    assert reason in info.value.reason
    assert str(info.value) == f"{field}: {info.value.reason}"
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_heads_error_is_quick_for_a_huge_width() -> None:
    start = time.perf_counter()
    with pytest.raises(CfgError, match="3 heads do not divide width 100000000; allowed: 1, 2, 4"):
        BlockCfg("attention", 100_000_000, heads=3)
    assert time.perf_counter() - start < 0.5


def test_stage_and_net_cfg_checks() -> None:
    block = BlockCfg("conv", 8)
    with pytest.raises(CfgError, match="^depth: -1 is too small; allowed: integers >= 0"):
        StageCfg(block, -1)
    with pytest.raises(CfgError, match="^downsample: 'yes'"):
        StageCfg(block, 1, "yes")  # type: ignore[arg-type]
    stage = StageCfg(block)
    with pytest.raises(CfgError, match=r"^size: \(1, 2, 3, 4\) .*\(L,\), \(H, W\) or \(T, H, W\)"):
        NetCfg(1, (1, 2, 3, 4), 10, 8, (stage,))
    with pytest.raises(CfgError, match="^classes: 1 is too small; allowed: integers >= 2"):
        NetCfg(1, (8,), 1, 8, (stage,))
    with pytest.raises(CfgError, match="^stem_kernel: 2 is even"):
        NetCfg(1, (8,), 10, 8, (stage,), stem_kernel=2)
    with pytest.raises(CfgError, match="^stages: a network needs at least one stage"):
        NetCfg(1, (8,), 10, 8, ())
    down = StageCfg(block, downsample=True)
    with pytest.raises(CfgError) as info:
        NetCfg(1, (8, 8), 10, 8, (stage, down, down, down, down))
    assert info.value.field == "stages[4].downsample"
    assert info.value.reason == "input (8, 8) is too small for 4 downsampling stages"


def test_stage_sizes() -> None:
    block = BlockCfg("conv", 8)
    cfg = NetCfg(
        1,
        (28, 27),
        10,
        8,
        (StageCfg(block), StageCfg(block, downsample=True), StageCfg(block, downsample=True)),
        stem_kernel=3,
        stem_stride=2,
    )
    assert cfg.stem_size() == (14, 14)
    assert cfg.stage_sizes() == [(14, 14), (7, 7), (3, 3)]


# --------------------------------------------------------------------------- FusionNet


def _net(*stages: StageCfg, size=(12,)) -> NetCfg:
    return NetCfg(2, size, 5, 8, stages)


@pytest.mark.parametrize("size", [(12,), (6, 5)])
def test_fusion_net_runs_every_operator(size: tuple[int, ...]) -> None:
    stages = [
        StageCfg(BlockCfg(op, 8 * (i + 1), heads=2, attention=v), 1, i == 2)
        for i, (op, v) in enumerate(zip(nets.OPS, ("global", "window", "linear", "window")))
    ]
    model = nets.FusionNet(_net(*stages, size=size))
    y = model(torch.randn(3, 2, *size))
    assert y.shape == (3, 5) and torch.isfinite(y).all()
    assert model.cfg.stages == tuple(stages)


def test_fusion_net_without_config_uses_the_module_config(monkeypatch) -> None:
    with pytest.raises(ValueError, match="needs a NetCfg"):
        nets.FusionNet()
    cfg = _net(StageCfg(BlockCfg("attention", 8, heads=2)))
    monkeypatch.setattr(nets, "CONFIG", cfg)
    assert nets.FusionNet().cfg is cfg


def test_builds_on_the_meta_device() -> None:
    cfg = _net(StageCfg(BlockCfg("gated", 10**8, heads=4, attention="window")))
    with torch.device("meta"):
        model = nets.FusionNet(cfg)
        y = model(torch.empty(1, 2, 12))
    assert y.is_meta and y.shape == (1, 5)
    assert all(p.is_meta for p in model.parameters())


def test_downsample_spellings_and_transitions() -> None:
    block = BlockCfg("conv", 8)
    assert StageCfg(block, 1, True).downsample == "pool"  # the older spelling
    assert StageCfg(block, 1, False).downsample == "none"
    assert StageCfg(block, 1, "conv") == StageCfg(block, 1, "conv")
    with pytest.raises(
        CfgError, match="^downsample: 'stride'.*'none', 'pool', 'conv', 'patch', 'block', True"
    ):
        StageCfg(block, 1, "stride")  # type: ignore[arg-type]
    conv = nets.transition(1, 4, 8, "conv")  # k3 stride-2 conv to the new width -> BN
    assert [type(m) for m in conv] == [nn.Conv1d, nn.BatchNorm1d]
    assert (conv[0].kernel_size, conv[0].stride, conv[0].padding) == ((3,), (2,), (1,))
    assert conv(torch.zeros(2, 4, 9)).shape == (2, 8, 5)  # rounds up
    same = nets.transition(2, 8, 8, "conv")  # also at the same width
    assert same(torch.zeros(1, 8, 7, 5)).shape == (1, 8, 4, 3)
    assert isinstance(nets.transition(1, 8, 8, "none"), nn.Identity)
    assert [type(m) for m in nets.transition(1, 8, 8, True)] == [nn.AvgPool1d]


def test_depth_zero_stage_is_skipped() -> None:
    cfg = NetCfg(
        1,
        (16,),
        3,
        4,
        (
            StageCfg(BlockCfg("conv", 8), 1, "conv"),
            StageCfg(BlockCfg("attention", 16, heads=2), 0, "pool"),  # skipped: no pool
            StageCfg(BlockCfg("gated", 12, attention="channel", mlp_ratio=0), 1),
        ),
    )
    assert cfg.stage_sizes() == [(8,), (8,), (8,)]
    model = nets.FusionNet(cfg)
    assert len(model.stages) == 2
    assert model.stages[1][0][0].in_channels == 8  # the width carried over the skipped stage
    assert model.stages[1][1].mlp is None
    assert model(torch.randn(2, 1, 16)).shape == (2, 3)


def test_attention_variants_share_one_interface() -> None:
    # every variant is built as cls(cfg, size) and maps (B, C, *S) to itself
    for name, cls in nets.ATTENTIONS.items():
        cfg = BlockCfg("attention", 8, heads=2, attention=name)
        size = (5, 3) if 2 in cls.dims else (2, 5, 3)  # the video-only variants: (T, H, W)
        mixer = cls(cfg, size)
        assert mixer(torch.randn(2, 8, *size)).shape == (2, 8, *size)
    assert nets.ATTENTIONS["channel"].uses == ()
    assert nets.reads("gated", "channel") == (
        "kernel",
        "attention",
        "mlp_ratio",
        "act",
        "norm",
        "tkernel",
    )
    fused = ("kernel", "heads", "attention", "mlp_ratio", "act", "norm", "pos", "tkernel")
    assert nets.reads("gated", "window") == fused
    se = nets.ATTENTIONS["channel"](BlockCfg("attention", 3, attention="channel"), (4,))
    assert se.fc1.out_features == 1  # C // 4, at least one hidden unit
