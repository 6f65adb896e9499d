"""The zoo (fusion_nas.model.zoo) on a small zoo written here: listing, loading, scaled variants,
and spaces whose enumeration holds zoo members ([zoo] members)."""

from __future__ import annotations

import json

import pytest

from fusion_nas.errors import ArchitectureError, SpaceError
from fusion_nas.model import zoo
from fusion_nas.model.arch import Architecture
from fusion_nas.model.space import parse_space
from fusion_nas.model.zoo import (
    MIN_MAP,
    list_zoo,
    load_zoo,
    scaled_zoo,
    zoo_arch,
    zoo_stage_shapes,
)

TINY = """\
name = "tiny"
description = "a small conv/attention hybrid"

[input]
kind = "image"
channels = 3
size = [224, 224]
classes = 1000

[stem]
width = 24
kernel = 3
stride = 4

[[stage]]
operator = "conv"
width = 32
depth = 2

[[stage]]
operator = "attention"
attention = "window"
heads = 3
width = 48
depth = 2
downsample = "conv"

[[stage]]
operator = "attention"
heads = 4
width = 64
depth = 1
downsample = "conv"

[zoo]
timm = "none"
stage_ends = [0, 1, 2]
"""

HOST = """\
name = "host"

[input]
kind = "image"
channels = 3
size = [32, 32]
classes = 10

[stem]
width = 16

[[stage]]
operator = ["conv", "attention"]
width = [16, 32]
depth = [1, 2]

[[stage]]
operator = "conv"
width = 32
downsample = "pool"
"""


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch):
    """A zoo of two networks, ``tiny`` and ``tiny2`` (the same, another name)."""
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "tiny2.toml").write_text(TINY.replace('name = "tiny"', 'name = "tiny2"'))
    monkeypatch.setattr(zoo, "_zoo_dir", lambda: tmp_path)
    return tmp_path


def host(members: str = '["tiny"]', extra: str = "") -> str:
    return HOST + f"\n[zoo]\nmembers = {members}\n{extra}"


# --------------------------------------------------------------------------- the zoo


def test_list_and_load(tiny_zoo):
    assert list_zoo() == ["tiny", "tiny2"]
    space = load_zoo("tiny")
    assert space.num_architectures() == 1
    assert space.zoo["stage_ends"] == [0, 1, 2]
    assert zoo_arch("tiny") == space.enumerate()[0]
    assert load_zoo(tiny_zoo / "tiny.toml").name == "tiny"  # by path too


def test_an_unknown_name_lists_the_zoo_in_one_line(tiny_zoo):
    with pytest.raises(SpaceError) as err:
        load_zoo("tinyy")
    assert str(err.value) == "unknown zoo network 'tinyy'; allowed: 'tiny', 'tiny2'"


def test_a_space_of_many_architectures_is_not_a_zoo_network(tiny_zoo):
    (tiny_zoo / "many.toml").write_text(TINY.replace("width = 32", "width = [32, 40]"))
    with pytest.raises(SpaceError, match="a zoo network is one architecture, this space has 2"):
        load_zoo("many")


def test_the_builtin_zoo_is_listed_and_loads():
    for name in list_zoo():
        assert load_zoo(name).num_architectures() == 1


def test_stage_shapes_on_the_meta_device(tiny_zoo):
    assert zoo_stage_shapes("tiny") == [(1, 32, 56, 56), (1, 48, 28, 28), (1, 64, 14, 14)]


# --------------------------------------------------------------------------- scaling


def test_unscaled_is_the_same_network(tiny_zoo):
    space = scaled_zoo("tiny")
    assert space.name == "tiny"
    assert [s.describe() for s in zoo_arch(space).stages] == [
        s.describe() for s in zoo_arch("tiny").stages
    ]
    assert parse_space(space.source).source == space.source  # valid TOML, reloads alike


def test_width_is_rounded_to_multiples_of_eight_that_keep_heads_valid(tiny_zoo):
    space = scaled_zoo("tiny", width=0.75)
    arch = zoo_arch(space)
    assert space.stem.width == 16  # 18: the nearest multiple of 8
    widths = [s.width for s in arch.stages]
    assert all(w % 8 == 0 for w in widths)
    assert widths[0] == 24  # 32 * 0.75
    assert widths[1] % 3 == 0 and widths[1] == 48  # 36 -> 40 breaks 3 heads -> 48
    assert widths[2] == 48  # 64 * 0.75, 4 heads
    assert space.zoo["base"] == "tiny" and space.zoo["width"] == 0.75
    assert space.name == "tiny-w0.75"


def test_depth_multiplier_keeps_at_least_one_block(tiny_zoo):
    arch = zoo_arch(scaled_zoo("tiny", depth=0.25))
    assert [s.depth for s in arch.stages] == [1, 1, 1]
    arch = zoo_arch(scaled_zoo("tiny", depth=1.5))
    assert [s.depth for s in arch.stages] == [3, 3, 2]  # half up


@pytest.mark.parametrize(
    ("size", "stride", "downsamples"),
    [
        ((224, 224), 4, ["none", "conv", "conv"]),
        ((32, 32), 2, ["none", "conv", "conv"]),  # stride 4 would end at 2x2
        ((16, 16), 1, ["none", "conv", "conv"]),
        ((8, 8), 1, ["none", "none", "conv"]),  # then the earliest downsample goes
        ((4, 4), 1, ["none", "none", "none"]),
        ((2, 2), 1, ["none", "none", "none"]),  # nothing left to drop: as small as it gets
    ],
)
def test_a_smaller_input_reduces_the_stem_stride_then_drops_early_downsamples(
    tiny_zoo, size, stride, downsamples
):
    space = scaled_zoo("tiny", size=size, channels=1, classes=10)
    assert space.stem.stride == stride
    assert [st.downsample[0] for st in space.stages] == downsamples
    assert min(space.stage_sizes()[-1]) >= min(MIN_MAP, *size)
    assert (space.channels, space.classes, space.size) == (1, 10, size)


def test_scaling_works_on_any_zoo_like_space_and_refuses_bad_multipliers(tiny_zoo):
    space = parse_space(TINY.replace('name = "tiny"', 'name = "mine"'))
    assert scaled_zoo(space, width=0.5).name == "mine-w0.5"
    for bad in (0, -1, 100, True, "2"):
        with pytest.raises(SpaceError, match="multiplier"):
            scaled_zoo("tiny", width=bad)
    with pytest.raises(SpaceError, match="size"):
        scaled_zoo("tiny", size=(32,))


def test_a_scaled_network_builds_and_runs(tiny_zoo):
    import torch

    from fusion_nas.model.build import build_model

    space = scaled_zoo("tiny", width=0.5, depth=0.5, size=(32, 32), classes=10)
    model = build_model(zoo_arch(space), space)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --------------------------------------------------------------------------- spaces with members


def test_a_space_holds_its_zoo_members_scaled_to_its_input(tiny_zoo):
    space = parse_space(host('["tiny", "tiny2"]', "width = 0.5\ndepth = 0.5"))
    plain = parse_space(HOST)
    assert space.zoo_members == ("tiny", "tiny2")
    assert space.product_size() == plain.num_architectures()
    assert space.num_architectures() == plain.num_architectures() + 2
    archs = space.enumerate()
    product, members = archs[:-2], archs[-2:]
    # the stage product keeps its ids: members are added, nothing else changes
    assert [a.arch_id for a in product] == [a.arch_id for a in plain.enumerate()]
    assert [m.base for m in members] == ["tiny", "tiny2"]
    assert space.enumerate(members=False) == product
    member = space.member_space("tiny")
    assert (member.size, member.channels, member.classes) == ((32, 32), 3, 10)
    assert member.stem.width == 16 and member.stem.stride == 2  # 24 x 0.5 -> 16; 32 -> stride 2
    assert [s.width for s in members[0].stages] == [16, 24, 32]
    assert [s.depth for s in members[0].stages] == [1, 1, 1]


def test_members_are_never_sampled(tiny_zoo):
    space = parse_space(host())
    import random

    rng = random.Random(0)
    assert all(space.sample(rng).base is None for _ in range(300))


def test_a_member_validates_builds_and_costs_like_any_architecture(tiny_zoo):
    import torch

    from fusion_nas.model.build import build_model
    from fusion_nas.model.cost import arch_cost

    space = parse_space(host())
    arch = space.member_arch("tiny")
    assert space.validate(arch) is arch
    cfg = space.net_cfg(arch)
    assert (cfg.size, cfg.classes) == ((32, 32), 10)
    cost = arch_cost(arch, space)
    assert cost.macs > 0 and cost.params > 0
    assert build_model(arch, space)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # the JSON names the base; a product architecture's JSON does not
    data = json.loads(arch.to_json())
    assert data["base"] == "tiny"
    assert Architecture.from_json(arch.to_json()) == arch
    assert "base" not in space.sample(0).to_dict()
    assert arch.describe().startswith("zoo:tiny: ")


def test_a_member_that_is_not_the_spaces_is_refused_in_one_line(tiny_zoo):
    space = parse_space(host())
    arch = space.member_arch("tiny")
    with pytest.raises(ArchitectureError, match=r"^'tiny2' is not a zoo member of space 'host'"):
        space.validate(Architecture(arch.space, arch.stages, "tiny2"))
    wider = Architecture(arch.space, arch.stages[:-1], "tiny")
    with pytest.raises(ArchitectureError, match="its stages differ from the member's"):
        space.validate(wider)


@pytest.mark.parametrize(
    ("zoo_table", "message"),
    [
        ('members = ["nope"]', "zoo.members[0]: 'nope' is not a zoo network; allowed: 'tiny'"),
        ('members = "tiny"', "zoo.members: 'tiny' must be a list of zoo network names or"),
        ('members = ["tiny", "tiny"]', "lists a network twice"),
        ('members = ["tiny"]\nwidth = 0', "zoo.width: 0 is not allowed; allowed: (0, 64]"),
        ('members = ["tiny"]\ndepth = true', "zoo.depth: True is not allowed"),
    ],
)
def test_bad_member_tables_are_one_line_errors(tiny_zoo, zoo_table, message):
    (tiny_zoo / "tiny2.toml").unlink()
    with pytest.raises(SpaceError) as err:
        parse_space(HOST + f"\n[zoo]\n{zoo_table}\n")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_sequence_space_cannot_hold_zoo_members(tiny_zoo):
    seq = HOST.replace('kind = "image"', 'kind = "sequence"').replace(
        "size = [32, 32]", "length = 32"
    )
    with pytest.raises(SpaceError, match="zoo networks take images"):
        parse_space(seq + '\n[zoo]\nmembers = ["tiny"]\n')


def test_an_empty_member_list_is_the_plain_space(tiny_zoo):
    space = parse_space(host("[]"))
    assert space.zoo_members == ()
    assert space.num_architectures() == parse_space(HOST).num_architectures()


def test_all_members_are_every_zoo_network_installed_when_loaded(tiny_zoo):
    space = parse_space(host('"all"'))
    assert space.zoo_members == ("tiny", "tiny2")
    (tiny_zoo / "tiny2.toml").unlink()
    assert parse_space(host('"all"')).zoo_members == ("tiny",)
    assert space.zoo_members == ("tiny", "tiny2")  # a loaded space keeps what it held


@pytest.mark.parametrize(
    ("name", "like"), [("cifar10-hybrids", "cifar10"), ("hybrids-224", "coatnet-like")]
)
def test_the_builtin_hybrid_spaces_are_a_space_plus_every_installed_zoo_network(name, like):
    from fusion_nas.model.space import load_space

    space, plain = load_space(name), load_space(like)
    assert space.stages == plain.stages and space.stem == plain.stem
    assert space.product_size() == plain.num_architectures()
    assert space.zoo_members == tuple(list_zoo())
    assert space.num_architectures() == plain.num_architectures() + len(list_zoo())
    for name in space.zoo_members:  # each member builds at the space's input
        assert space.member_space(name).size == space.size


def test_a_patch_stem_keeps_its_kernel_equal_to_its_stride(tiny_zoo):
    patchy = TINY.replace("kernel = 3\nstride = 4", 'kind = "patch"\nkernel = 4\nstride = 4')
    (tiny_zoo / "patchy.toml").write_text(patchy)
    space = scaled_zoo("patchy", size=(16, 16))
    assert (space.stem.kind, space.stem.stride, space.stem.kernel) == ("patch", 1, 1)
    assert min(space.stage_sizes()[-1]) >= MIN_MAP
