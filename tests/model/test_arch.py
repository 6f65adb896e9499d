"""Architecture: JSON round trip, stable id, canonical form, describe, malformed input."""

from __future__ import annotations

import json

import pytest

from fusion_nas import load_space
from fusion_nas.errors import ArchitectureError
from fusion_nas.model.arch import Architecture, StageChoice

FIXED = Architecture(
    "digits",
    (StageChoice("conv", 8, 1, 5), StageChoice("gated", 16, 2, 3, 2, "linear")),
)


def _sampled() -> list[Architecture]:
    out = []
    for name in ("mnist1d", "digits", "fashion-mnist", "cifar10", "coatnet-like"):
        space = load_space(name)
        out += [space.sample(seed) for seed in range(25)]
    return out


SAMPLED = _sampled()


@pytest.mark.parametrize("arch", SAMPLED, ids=[f"{a.space}-{a.arch_id}" for a in SAMPLED])
def test_json_and_dict_round_trip(arch: Architecture) -> None:
    assert Architecture.from_json(arch.to_json()) == arch
    assert Architecture.from_dict(arch.to_dict()) == arch
    assert Architecture.from_dict(json.loads(arch.to_json())) == arch
    # Any equivalent JSON (indented, keys in another order) gives the same id.
    pretty = json.dumps(arch.to_dict(), indent=2, sort_keys=False)
    again = Architecture.from_json(pretty)
    assert again.arch_id == arch.arch_id and again.to_json() == arch.to_json()
    assert isinstance(again.stages, tuple)


def test_sampled_ids_are_distinct_for_distinct_architectures() -> None:
    by_id: dict[str, Architecture] = {}
    for arch in SAMPLED:
        assert by_id.setdefault(arch.arch_id, arch) == arch
    assert len(by_id) > 0.9 * len(SAMPLED)


def test_arch_id_is_stable() -> None:
    # Hard-coded: a change here means every stored trial id changes. Do not update lightly.
    assert FIXED.to_json() == (
        '{"space":"digits","stages":['
        '{"attention":null,"depth":1,"heads":null,"kernel":5,"operator":"conv","width":8},'
        '{"attention":"linear","depth":2,"heads":2,"kernel":3,"operator":"gated","width":16}]}'
    )
    assert FIXED.arch_id == "284203157d"
    assert len(FIXED.arch_id) == 10 and int(FIXED.arch_id, 16) >= 0


def test_ignored_fields_do_not_change_the_id() -> None:
    conv_with_heads = Architecture(
        "digits",
        (StageChoice("conv", 8, 1, 5, 4, "window"), StageChoice("gated", 16, 2, 3, 2, "linear")),
    )
    assert conv_with_heads == FIXED
    assert conv_with_heads.arch_id == FIXED.arch_id
    assert conv_with_heads.stages[0].heads is None and conv_with_heads.stages[0].attention is None
    attn_with_kernel = Architecture("x", (StageChoice("attention", 8, 1, 7, 2, "global"),))
    attn_plain = Architecture("x", (StageChoice("attention", 8, 1, None, 2, "global"),))
    assert attn_with_kernel.arch_id == attn_plain.arch_id
    # from_dict applies the same canonical form.
    d = FIXED.to_dict()
    d["stages"][0].update(heads=2, attention="global")
    assert Architecture.from_dict(d).arch_id == FIXED.arch_id


@pytest.mark.parametrize(
    "stage",
    [
        StageChoice("conv", 8, 1, 3),  # kernel
        StageChoice("conv", 16, 1, 5),  # width
        StageChoice("conv", 8, 2, 5),  # depth
        StageChoice("attention", 8, 1, None, 1, "global"),  # operator
        StageChoice("parallel", 8, 1, 5, 1, "global"),
    ],
)
def test_used_fields_change_the_id(stage: StageChoice) -> None:
    other = Architecture("digits", (stage, FIXED.stages[1]))
    assert other != FIXED and other.arch_id != FIXED.arch_id
    assert Architecture("mnist1d", FIXED.stages).arch_id != FIXED.arch_id  # the space counts


def test_describe() -> None:
    assert FIXED.describe() == "conv(k5)@8 > gated(k3,h2,lin)x2@16"
    assert StageChoice("attention", 32, 1, None, 4, "window").describe() == "attention(h4,win)@32"
    assert StageChoice("parallel", 64, 3, 7, 1, "global").describe() == "parallel(k7,h1,glob)x3@64"
    for arch in SAMPLED:
        text = arch.describe()
        assert "\n" not in text and text.count(" > ") == len(arch.stages) - 1


def _stage(**changes: object) -> dict:
    st = {"operator": "conv", "width": 8, "depth": 1, "kernel": 3}
    st.update(changes)
    return {k: v for k, v in st.items() if v is not _DROP}


_DROP = object()

MALFORMED = [
    ("list", [1, 2], "'space'"),
    ("no-space", {"stages": [_stage()]}, "'space'"),
    ("space-not-str", {"space": 3, "stages": [_stage()]}, "'space'"),
    ("no-stages", {"space": "digits"}, "'stages'"),
    ("empty-stages", {"space": "digits", "stages": []}, "non-empty 'stages'"),
    ("stages-not-list", {"space": "digits", "stages": {"operator": "conv"}}, "'stages'"),
    ("stage-not-object", {"space": "digits", "stages": ["conv"]}, "stages[0] must be an object"),
    (
        "unknown-key",
        {"space": "d", "stages": [_stage(stride=2)]},
        "stages[0]: unknown key 'stride'",
    ),
    ("unknown-op", {"space": "d", "stages": [_stage(operator="mlp")]}, "'mlp' is not an operator"),
    ("missing-op", {"space": "d", "stages": [_stage(operator=_DROP)]}, "stages[0].operator"),
    ("missing-width", {"space": "d", "stages": [_stage(width=_DROP)]}, "stages[0].width"),
    ("string-width", {"space": "d", "stages": [_stage(width="16")]}, "stages[0].width: '16'"),
    ("bool-width", {"space": "d", "stages": [_stage(width=True)]}, "stages[0].width: True"),
    ("negative-depth", {"space": "d", "stages": [_stage(depth=-1)]}, "stages[0].depth: -1"),
    ("null-depth", {"space": "d", "stages": [_stage(depth=None)]}, "stages[0].depth: None"),
    ("float-kernel", {"space": "d", "stages": [_stage(kernel=3.0)]}, "stages[0].kernel: 3.0"),
    (
        "string-heads",
        {"space": "d", "stages": [_stage(operator="attention", heads="2", attention="global")]},
        "stages[0].heads: '2'",
    ),
    (
        "int-attention",
        {"space": "d", "stages": [_stage(operator="attention", heads=2, attention=1)]},
        "stages[0].attention: 1",
    ),
    ("second-stage", {"space": "d", "stages": [_stage(), _stage(width=-8)]}, "stages[1].width: -8"),
    # The block configs' own rules apply too.
    ("even-kernel", {"space": "d", "stages": [_stage(kernel=4)]}, "stages[0].kernel: 4 is even"),
    (
        "heads-not-dividing",
        {"space": "d", "stages": [_stage(operator="attention", heads=3, attention="global")]},
        "stages[0].heads: 3 heads do not divide width 8; allowed: 1, 2, 4, 8",
    ),
    (
        "unknown-variant",
        {"space": "d", "stages": [_stage(operator="gated", heads=2, attention="swin")]},
        "stages[0].attention: 'swin' is not an attention variant",
    ),
]


@pytest.mark.parametrize(
    ("data", "fragment"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_dict_rejected(data: object, fragment: str) -> None:
    with pytest.raises(ArchitectureError) as info:
        Architecture.from_dict(data)
    msg = str(info.value)
    assert "\n" not in msg and fragment in msg, msg
    if isinstance(data, (dict, list)):  # the same through JSON
        with pytest.raises(ArchitectureError, match="."):
            Architecture.from_json(json.dumps(data))


@pytest.mark.parametrize("text", ["", "{", "not json", '{"space": "d", "stages": [}'])
def test_invalid_json_rejected(text: str) -> None:
    with pytest.raises(ArchitectureError, match="not valid JSON") as info:
        Architecture.from_json(text)
    assert "\n" not in str(info.value)
