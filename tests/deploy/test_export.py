"""Export: the exported source is nets.py pruned, equal to the toolkit model, lint-clean, safe."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from fusion_nas.deploy.export import export_code, write_export
from fusion_nas.errors import ExportError
from fusion_nas.model import nets
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.build import build_model
from fusion_nas.model.registry import list_attentions, list_ops
from fusion_nas.model.space import SearchSpace, load_space, parse_space
from tests.helpers.standalone import export_case, run_isolated

REPO = Path(__file__).resolve().parents[2]
NETS_SOURCE = Path(nets.__file__).read_text(encoding="utf-8")
SMALL_SPACES = ("mnist1d", "digits", "fashion-mnist")
# Exported and toolkit outputs differ by float rounding only (~1e-8 measured, ONNX included), so
# a 1e-3 difference, a real change in the network, must fail every equivalence check here.
EQUIV_ATOL = 1e-5

# Custom spaces that exercise what the built-in ones do not: window padding on every axis (and a
# window larger than an axis), depth > 1, a width change without downsampling.
PADDED_1D = """
name = "padded-1d"
description = "length 37: windows of 5 need padding"
[input]
kind = "sequence"
length = 37
channels = 2
classes = 3
[network]
mlp_ratio = 1.5
window = 5
[stem]
width = 8
kernel = 3
stride = 1
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
heads = [1, 2]
attention = ["global", "window", "linear"]
width = [8, 12]
depth = [1, 2]
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3, 5]
heads = [2, 4]
attention = ["global", "window", "linear"]
width = [16]
depth = [2]
downsample = true
window = 7
"""

PADDED_2D = """
name = "padded-2d"
description = "9x7 images: windows of 4 need padding on both axes; 3x4 after pooling"
[input]
kind = "image"
size = [9, 7]
channels = 3
classes = 4
[network]
mlp_ratio = 2.0
window = 4
[stem]
width = 8
kernel = 3
stride = 1
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3, 5]
heads = [1, 2]
attention = ["global", "window", "linear"]
width = [8, 12]
depth = [1, 2]
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3]
heads = [2, 4]
attention = ["global", "window", "linear"]
width = [16]
depth = [1, 2]
downsample = true
window = 5
"""


# The richer vocabulary: strided-conv and pooling downsampling as choices (odd lengths, where
# the two round differently), lean blocks (MLP ratio 0), channel and separable attention,
# width 4, depth 0.
VOCAB_1D = """
name = "vocab-1d"
[input]
kind = "sequence"
length = 23
channels = 2
classes = 3
[network]
window = 4
[stem]
width = 4
kernel = 3
stride = 2
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3]
heads = [1, 2]
attention = ["global", "window", "linear", "channel", "separable"]
mlp_ratio = [0, 1.5]
width = [4, 8]
depth = [0, 1]
downsample = ["none", "conv"]
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [5]
heads = [2]
attention = ["global", "window", "linear", "channel"]
mlp_ratio = 0
width = [8]
depth = [1, 2]
downsample = ["pool", "conv"]
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
heads = [1]
attention = ["channel", "global"]
width = [12]
depth = [0, 1]
downsample = "conv"
"""

VOCAB_2D = """
name = "vocab-2d"
[input]
kind = "image"
size = [9, 7]
channels = 3
classes = 4
[network]
mlp_ratio = 1.0
window = 4
[stem]
width = 4
kernel = 3
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3]
heads = [1, 2]
attention = ["global", "window", "linear", "channel", "separable"]
mlp_ratio = [0, 2]
width = [4, 8]
downsample = ["none", "conv"]
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3]
heads = [2]
attention = ["window", "channel"]
width = [8]
depth = [0, 2]
downsample = ["pool", "conv"]
window = 3
"""

# The core vocabulary these spaces exercise; the families' pieces have their own round trips.
CORE_OPS = ("conv", "attention", "parallel", "gated")
CORE_VARIANTS = ("global", "window", "linear", "channel")

CUSTOM = {
    "padded-1d": PADDED_1D,
    "padded-2d": PADDED_2D,
    "vocab-1d": VOCAB_1D,
    "vocab-2d": VOCAB_2D,
}


def _space(name: str) -> SearchSpace:
    if name in CUSTOM:
        return parse_space(CUSTOM[name])
    return load_space(name)


def _uniform_archs(space: SearchSpace) -> list[Architecture]:
    """Every operator in every stage, once per attention variant (falling back per stage)."""
    archs = []
    for op in list_ops():
        for variant in list_attentions():
            stages = []
            for spec in space.stages:
                ops = spec.operator
                stages.append(
                    StageChoice(
                        operator=op if op in ops else ops[0],
                        width=spec.width[-1],
                        depth=spec.depth[-1],
                        kernel=spec.kernel[-1],
                        heads=spec.heads[-1],
                        attention=variant if variant in spec.attention else spec.attention[0],
                        mlp_ratio=spec.mlp_ratio[-1],
                        downsample=spec.downsample[-1],
                    )
                )
            archs.append(Architecture(space.name, tuple(stages)))
    unique = {a.arch_id: a for a in archs}
    return list(unique.values())


def _window_arch(space: SearchSpace, ops: tuple[str, ...]) -> Architecture:
    """One stage per operator in ``ops``, all with window attention (two heads)."""
    stages = [
        StageChoice(op, spec.width[-1], spec.depth[-1], spec.kernel[0], 2, "window")
        for op, spec in zip(ops, space.stages)
    ]
    return Architecture(space.name, tuple(stages))


def _archs(space: SearchSpace, samples: int, seed: int = 0) -> list[Architecture]:
    rng = random.Random(seed)
    return _uniform_archs(space) + [space.sample(rng) for _ in range(samples)]


def _load(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}  # no __name__: dataclasses then need no sys.modules entry
    exec(compile(source, "<exported>", "exec"), namespace)
    return namespace


def _built(arch: Architecture, space: SearchSpace, seed: int = 0) -> torch.nn.Module:
    """The toolkit model in eval mode, its weights from ``seed`` whatever ran before.

    The head is redrawn from N(0, 1): its initial std of 0.02 gives logits of ~0.05, next to
    which a tolerance would be loose; these give logits of order 1.
    """
    torch.manual_seed(seed)
    model = build_model(arch, space).eval()
    with torch.no_grad():
        model.head.fc.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed))
    return model


def _classes(source: str) -> set[str]:
    return {n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}


def _expected_blocks(arch: Architecture, space: SearchSpace) -> set[str]:
    """The op classes of the stages and the mixers of the variants their configs name
    (BlockCfg checks ``attention`` on every block, so each variant named is registered)."""
    cfg = space.net_cfg(arch)
    ops = {nets.OPS[st.block.operator].__name__ for st in cfg.stages}
    ends = {nets.STEMS[cfg.stem].__name__, nets.HEADS[cfg.head].__name__}  # its stem and head
    return ops | ends | {nets.ATTENTIONS[st.block.attention].__name__ for st in cfg.stages}


def _covered(arch: Architecture, dim: int) -> set[tuple[Any, ...]]:
    return {(dim, s.operator, s.attention) for s in arch.stages}


def _independent_macs(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Output and MACs of ``model(x)`` counted by torch's own FLOP counter (not ``count_cost``).

    ``FlopCounterMode`` counts convolutions, matrix products and SDPA at the ATen level, 2 FLOPs
    per MAC; its table lacks the CPU kernel of SDPA, which gets torch's own SDPA formula.
    """
    aten = torch.ops.aten
    cpu_sdpa = {
        aten._scaled_dot_product_flash_attention_for_cpu: (
            lambda q, k, v, *args, **kwargs: sdpa_flop_count(q, k, v)
        )
    }
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        out = model(x)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return out, flops // 2


def _assert_equivalent(
    arch: Architecture, space: SearchSpace, batch: int, source: str | None = None
) -> None:
    source = source if source is not None else export_code(arch, space)
    kinds = [*nets.OPS.values(), *nets.ATTENTIONS.values(), *nets.STEMS.values()]
    registered = {c.__name__ for c in [*kinds, *nets.HEADS.values()]}
    assert _classes(source) & registered == _expected_blocks(arch, space)  # only the used ones
    generated = _load(source)["FusionNet"]()
    toolkit = _built(arch, space)
    got = {k: tuple(v.shape) for k, v in generated.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in toolkit.state_dict().items()}
    assert got == want, arch.describe()
    assert list(got) == list(want)  # same registration order, too
    n_params = sum(p.numel() for p in generated.parameters())
    assert n_params == sum(p.numel() for p in toolkit.parameters())
    generated.load_state_dict(toolkit.state_dict(), strict=True)
    x = torch.randn(space.input_shape(batch))
    with torch.no_grad():
        want_out = toolkit(x)
    got_out, macs = _independent_macs(generated, x)
    assert got_out.shape == (batch, space.classes)
    assert torch.allclose(got_out, want_out, rtol=0, atol=EQUIV_ATOL), arch.describe()
    # The docstring's cost for one sample, against counts that share nothing with the
    # exporter's (which uses fusion_nas.model.cost): torch's FLOP counter, for a batch (MACs scale
    # with the batch), and the parameters of the model the file builds.
    macs_doc, params_doc = _docstring_cost(source)
    assert macs == batch * macs_doc, arch.describe()
    assert params_doc == n_params, arch.describe()


def _docstring_cost(source: str) -> tuple[int, int]:
    """(MACs, parameters) per sample, as the module docstring states them."""
    doc = " ".join((ast.get_docstring(ast.parse(source)) or "").split())
    found = re.search(r"Per sample: ([\d,]+) MACs \(reported as FLOPs\), ([\d,]+) parameters", doc)
    assert found, doc
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


# --------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("name", [*SMALL_SPACES, *CUSTOM])
def test_generated_model_matches_toolkit(name: str) -> None:
    space = _space(name)
    archs = _archs(space, samples=4)
    for arch in archs:
        _assert_equivalent(arch, space, batch=3)
    # the list above really exercises every operator and, where the space allows, every variant
    ops = {s.operator for a in archs for s in a.stages} - {"skip"}
    variants = {s.attention for a in archs for s in a.stages} - {None}
    assert ops == {op for spec in space.stages for op in spec.operator}
    assert variants == {v for spec in space.stages for v in spec.attention}


def test_skipped_stage_strided_conv_and_channel_attention_export() -> None:
    space = _space("vocab-1d")
    arch = Architecture(
        space.name,
        (
            StageChoice("skip", 0, 0),
            StageChoice("gated", 8, 2, 5, 2, "channel", downsample="conv"),
            StageChoice("attention", 12, 1, None, 1, "channel"),
        ),
    )
    source = export_code(arch, space)
    _assert_equivalent(arch, space, batch=3, source=source)
    classes = _classes(source)
    # channel attention only: no token attention code comes along
    assert {"ChannelAttention", "GatedBlock", "AttentionBlock"} <= classes
    assert classes & {"AttentionMixer", "GlobalAttention"} == set() and "Mlp" in classes
    cfg = space.net_cfg(arch)
    assert len(cfg.stages) == 2  # the skipped stage is left out of CONFIG
    assert 'downsample="conv"' in source


def test_space_defaults_to_the_builtin_one() -> None:
    space = load_space("digits")
    arch = space.sample(2)
    assert export_code(arch) == export_code(arch, space)


# One conv stage, one global-attention stage: small enough to count every MAC by hand.
TINY = """
name = "tiny"
[input]
kind = "sequence"
length = 16
channels = 2
classes = 3
[network]
mlp_ratio = 2.0
[stem]
width = 4
kernel = 3
stride = 1
[[stage]]
operator = ["conv"]
kernel = [3]
width = [8]
[[stage]]
operator = ["attention"]
heads = [2]
attention = ["global"]
width = [8]
downsample = true
"""


def test_docstring_cost_is_the_hand_count() -> None:
    space = parse_space(TINY)
    (arch,) = space.enumerate()
    # Per sample. Stage 0: length 16, width 4 -> 8; stage 1: pooled to 8 tokens of width 8.
    macs = {
        "stem conv 2->4, k3": 4 * 16 * 2 * 3,
        "transition conv1x1 4->8": 8 * 16 * 4,
        "conv block 8->8, k3": 8 * 16 * 8 * 3,
        "qkv 8->24": 8 * 8 * 24,
        "QK^T and AV, 2 heads of 4": 2 * (2 * 8 * 8 * 4),
        "attention projection 8->8": 8 * 8 * 8,
        "mlp 8->16->8": 8 * 8 * 16 + 8 * 16 * 8,
        "head 8->3": 8 * 3,
    }
    params = {
        "stem conv + bias, BN": 4 * 2 * 3 + 4 + 2 * 4,
        "transition conv1x1, BN": 8 * 4 + 2 * 8,
        "conv block conv, BN": 8 * 8 * 3 + 2 * 8,
        "position embedding": 8 * 8,
        "attention LN, qkv, projection": 2 * 8 + (8 * 24 + 24) + (8 * 8 + 8),
        "mlp LN, fc1, fc2": 2 * 8 + (8 * 16 + 16) + (16 * 8 + 8),
        "final LN, head": 2 * 8 + (8 * 3 + 3),
    }
    assert (sum(macs.values()), sum(params.values())) == (9_112, 999)
    source = export_code(arch, space)
    assert _docstring_cost(source) == (9_112, 999)
    assert "Per sample: 9,112 MACs (reported as FLOPs), 999 parameters." in " ".join(source.split())


@pytest.mark.slow
def test_coatnet_like_matches_toolkit() -> None:
    space = load_space("coatnet-like")
    # every operator and every variant the space allows, in one 224x224 network
    full = Architecture(
        space.name,
        (
            StageChoice("gated", 64, 1, 3, 2, "window"),
            StageChoice("parallel", 192, 2, 3, 4, "linear"),
            StageChoice("attention", 384, 4, None, 8, "global"),
            StageChoice("conv", 768, 2, 3),
        ),
    )
    _assert_equivalent(full, space, batch=1)
    # two more, structure only (built on the meta device: no weights, no forward pass)
    others = [
        Architecture(
            space.name,
            (
                StageChoice("conv", 96, 2, 5),
                StageChoice("attention", 192, 3, None, 6, "window"),
                StageChoice("gated", 384, 5, 3, 12, "linear"),
                StageChoice("parallel", 768, 2, 3, 32, "global"),
            ),
        ),
        space.sample(11),
    ]
    for arch in others:
        namespace = _load(export_code(arch, space))
        with torch.device("meta"):
            generated, toolkit = namespace["FusionNet"](), build_model(arch, space)
        got = [(k, tuple(v.shape)) for k, v in generated.state_dict().items()]
        assert got == [(k, tuple(v.shape)) for k, v in toolkit.state_dict().items()]


def test_every_operator_and_variant_is_covered_in_1d_and_2d() -> None:
    covered: set[tuple[Any, ...]] = set()
    for name in [*SMALL_SPACES, *CUSTOM]:
        space = _space(name)
        for arch in _uniform_archs(space):
            covered |= _covered(arch, space.dim)
    for dim in (1, 2):
        assert (dim, "conv", None) in covered
        for op in ("attention", "parallel", "gated"):
            for variant in CORE_VARIANTS:
                assert (dim, op, variant) in covered


def test_same_seed_gives_same_initial_weights() -> None:
    space = _space("padded-2d")
    for arch in _uniform_archs(space)[::3]:
        namespace = _load(export_code(arch, space))
        torch.manual_seed(7)
        toolkit = build_model(arch, space).state_dict()
        torch.manual_seed(7)
        generated = namespace["FusionNet"]().state_dict()
        assert all(torch.equal(toolkit[k], generated[k]) for k in toolkit)


def test_export_leaves_the_global_rng_alone() -> None:
    space = load_space("mnist1d")
    before = torch.get_rng_state()
    export_code(space.sample(1), space)
    assert torch.equal(before, torch.get_rng_state())


# --------------------------------------------------------------------------- what is generated


def _definitions(source: str) -> dict[str, str]:
    """Top-level name -> its source lines (decorators and the comments right above included)."""
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.Assign, ast.AnnAssign)):
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            start = first - 1
            while start > 0 and lines[start - 1].startswith("#"):
                start -= 1
            text = "\n".join(lines[start : node.end_lineno])
            targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
            names = [getattr(node, "name", None)] + [getattr(t, "id", None) for t in targets]
            for name in filter(None, names):
                out[name] = text
    return out


def _names_read(source: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}


def test_unpruned_definitions_are_nets_source_verbatim() -> None:
    space = _space("padded-2d")
    nets_defs = _definitions(NETS_SOURCE)
    for arch in _uniform_archs(space):
        exported = _definitions(export_code(arch, space))
        assert exported.pop("CONFIG").startswith("CONFIG = NetCfg(")
        for name, text in exported.items():
            assert text == nets_defs[name], name  # equal by construction
        assert "FusionNet" in exported and "BlockCfg" in exported


def test_no_class_the_architecture_does_not_use() -> None:
    kinds = [*nets.OPS.values(), *nets.ATTENTIONS.values(), *nets.STEMS.values()]
    registered = {c.__name__ for c in [*kinds, *nets.HEADS.values()]}
    configs = {n for n, c in vars(nets).items() if dataclasses.is_dataclass(c)}
    for name in [*SMALL_SPACES, "padded-1d", "vocab-1d"]:
        space = _space(name)
        for arch in _uniform_archs(space):
            source = export_code(arch, space)
            tree = ast.parse(source)
            classes = _classes(source)
            assert classes & registered == _expected_blocks(arch, space)
            # any other class is FusionNet, a config, or read by another kept definition
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and node.name not in registered | configs:
                    others = [n for n in tree.body if n is not node]
                    read = {x.id for n in others for x in ast.walk(n) if isinstance(x, ast.Name)}
                    assert node.name == "FusionNet" or node.name in read, node.name


def test_conv_only_architecture_has_no_attention_blocks() -> None:
    space = load_space("mnist1d")
    arch = Architecture(
        space.name,
        tuple(
            StageChoice("conv", s.width[0], 1, 3, downsample=s.downsample[0]) for s in space.stages
        ),
    )
    source = export_code(arch, space)
    classes = _classes(source)
    assert {"ConvBlock", "ConvMixer", "FusionNet", "NetCfg", "StageCfg", "BlockCfg"} <= classes
    for cls in ("AttentionBlock", "ParallelBlock", "GatedBlock", "Mlp"):
        assert cls not in classes
    # BlockCfg checks its (default, unread) variant, so "global" is registered, with its base
    assert classes & {"WindowAttention", "LinearAttention", "ChannelAttention"} == set()
    assert "FUSION_INIT" not in _names_read(source)  # only the fused blocks read it


# The former built-in Fashion-MNIST space: a stride-2 stem, fixed MLP ratio, stages at 14x14,
# 7x7 and 3x3 (the docstring below pins its sizes and its stem's stride).
FM_STRIDE2 = """
name = "fm-stride2"
description = "Fashion-MNIST 28x28 grey images, stride-2 stem"
[input]
kind = "image"
size = [28, 28]
channels = 1
classes = 10
[network]
mlp_ratio = 2.0
window = 7
[stem]
width = 16
kernel = 3
stride = 2
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3, 5]
heads = [1, 2]
attention = ["window", "linear"]
width = [16, 32]
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3, 5]
heads = [2, 4]
attention = ["global", "window", "linear"]
width = [32, 48]
downsample = true
[[stage]]
operator = ["conv", "attention", "parallel", "gated"]
kernel = [3]
heads = [2, 4]
attention = ["global", "linear"]
width = [64, 96]
downsample = true
"""


def test_only_the_used_operators_and_variants_are_exported() -> None:
    space = parse_space(FM_STRIDE2)
    arch = Architecture(
        space.name,
        (
            StageChoice("gated", 32, 1, 3, 2, "window"),
            StageChoice("attention", 48, 1, None, 2, "window"),
            StageChoice("gated", 64, 1, 3, 2, "linear"),
        ),
    )
    source = export_code(arch, space)
    classes = _classes(source)
    assert {"GatedBlock", "AttentionBlock", "WindowAttention", "LinearAttention"} <= classes
    assert classes & {"ConvBlock", "ParallelBlock", "GlobalAttention"} == set()
    assert {"partition", "merge", "padded_size"} <= set(_definitions(source))
    single = Architecture(
        space.name,
        (
            StageChoice("attention", 16, 1, None, 1, "linear"),
            StageChoice("attention", 32, 1, None, 2, "linear"),
            StageChoice("parallel", 64, 1, 3, 2, "linear"),
        ),
    )
    source = export_code(single, space)
    defined = set(_definitions(source))
    assert {"LinearAttention", "AttentionBlock", "ParallelBlock"} <= defined
    for name in ("WindowAttention", "GlobalAttention", "partition", "merge", "ConvBlock"):
        assert name not in defined
    assert "import math" in source  # the config checks read it


def test_config_literal_reads_back_and_spells_only_non_defaults() -> None:
    space = _space("padded-1d")
    for arch in _uniform_archs(space):
        source = export_code(arch, space)
        cfg = space.net_cfg(arch)
        assert repr(_load(source)["CONFIG"]) == repr(cfg)
        config = ast.parse(source).body[-1]
        assert isinstance(config, ast.Assign) and ast.unparse(config.targets[0]) == "CONFIG"
        for call in ast.walk(config.value):
            if isinstance(call, ast.Call):
                fields = {f.name: f for f in dataclasses.fields(getattr(nets, call.func.id))}
                for kw in call.keywords:
                    default = fields[kw.arg].default
                    if default is not dataclasses.MISSING:  # a field with a default
                        assert ast.literal_eval(kw.value) != default, (kw.arg, default)
    text = export_code(_uniform_archs(space)[0], space)
    assert "CONFIG = NetCfg(\n    in_channels=2,\n    size=(37,),\n    classes=3," in text


def test_operator_registered_from_another_module_is_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "toy_operator.py").write_text(TOY_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        importlib.import_module("toy_operator")  # registers "toy" in nets.OPS
        ops = 'operator = ["conv", "attention", "parallel", "gated"]'
        space = parse_space(PADDED_2D.replace(ops, 'operator = ["toy", "conv"]', 1))
        toy = StageChoice("toy", 12, 2, 5)
        arch = Architecture(space.name, (toy, StageChoice("gated", 16, 2, 3, 4, "window")))
        source = export_code(arch, space)
        torch.manual_seed(3)
        toolkit = build_model(arch, space).eval()
    finally:
        nets.OPS.pop("toy", None)
        sys.modules.pop("toy_operator", None)
    defined = set(_definitions(source))
    assert {"ToyBlock", "SHIFT", "roll", "ConvMixer", "conv_nd", "GatedBlock"} <= defined
    assert {"WindowAttention", "partition"} <= defined
    for name in ("Unused", "UNUSED_SHIFT", "ConvBlock", "ParallelBlock", "LinearAttention"):
        assert name not in defined
    assert "nets" not in _names_read(source) and "make_conv" not in _names_read(source)
    assert '@register_op("toy", uses=("kernel",))' in source  # was nets.register_op
    assert "import fusion_nas" not in source and "from fusion_nas" not in source
    torch.manual_seed(3)
    exported = _load(source)["FusionNet"]().eval()
    assert all(torch.equal(a, b) for a, b in zip(exported.state_dict().values(),
                                                  toolkit.state_dict().values()))  # fmt: skip
    assert list(exported.state_dict()) == list(toolkit.state_dict())
    x = torch.randn(space.input_shape(2))
    with torch.no_grad():
        assert torch.equal(exported(x), toolkit(x))
    ruff = _ruff()
    if ruff is not None:
        (tmp_path / "out" / "toy.py").parent.mkdir()
        (tmp_path / "out" / "toy.py").write_text(source)
        for cmd in (["check"], ["format", "--check"]):
            done = subprocess.run(
                [*ruff, *cmd, "--config", str(REPO / "pyproject.toml"), "toy.py"],
                cwd=tmp_path / "out",
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, (cmd, done.stdout, done.stderr)


@pytest.mark.parametrize(
    ("header", "use", "message"),
    [
        ("import numpy as np\nHELPER = np.pi", "{} * HELPER", "an export cannot import"),
        ("from copy import copy as HELPER", "HELPER({})", "cannot copy; define it in module"),
    ],
)
def test_operator_needing_code_an_export_cannot_hold_is_rejected(
    header: str, use: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rolled = "torch.roll(x, SHIFT, dims=-1)"
    module = TOY_MODULE.replace("SHIFT = 2 ", f"{header}\nSHIFT = 2 ")
    module = module.replace(f"return {rolled}", f"return {use.format(rolled)}")
    (tmp_path / "toy_operator.py").write_text(module, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        importlib.import_module("toy_operator")
        ops = 'operator = ["conv", "attention", "parallel", "gated"]'
        space = parse_space(PADDED_1D.replace(ops, 'operator = ["toy"]'))
        arch = space.sample(0)
        with pytest.raises(ExportError, match=message):
            export_code(arch, space)
    finally:
        nets.OPS.pop("toy", None)
        sys.modules.pop("toy_operator", None)


TOY_MODULE = '''"""A toy operator registered from outside nets.py."""

from __future__ import annotations

import torch
from torch import nn

from fusion_nas.model import nets
from fusion_nas.model.nets import BlockCfg
from fusion_nas.model.nets import conv_nd as make_conv

SHIFT = 2  # how far the toy block rolls the map
UNUSED_SHIFT = 3


def roll(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, C, *S), rolled along the last axis."""
    return torch.roll(x, SHIFT, dims=-1)


class Unused(nn.Module):
    """Read by nothing the toy block needs."""

    shift = UNUSED_SHIFT


@nets.register_op("toy", uses=("kernel",))
class ToyBlock(nn.Module):
    """``mix(x + depthwise_conv_k(roll(x)))`` with a ConvMixer of nets.py."""

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        k, C = cfg.kernel, cfg.width
        self.conv = make_conv(len(size))(C, C, k, padding=k // 2, groups=C, bias=False)
        self.mix = nets.ConvMixer(len(size), C, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        return self.mix(x + self.conv(roll(x)))
'''


def test_docstring_describes_architecture_and_meta() -> None:
    space = parse_space(FM_STRIDE2)
    arch = Architecture(
        space.name,
        (
            StageChoice("gated", 32, 1, 5, 2, "window"),
            StageChoice("conv", 48, 1, 3),
            StageChoice("parallel", 64, 1, 3, 4, "linear"),
        ),
    )
    meta = {
        "val_accuracy": 0.91234,
        "search": "fm-pareto",
        "trial": 17,
        "store_url": "postgresql://alice:s3cret@db.example/nas",
        "weights_file": "best.pt",
    }
    doc = ast.get_docstring(ast.parse(export_code(arch, space, meta=meta)))
    assert doc is not None
    flat = " ".join(doc.split())
    for text in (
        arch.arch_id,
        "fm-stride2",
        "Fashion-MNIST 28x28 grey images, stride-2 stem",
        "Input (B, 1, 28, 28) -> logits (B, 10)",
        "stage operator kernel heads attention mlp width depth down size",
        "stem conv 3 - - - 16 - s2 14x14",
        "0 gated 5 2 window(7) 2 32 1 none 14x14",
        "1 conv 3 - - - 48 1 pool 7x7",
        "2 parallel 3 4 linear 2 64 1 pool 3x3",
        "Validation accuracy: 0.9123",
        "Search: fm-pareto",
        "Trial: 17",
        "postgresql://alice:***@db.example/nas",
        'model.load_state_dict(torch.load("best.pt", weights_only=True))',
    ):
        assert text in flat, text
    assert "s3cret" not in doc


def _ruff() -> list[str] | None:
    if subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode:
        exe = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
        return [exe] if exe else None
    return [sys.executable, "-m", "ruff"]


HUGE = """
name = "huge"
[input]
kind = "image"
size = [13, 11]
channels = 1
classes = 65536
[stem]
width = 12
[[stage]]
operator = ["attention"]
heads = [12]
attention = ["window"]
width = [12]
window = 65536
[[stage]]
operator = ["gated"]
heads = [16]
attention = ["window", "linear"]
width = [65536]
downsample = true
window = 1000
"""


def test_generated_code_is_ruff_clean(tmp_path: Path) -> None:
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed")
    # large values must still give short lines (counted on the meta device: nothing allocated)
    huge = parse_space(HUGE)
    arch = Architecture(
        huge.name,
        (
            StageChoice("attention", 12, 1, None, 12, "window"),
            StageChoice("gated", 65536, 1, 3, 16, "window"),
        ),
    )
    (tmp_path / "huge.py").write_text(export_code(arch, huge))
    rng = random.Random(1)
    for name in [*SMALL_SPACES, *CUSTOM]:
        space = _space(name)
        archs = _uniform_archs(space) + [space.sample(rng) for _ in range(2)]
        for i, arch in enumerate(archs):
            meta = {"search": "a long search name " * 8, "note": "x" * 300, "trial": 3}
            source = export_code(arch, space, meta=meta)
            (tmp_path / f"{name.replace('-', '_')}_{i}.py").write_text(source)
    # The code is nets.py's, so it meets nets.py's bar: the project's lint rules and formatting,
    # and ruff's default formatting at nets.py's line length.
    project = ["--config", str(REPO / "pyproject.toml")]
    for cmd in (
        ["check", *project],
        ["format", "--check", *project],
        ["format", "--check", "--isolated", "--line-length", "100"],
    ):
        done = subprocess.run([*ruff, *cmd, "."], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, (cmd, done.stdout, done.stderr)


# --------------------------------------------------------------------------- safety


def _payloads(marker: Path) -> list[str]:
    return [
        f"x=1)\nimport os;os.system('touch {marker}')#",
        f'"""\nimport os\nos.system("touch {marker}")\n"""',
        f"'''\n__import__('os').system('touch {marker}')\n'''",
        f'\\"""; open("{marker}", "w") #',
        'end with a quote and backslash \\\n"',
        f"\u2028import os\u2029os.system('touch {marker}')\x00\x1b[2J",
    ]


def _alnum(text: str) -> str:
    return "".join(ch for ch in text if ch.isascii() and ch.isalnum())


def _assert_inert(source: str, marker: Path) -> None:
    tree = ast.parse(source)
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in imports for a in n.names}
    assert names <= {"annotations", "math", "dataclass", "torch", "torch.nn.functional", "nn"}
    doc = ast.get_docstring(tree, clean=False)
    assert doc is not None and '"' not in doc.split("Standalone:")[0] and "\\" not in doc
    code = source.split('"""', 2)[2]  # everything after the module docstring
    assert "os.system" not in code and "touch" not in code and "__import__" not in code
    model = _load(source)["FusionNet"]()  # executing the module and building the model
    assert isinstance(model, torch.nn.Module)
    assert not marker.exists()


def test_injection_through_meta_is_inert(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    space = load_space("digits")
    arch = space.sample(0)
    for payload in _payloads(marker):
        for key in ("search", "store_url", "note", "weights_file"):
            source = export_code(arch, space, meta={key: payload})
            _assert_inert(source, marker)
            if key != "weights_file":  # the text is kept (letters and digits), made inert
                doc = ast.get_docstring(ast.parse(source)) or ""
                assert _alnum(payload) in _alnum(doc)


def test_injection_through_space_name_and_description_is_inert(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    files = []
    for i, payload in enumerate(_payloads(marker)):
        text = PADDED_2D.replace('name = "padded-2d"', f"name = {json.dumps(payload)}")
        text = text.replace(
            'description = "9x7 images: windows of 4 need padding on both axes; 3x4 after pooling"',
            f"description = {json.dumps(payload + payload)}",
        )
        space = parse_space(text)
        assert space.name == payload
        arch = Architecture(
            space.name, (StageChoice("conv", 8, 1, 3), StageChoice("conv", 16, 1, 3))
        )
        out = tmp_path / f"model_{i}.py"
        write_export(arch, space, out)
        _assert_inert(out.read_text(), marker)
        files.append(str(out))
    # also run the written files in a fresh interpreter
    script = "import runpy, sys\nfor f in sys.argv[1:]:\n    runpy.run_path(f)\n"
    subprocess.run([sys.executable, "-I", "-c", script, *files], cwd=tmp_path, check=True)
    assert not marker.exists()


@pytest.mark.parametrize(
    "meta",
    [
        {"search": object()},
        {"search": b"bytes"},
        {"trial": "1; import os"},
        {"trial": True},
        {"val_accuracy": "0.9"},
        {"val_accuracy": float("nan")},
        {"__import__('os')": 1},
    ],
)
def test_bad_meta_is_rejected_and_nothing_written(meta: dict[str, Any], tmp_path: Path) -> None:
    space = load_space("mnist1d")
    out = tmp_path / "model.py"
    with pytest.raises(ExportError):
        write_export(space.sample(0), space, out, meta=meta)
    assert list(tmp_path.iterdir()) == []


def test_architecture_outside_space_or_with_bad_values_is_rejected(tmp_path: Path) -> None:
    space = load_space("mnist1d")
    good = space.sample(0)
    bad = [
        Architecture(space.name, good.stages[:2]),  # wrong number of stages
        Architecture(space.name, (StageChoice("conv", 999, 1, 3), *good.stages[1:])),
        Architecture(space.name, (StageChoice("conv", 16.0, 1, 3), *good.stages[1:])),  # type: ignore[arg-type]
        Architecture(space.name, (StageChoice("conv", 16, True, 3), *good.stages[1:])),  # type: ignore[arg-type]
        Architecture(
            space.name, (StageChoice("attention", 16, 1, None, 2, "nope"), *good.stages[1:])
        ),
    ]
    for arch in bad:
        with pytest.raises(ExportError):
            write_export(arch, space, tmp_path / "model.py")
    assert list(tmp_path.iterdir()) == []


def test_operator_without_importable_source_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    class Fancy(torch.nn.Module):  # defined inside a function: no module-level source
        uses, dims = ("kernel",), (1, 2)

        def __init__(self, cfg: Any, size: tuple[int, ...]) -> None:
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    monkeypatch.setitem(nets.OPS, "fancy", Fancy)
    text = PADDED_1D.replace(
        'operator = ["conv", "attention", "parallel", "gated"]', 'operator = ["fancy", "conv"]'
    )
    space = parse_space(text)
    arch = Architecture(space.name, (StageChoice("fancy", 8, 1, 3), StageChoice("conv", 16, 2, 3)))
    with pytest.raises(ExportError, match="not defined at the top level"):
        export_code(arch, space)


# --------------------------------------------------------------------------- files


def test_write_export_needs_fitting_state_dict(tmp_path: Path) -> None:
    space = load_space("digits")
    arch = space.sample(0)
    with pytest.raises(ExportError, match="state_dict"):
        write_export(arch, space, tmp_path / "m.py", weights=tmp_path / "m.pt")
    other = build_model(space.sample(5), space).state_dict()
    with pytest.raises(ExportError, match="does not fit"):
        write_export(arch, space, tmp_path / "m.py", state_dict=other, weights=tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


RUNNER = """
import importlib.util, json, sys
# Hide the editable install of fusion_nas; the exported file must not need it.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
try:
    import fusion_nas  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("fusion_nas is importable")
import torch
out = {}
for name in sys.argv[1:]:
    # the short recipe for loading a file (the module is not in sys.modules while it runs)
    spec = importlib.util.spec_from_file_location(name, name + ".py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.FusionNet()
    model.load_state_dict(torch.load(name + ".pt", weights_only=True))
    model.eval()
    x = torch.load(name + ".input.pt", weights_only=True)
    with torch.no_grad():
        out[name] = model(x).tolist()
print(json.dumps(out))
"""


def test_exported_file_runs_without_fusion_nas(tmp_path: Path) -> None:
    cases = {
        "seq": (_space("padded-1d"), ("gated", "parallel")),
        "img": (_space("padded-2d"), ("attention", "gated")),
    }
    expected = {}
    for name, (space, ops) in cases.items():
        arch = _window_arch(space, ops)
        model = _built(arch, space, seed=1)
        meta = {"search": "standalone"}
        expected[name] = export_case(tmp_path, name, arch, space, model, meta)
        assert f'torch.load("{name}.pt"' in (tmp_path / f"{name}.py").read_text()
    got = run_isolated(RUNNER, list(cases), tmp_path, timeout=120)
    for name, want in expected.items():
        assert torch.allclose(torch.tensor(got[name]), want, rtol=0, atol=EQUIV_ATOL)


ONNX_CASES = (("padded-1d", ("gated", "attention")), ("padded-2d", ("parallel", "gated")))


def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    for name, ops in ONNX_CASES:
        space = _space(name)
        arch = _window_arch(space, ops)
        model = _built(arch, space, seed=2)
        path = tmp_path / f"{name}.onnx"
        write_export(arch, space, tmp_path / f"{name}.py", state_dict=model.state_dict(), onnx=path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = torch.randn(space.input_shape(3))
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        with torch.no_grad():
            want = model(x)
        assert want.abs().max() > 0.5  # logits of order 1: the tolerance is tight next to them
        assert torch.allclose(got, want, rtol=0, atol=EQUIV_ATOL)


@pytest.mark.parametrize(("name", "ops"), ONNX_CASES)
def test_onnx_file_off_by_1e_3_is_rejected(
    name: str, ops: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    real_export = torch.onnx.export
    shifted = []

    def export_then_shift_one_logit(model, args, f, **kwargs):
        """Export, then move the first class's head bias by 1e-3 in the written file."""
        real_export(model, args, f, **kwargs)
        proto = onnx.load(str(f))
        (bias,) = [t for t in proto.graph.initializer if t.name == "head.fc.bias"]
        values = onnx.numpy_helper.to_array(bias).copy()
        values[0] += 1e-3
        bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
        onnx.save(proto, str(f))
        shifted.append(f)

    monkeypatch.setattr(torch.onnx, "export", export_then_shift_one_logit)
    space = _space(name)
    arch = _window_arch(space, ops)
    state = _built(arch, space, seed=2).state_dict()
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"ONNX model does not match PyTorch \(max difference"):
        write_export(arch, space, out / "m.py", state_dict=state, onnx=out / "m.onnx")
    assert len(shifted) == 1  # the check ran on the shifted file, and nothing was kept
    assert list(out.iterdir()) == []


def test_onnx_missing_gives_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    space = load_space("digits")
    arch = space.sample(0)
    state = build_model(arch, space).state_dict()
    with pytest.raises(ExportError, match=r"pip install -e '\.\[onnx\]'"):
        write_export(arch, space, tmp_path / "m.py", state_dict=state, onnx=tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
