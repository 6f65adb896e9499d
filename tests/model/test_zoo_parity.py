"""Every zoo network against timm's model (recorded in data/timm_parity.json): parameters within
1% and equal per-stage output shapes. timm is not needed: ``benchmarks/timm_parity.py`` wrote
the file. A new zoo file is covered by the parametrisation over ``list_zoo()``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fusion_nas.model.nets import FusionNet
from fusion_nas.model.space import SearchSpace, parse_space
from fusion_nas.model.zoo import list_zoo, load_zoo, zoo_arch, zoo_stage_shapes

DATA = json.loads((Path(__file__).parent / "data" / "timm_parity.json").read_text())
TOLERANCE = 0.01  # parameters within 1% of timm's


def meta_params(space: SearchSpace) -> int:
    """Parameters of the space's one network, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = FusionNet(space.net_cfg(zoo_arch(space)))
    return sum(p.numel() for p in model.parameters())


def parity_problems(space: SearchSpace, ref: dict[str, Any]) -> list[str]:
    """What differs between the zoo network ``space`` and timm's record ``ref``."""
    problems = []
    params = meta_params(space)
    if abs(params - ref["params"]) > TOLERANCE * ref["params"]:
        problems.append(f"params {params:,} against timm's {ref['params']:,}")
    shapes = zoo_stage_shapes(space)
    ends = space.zoo["stage_ends"]
    if len(ends) != len(ref["stages"]):
        problems.append(f"stage_ends lists {len(ends)} stages; timm has {len(ref['stages'])}")
    for k, (i, stage) in enumerate(zip(ends, ref["stages"])):
        ours = list(shapes[i]) if shapes[i] is not None else None
        if ours != stage["shape"]:
            problems.append(f"timm stage {k}: ours (stage {i}) {ours}, timm {stage['shape']}")
    return problems


@pytest.mark.parametrize("name", list_zoo())
def test_zoo_network_matches_timm(name):
    space = load_zoo(name)
    timm_name = space.zoo.get("timm")
    assert timm_name in DATA["models"], (
        f"timm model {timm_name!r} of zoo network {name!r} is not recorded; run "
        "benchmarks/timm_parity.py --timm-only"
    )
    assert parity_problems(space, DATA["models"][timm_name]) == []


def test_the_check_finds_a_wrong_width_and_a_wrong_stage_map():
    # A network shaped like timm's EdgeNeXt-XX-Small stages at the right sizes, with one
    # stage too wide and a stage_ends that names a wrong stage: both are reported.
    ref = DATA["models"]["edgenext_xx_small"]
    widths = [s["shape"][1] for s in ref["stages"]]
    stages = "\n".join(
        f'[[stage]]\noperator = "conv"\nwidth = {w + 8 * (i == 2)}\ndownsample = '
        f'"{"none" if i == 0 else "conv"}"\n'
        for i, w in enumerate(widths)
    )
    text = (
        '[input]\nkind = "image"\nchannels = 3\nsize = [224, 224]\nclasses = 1000\n'
        "[stem]\nwidth = 24\nkernel = 3\nstride = 4\n"
        f'[zoo]\ntimm = "edgenext_xx_small"\nstage_ends = [0, 1, 2, 2]\n{stages}'
    )
    problems = parity_problems(parse_space(text), ref)
    assert any(p.startswith("params") for p in problems)
    assert any(p.startswith("timm stage 2:") for p in problems)
    assert any(p.startswith("timm stage 3:") for p in problems)


def test_the_recorded_timm_figures_agree_with_timm_published_ones():
    # The measured parameter count of every recorded model is timm's published one (in
    # millions, two decimals): the file was written from the models it names.
    assert DATA["models"], "no timm model recorded"
    for name, ref in DATA["models"].items():
        published = ref["published"]
        assert published is not None, name
        assert abs(ref["params"] / 1e6 - published["params_m"]) <= 0.005 + 1e-9, name
        assert all(len(s["shape"]) == 4 for s in ref["stages"]), name
