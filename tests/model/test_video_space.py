"""Video spaces: the input kind, the temporal kernel as a choice, operators and variants that
must fit the input's rank, checked when the space loads (one line, naming the field)."""

from __future__ import annotations

import pytest

from fusion_nas.errors import SpaceError
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.build import build_model
from fusion_nas.model.cost import arch_cost
from fusion_nas.model.space import load_space, parse_space

VIDEO = """
name = "v"
[input]
kind = "video"
channels = 1
classes = 6
size = [4, 8, 6]
[stem]
width = 8
[[stage]]
operator = ["conv", "r2plus1d", "parallel", "attention"]
tkernel = [1, 3]
attention = ["temporal", "divided", "global"]
heads = [2]
width = [8]
[[stage]]
operator = ["gated", "split"]
attention = ["temporal", "spatial"]
heads = [2]
width = [16]
downsample = "pool"
"""


def refused(text: str) -> str:
    with pytest.raises(SpaceError) as info:
        parse_space(text)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_a_video_space_loads_builds_and_samples() -> None:
    space = parse_space(VIDEO)
    assert (space.kind, space.size, space.dim) == ("video", (4, 8, 6), 3)
    assert space.input_shape(2) == (2, 1, 4, 8, 6)
    # per-frame stem (stride 1) and a pool that halves H and W only
    assert space.stage_sizes() == [(4, 8, 6), (4, 4, 3)]
    seen = set()
    for seed in range(30):
        arch = space.sample(seed)
        seen.add(arch.stages[0].tkernel)
        model = build_model(arch, space)
        assert model.cfg.size == (4, 8, 6)
        assert arch_cost(arch, space).macs > 0
    assert {1, 3} <= seen  # the temporal kernel is a choice of the stage


def test_tkernel_is_in_an_architecture_only_where_the_space_offers_it() -> None:
    space = parse_space(VIDEO)
    arch = space.validate(
        Architecture(
            "v",
            (
                StageChoice("conv", 8, 1, kernel=3, tkernel=3),
                StageChoice("gated", 16, 1, 3, 2, "temporal", mlp_ratio=2.0),
            ),
        )
    )
    stages = arch.to_dict()["stages"]
    assert stages[0]["tkernel"] == 3
    assert "tkernel" not in stages[1]  # stage 1 fixes it (1): left out, as every fixed field
    assert arch.describe().startswith("conv(k3,t3)@8")
    # an image space's architectures keep their ids: no tkernel in their JSON
    digits = load_space("digits")
    assert "tkernel" not in digits.sample(0).to_json()


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [
        ('kind = "video"', 'kind = "image"', ["input.size", "[H, W]"]),
        ("size = [4, 8, 6]", "size = [8, 6]", ["input.size", "[T, H, W]", "three"]),
        # a video operator or variant in an image space, and the reverse
        (
            'kind = "video"\nchannels = 1\nclasses = 6\nsize = [4, 8, 6]',
            'kind = "image"\nchannels = 1\nclasses = 6\nsize = [8, 6]',
            ["stage[0].", "image input", "allowed"],
        ),
        (
            'operator = ["gated", "split"]',
            'operator = ["gated", "mbconv"]',
            ["stage[1].operator", "'mbconv' does not take video input", "'r2plus1d'"],
        ),
        (
            'attention = ["temporal", "spatial"]',
            'attention = ["temporal", "xca"]',
            ["stage[1].attention", "'xca' does not take video input", "'divided'"],
        ),
        # a clip shorter than the temporal window
        ("tkernel = [1, 3]", "tkernel = [1, 5]", ["stage[0].tkernel", "5 frames", "4 frames"]),
        ("tkernel = [1, 3]", "tkernel = [2]", ["stage[0].tkernel", "even", "odd"]),
    ],
)
def test_video_misfits_are_refused_in_one_line(old: str, new: str, fragments: list[str]) -> None:
    assert old in VIDEO
    msg = refused(VIDEO.replace(old, new))
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_tkernel_on_an_image_space_is_refused() -> None:
    text = VIDEO.replace('kind = "video"', 'kind = "image"').replace(
        "size = [4, 8, 6]", "size = [8, 6]"
    )
    text = text.replace('attention = ["temporal", "divided", "global"]', 'attention = ["global"]')
    text = text.replace('attention = ["temporal", "spatial"]', 'attention = ["global"]')
    text = text.replace('"r2plus1d", ', "")
    msg = refused(text)
    assert "stage[0].tkernel" in msg and "image input has none" in msg and "allowed: 1" in msg
    parse_space(text.replace("tkernel = [1, 3]", "tkernel = 1"))  # 1 (per frame) is the default


def test_the_built_in_video_space() -> None:
    space = load_space("video-glyphs")
    assert (space.kind, space.channels, space.size, space.classes) == ("video", 1, (8, 16, 16), 6)
    ops = set(space.stages[0].operator)
    assert {"conv", "r2plus1d", "attention", "parallel", "gated", "split"} <= ops
    assert set(space.stages[0].attention) == {"temporal", "spatial", "divided", "global"}
    assert space.stages[0].tkernel == (1, 3)
