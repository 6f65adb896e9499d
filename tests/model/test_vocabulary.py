"""The shared vocabulary: activation, norm and position choices, per-stage settings, stems and
heads by name, patch and block downsampling; old architectures keep their ids and weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from fusion_nas import build_model, parse_space
from fusion_nas.errors import SpaceError
from fusion_nas.model import nets
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.cost import count_cost
from fusion_nas.model.nets import BlockCfg, CfgError, NetCfg, StageCfg

SPACE = """
name = "vocab"
[input]
kind = "image"
size = [8, 8]
channels = 3
classes = 5
[network]
mlp_ratio = 1.0
pos = "none"
[stem]
width = 8
kernel = 2
stride = 2
kind = "patch"
[head]
distill = true
[[stage]]
operator = ["conv", "attention"]
act = ["gelu", "hardswish"]
norm = ["bn", "ln"]
pos = ["none", "cpe"]
width = 8
heads = 2
[[stage]]
operator = "conv"
width = 16
downsample = "patch"
layer_scale = 0.5
"""


def _space():
    return parse_space(SPACE, source="vocab.toml")


def test_choices_multiply_only_for_the_operators_that_read_them() -> None:
    space = _space()
    # stage 0: conv reads act x norm (4), attention reads pos (2): 6; stage 1: one choice
    assert space.stages[0].count() == 6 == len(space.stages[0].options())
    assert space.num_architectures() == 6
    conv = [c for c in space.stages[0].options() if c.operator == "conv"]
    assert {(c.act, c.norm, c.pos) for c in conv} == {
        ("gelu", "bn", None),
        ("gelu", "ln", None),
        ("hardswish", "bn", None),
        ("hardswish", "ln", None),
    }
    assert dict(space.stages[1].settings)["layer_scale"] == 0.5


def test_chosen_fields_reach_the_modules() -> None:
    space = _space()
    arch = Architecture(
        "vocab",
        (
            StageChoice("conv", 8, kernel=3, act="hardswish", norm="ln"),
            StageChoice("conv", 16, kernel=3),
        ),
    )
    model = build_model(arch, space)
    mixer = model.stages[0][1].mixer
    assert isinstance(mixer.act, nn.Hardswish) and isinstance(mixer.norm, nets.ChannelNorm)
    assert isinstance(model.stem, nets.PatchStem)
    assert model.stem[0].kernel_size == (2, 2) and model.stem[0].stride == (2, 2)
    patch = model.stages[1][0]  # LayerNorm over channels, then a 2x2 stride-2 conv
    assert isinstance(patch[0], nets.ChannelNorm) and patch[1].kernel_size == (2, 2)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    assert model.cfg.stage_sizes() == [(4, 4), (2, 2)]


def test_attention_positions() -> None:
    size = (4, 4)
    for pos, learned, cpe in (("learned", True, False), ("none", False, False), ("cpe", 0, 1)):
        block = nets.OPS["attention"](BlockCfg("attention", 8, heads=2, pos=pos), size)
        assert (block.attn.pos is not None) == bool(learned)
        assert (block.attn.cpe is not None) == bool(cpe)
        assert block(torch.randn(1, 8, *size)).shape == (1, 8, *size)
    with pytest.raises(
        CfgError, match="^pos: 'bias' is not supported by attention variant 'linear'"
    ):
        nets.OPS["attention"](BlockCfg("attention", 8, attention="linear", pos="bias"), size)
    # a conv encoding costs a depthwise 3x3 conv: 8 * 9 weights + 8 biases, 8 * 16 * 9 MACs
    cpe = nets.OPS["attention"](BlockCfg("attention", 8, pos="cpe", mlp_ratio=0), size)
    none = nets.OPS["attention"](BlockCfg("attention", 8, pos="none", mlp_ratio=0), size)
    x = torch.randn(1, 8, *size)
    a, b = count_cost(cpe, x), count_cost(none, x)
    assert (a.params - b.params, a.macs - b.macs) == (8 * 9 + 8, 8 * 16 * 9)


def test_the_distilled_head_averages_two_classifiers() -> None:
    cfg = NetCfg(3, (8, 8), 5, 8, (StageCfg(BlockCfg("conv", 8)),), distill=True)
    head = nets.HEADS["ln"](cfg, 8)
    x = torch.randn(2, 8, 3, 3)
    pooled = head.norm(x.mean(dim=(2, 3)))
    want = (head.fc(pooled) + head.fc_dist(pooled)) / 2
    assert torch.allclose(head(x), want)
    with torch.no_grad():
        head.fc_dist.weight.add_(1.0)
    assert not torch.allclose(head(x), want)  # the second classifier is used


def test_weights_saved_before_heads_were_modules_still_load() -> None:
    cfg = NetCfg(3, (8, 8), 5, 8, (StageCfg(BlockCfg("conv", 8)),))
    model = nets.FusionNet(cfg)
    state = model.state_dict()
    old = {
        {"head.norm.weight": "norm.weight", "head.norm.bias": "norm.bias"}.get(
            k, k.replace("head.fc.", "head.")
        ): v
        for k, v in state.items()
    }
    assert "norm.weight" in old and "head.weight" in old
    fresh = nets.FusionNet(cfg)
    fresh.load_state_dict(old)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_block_downsampling_needs_an_operator_that_downsamples() -> None:
    with pytest.raises(CfgError, match="^downsample: 'block' needs an operator that downsamples"):
        StageCfg(BlockCfg("conv", 8), 1, "block")
    bad = SPACE.replace('downsample = "patch"', 'downsample = "block"')
    with pytest.raises(SpaceError, match=r"stage\[1\]\.downsample: 'block' needs an operator"):
        parse_space(bad, source="vocab.toml")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('act = ["gelu", "hardswish"]', 'act = ["gelu", "tanh"]', r"stage\[0\]\.act: 'tanh'"),
        ('norm = ["bn", "ln"]', 'norm = "gn"', r"stage\[0\]\.norm: 'gn' is not allowed"),
        ("layer_scale = 0.5", "layer_scale = [0.5]", r"stage\[1\]\.layer_scale: .*one value"),
        ("layer_scale = 0.5", "layer_scale = -1", r"stage\[1\]\.layer_scale: -1"),
        (
            'kind = "patch"',
            'kind = "fancy"',
            r"stem\.kind: 'fancy' is not allowed; allowed: .*'conv'",
        ),
        ("kernel = 2\n", "kernel = 3\n", r"stem\.kernel: a patch stem's kernel 3 must equal"),
        ("distill = true", 'kind = "nope"', r"head\.kind: 'nope' is not allowed; allowed: .*'ln'"),
        ("distill = true", "distill = 1", r"head\.distill: 1 is not allowed; allowed: true, false"),
        ('pos = "none"', 'pos = ["none"]', r"network\.pos: .*one value, not a list"),
    ],
)
def test_bad_vocabulary_values_get_one_line(old: str, new: str, message: str) -> None:
    assert old in SPACE
    with pytest.raises(SpaceError, match=message) as err:
        parse_space(SPACE.replace(old, new, 1), source="vocab.toml")
    assert "\n" not in str(err.value)


def test_fields_a_space_fixes_stay_out_of_the_id() -> None:
    """Architectures of spaces without the new fields keep their JSON, so their ids."""
    plain = StageChoice("conv", 8, kernel=3)
    assert set(Architecture("s", (plain,)).to_dict()["stages"][0]) == {
        "operator",
        "width",
        "depth",
        "kernel",
        "heads",
        "attention",
    }
    chosen = dataclasses.replace(plain, act="relu")
    assert Architecture("s", (chosen,)).arch_id != Architecture("s", (plain,)).arch_id
    assert "act=relu" in chosen.canonical().describe()


def test_the_supernet_refuses_what_it_cannot_share() -> None:
    from fusion_nas.model.supernet import SupernetError, plan_supernet

    with pytest.raises(SupernetError, match="needs the 'conv' stem, not 'patch'"):
        plan_supernet(_space())
    conv_stem = SPACE.replace('kind = "patch"', 'kind = "conv"').replace("kernel = 2\n", "")
    with pytest.raises(SupernetError, match="needs the plain 'ln' head"):
        plan_supernet(parse_space(conv_stem))
    plain = parse_space(conv_stem.replace("distill = true", ""))
    assert plan_supernet(plain).heads == (16,)  # patch downsampling is shared like the others


def test_fields_that_clash_together_are_refused_when_the_space_loads() -> None:
    """Each field is checked alone, then every block a stage can build: a mobilevit stage whose
    heads do not divide its inner width fails at load time in one line, not when built."""
    clash = SPACE.replace(
        'operator = ["conv", "attention"]', 'operator = ["conv", "mobilevit"]\ninner = 16'
    ).replace("width = 8\nheads = 2", "width = 12\nheads = [2, 3]")
    with pytest.raises(
        SpaceError, match=r"stage\[0\]\.heads: 3 heads do not divide inner width 16"
    ):
        parse_space(clash, source="vocab.toml")


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        (
            'operator = "split"\nwidth = 12\nheads = 4\nsplit = 0.25',
            r"stage\[0\]\.heads: 4 heads do not divide the attention share 9 of width 12",
        ),
        (
            'operator = "attention"\nattention = ["global", "linear"]\npos = "bias"\nwidth = 8',
            r"stage\[0\]\.pos: 'bias' is not supported by attention variant 'linear'",
        ),
    ],
)
def test_an_operators_own_rules_are_checked_when_the_space_loads(stage: str, message: str) -> None:
    """Rules a block checks when built (a split block's heads against its attention share, an
    attention variant's position encodings) refuse the space at load, in one line, before a
    search opens its store."""
    text = SPACE.split("[[stage]]")[0] + "[[stage]]\n" + stage + "\n"
    with pytest.raises(SpaceError, match=message) as err:
        parse_space(text, source="vocab.toml")
    assert "\n" not in str(err.value)
