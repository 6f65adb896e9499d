"""Search spaces: built-ins load, count, enumerate and build; malformed files are rejected."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fusion_nas import build_model, builtin_spaces, load_space, parse_space
from fusion_nas.errors import ArchitectureError, SpaceError
from fusion_nas.model import space as space_mod
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.nets import BlockCfg, NetCfg, StageCfg
from tests.helpers.spaces import VOCAB

BUILTINS = (
    "cifar10",
    "cifar10-hybrids",
    "coatnet-like",
    "digits",
    "fashion-mnist",
    "hybrids-224",
    "mnist1d",
    "video-glyphs",
)


def test_builtin_names() -> None:
    assert tuple(builtin_spaces()) == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_space_loads(name: str) -> None:
    space = load_space(name)
    assert space.name == name
    assert space.num_architectures() > 1
    assert space.kind in ("sequence", "image", "video")
    assert space.dim == {"sequence": 1, "image": 2, "video": 3}[space.kind]
    assert all(min(size) >= 1 for size in space.stage_sizes())
    # Loading by path gives the same space as loading by name.
    by_path = load_space(Path(__file__).parents[2] / "search_spaces" / f"{name}.toml")
    assert (by_path.stages, by_path.size, by_path.stem) == (space.stages, space.size, space.stem)


def test_digits_count_and_enumeration() -> None:
    space = load_space("digits")
    # By hand. Stage 0: conv 2 kernels; attention 2 heads x 3 variants; parallel and gated
    # 2 x 2 x 3 each -> 2 + 6 + 12 + 12 = 32. Stage 1: 1 + 2*2 + 1*2*2 + 1*2*2 = 13.
    assert space.num_architectures() == 32 * 13 == 416
    archs = space.enumerate()
    assert len(archs) == space.num_architectures()
    assert len({a.arch_id for a in archs}) == len(archs)  # canonical: no duplicates
    for a in archs[::37]:
        assert space.validate(a) is a


def test_mnist1d_count_by_hand() -> None:
    # Per stage: conv kernels + attention (heads x token variants + channel) x MLP ratios, and
    # parallel and gated kernels x that; times widths x depths >= 1 x downsamplings; + skip.
    s0 = (3 + (2 * 3 + 1) * 2 + 2 * 3 * (2 * 3 + 1) * 2) * 4 * 2 * 2
    s1 = (2 + (3 * 2 + 1) * 2 + 2 * 2 * (3 * 2 + 1) * 2) * 4 * 2 * 3 + 1
    s2 = (2 + (3 + 1) * 2 + 2 * 2 * (3 + 1) * 2) * 3 * 2 * 2 + 1
    assert (s0, s1, s2) == tuple(st.count() for st in load_space("mnist1d").stages)
    assert load_space("mnist1d").num_architectures() == s0 * s1 * s2 == 1_411_002_320


def test_enumerate_refuses_huge_spaces() -> None:
    space = load_space("mnist1d")
    with pytest.raises(SpaceError, match="more than the 10"):
        space.enumerate(limit=10)


def test_sampling_is_deterministic_per_seed() -> None:
    space = load_space("mnist1d")
    assert space.sample(5) == space.sample(5)
    assert len({space.sample(s).arch_id for s in range(30)}) > 20


# --------------------------------------------------------------------------- build and run

SMALL = [(name, seed) for name in ("digits", "fashion-mnist", "mnist1d") for seed in range(20)]
SMALL += [("cifar10", seed) for seed in range(5)]


def _check_grads(model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize(("name", "seed"), SMALL)
def test_sampled_architecture_builds_and_trains(name: str, seed: int) -> None:
    space = load_space(name)
    arch = space.sample(seed)
    model = build_model(arch, space).train()
    x = torch.randn(space.input_shape(2))
    y = model(x)
    assert y.shape == (2, space.classes)
    assert torch.isfinite(y).all()
    torch.nn.functional.cross_entropy(y, torch.tensor([0, 1])).backward()
    _check_grads(model)


# coatnet-like is 224x224 (batch 1) with up to ~40 M parameters. Measured on the 2-core machine
# with the single intra-op thread of conftest.py: 20 architectures build in ~9 s and run forward +
# backward in ~16 s (~25 s in all), under the ~60 s at which only a few would get a backward pass.
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_coatnet_like_builds_and_trains(seed: int) -> None:
    space = load_space("coatnet-like")
    model = build_model(space.sample(seed), space).train()
    y = model(torch.randn(space.input_shape(1)))
    assert y.shape == (1, 1000)
    assert torch.isfinite(y).all()
    torch.nn.functional.cross_entropy(y, torch.tensor([seed])).backward()
    _check_grads(model)


# --------------------------------------------------------------------------- malformed files

BASE_INPUT = """
[input]
kind = "image"
size = [8, 8]
channels = 1
classes = 10
"""
BASE_STEM = """
[stem]
width = 8
kernel = 3
"""
BASE_STAGE = """
[[stage]]
operator = ["conv", "attention"]
kernel = [3, 5]
heads = [1, 2]
attention = ["global", "window"]
width = [8, 16]
"""
BASE = 'name = "tiny"\n' + BASE_INPUT + BASE_STEM + BASE_STAGE


def _stage(**changes: str) -> str:
    """BASE with some ``key = value`` lines of the stage replaced (or added)."""
    lines = BASE_STAGE.strip().splitlines()
    for key, value in changes.items():
        lines = [ln for ln in lines if not ln.startswith(f"{key} ")]
        lines.append(f"{key} = {value}")
    return 'name = "tiny"\n' + BASE_INPUT + BASE_STEM + "\n".join(lines) + "\n"


ALL_OPS = ("'conv'", "'attention'", "'parallel'", "'gated'")

# (id, file text, fragments the one-line message must contain)
MALFORMED = [
    ("not-toml", "this is [not toml", ["not valid TOML"]),
    ("unknown-top-key", 'colour = "red"\n' + BASE, ["colour", "unknown key", "'stage'"]),
    ("unknown-stage-key", _stage(stride="2"), ["stage[0].stride", "unknown key", "'downsample'"]),
    (
        "unknown-operator",
        _stage(operator='["conv", "mlp"]'),
        ["stage[0].operator", "'mlp'", *ALL_OPS],
    ),
    ("even-kernel", _stage(kernel="[3, 4]"), ["stage[0].kernel", "4 is even", "odd"]),
    ("kernel-zero", _stage(kernel="0"), ["stage[0].kernel", "0 is too small", ">= 1"]),
    (
        "heads-not-dividing",
        _stage(heads="[3]"),
        ["stage[0].heads", "3 heads", "width 8", "1, 2, 4, 8"],
    ),
    ("empty-operators", _stage(operator="[]"), ["stage[0].operator", "empty choice list"]),
    (
        "unknown-variant",
        _stage(attention='["swin"]'),
        ["stage[0].attention", "'swin'", "'global', 'window', 'linear'"],
    ),
    ("string-width", _stage(width='"16"'), ["stage[0].width", "'16'", "not an integer"]),
    ("float-depth", _stage(depth="1.5"), ["stage[0].depth", "1.5", "not an integer"]),
    ("bool-heads", _stage(heads="true"), ["stage[0].heads", "True", "not an integer"]),
    (
        "missing-input",
        'name = "tiny"\n' + BASE_STEM + BASE_STAGE,
        ["input", "missing table [input]"],
    ),
    (
        "bad-kind",
        BASE.replace('kind = "image"', 'kind = "volume"'),
        ["input.kind", "'volume'", "'sequence', 'image', 'video'"],
    ),
    (
        "image-with-length",
        BASE.replace("channels = 1", "channels = 1\nlength = 8"),
        ["input.length", "size = [H, W]"],
    ),
    (
        "sequence-without-length",
        BASE.replace('kind = "image"\nsize = [8, 8]', 'kind = "sequence"'),
        ["input.length", "missing", ">= 1"],
    ),
    (
        "one-class",
        BASE.replace("classes = 10", "classes = 1"),
        ["input.classes", "1 is too small", ">= 2"],
    ),
    ("missing-stem", 'name = "tiny"\n' + BASE_INPUT + BASE_STAGE, ["stem", "missing table [stem]"]),
    ("no-stages", 'name = "tiny"\n' + BASE_INPUT + BASE_STEM, ["stage", "at least one [[stage]]"]),
    (
        "downsample-not-bool",
        _stage(downsample='"yes"'),
        ["stage[0].downsample", "'yes'", "true, false"],
    ),
    (
        "downsample-bad-choice",
        _stage(downsample='["pool", "stride"]'),
        ["stage[0].downsample", "'stride' is not allowed", "'none', 'pool', 'conv'"],
    ),
    (
        "downsample-bool-in-list",
        _stage(downsample='["pool", true]'),
        ["stage[0].downsample", "True is not allowed", "'none', 'pool', 'conv'"],
    ),
    (
        "downsample-duplicate",
        _stage(downsample='["conv", "conv"]'),
        ["stage[0].downsample", "lists a value twice"],
    ),
    (
        "stage-mlp-ratio-negative",
        _stage(mlp_ratio="[0, -2]"),
        ["stage[0].mlp_ratio", "-2 is not allowed", "0 (no MLP) or positive numbers"],
    ),
    ("negative-depth", _stage(depth="[0, -1]"), ["stage[0].depth", "-1 is too small", ">= 0"]),
    (
        "unknown-attention",
        _stage(attention='["global", "se"]'),
        ["stage[0].attention", "'se' is not an attention variant", "'channel'"],
    ),
    (
        "too-much-downsampling",
        BASE + (BASE_STAGE + "downsample = true\n") * 4,
        ["stage[4].downsample", "(8, 8)", "too small"],
    ),
    (
        "duplicate-choice",
        _stage(kernel="[3, 5, 3]"),
        ["stage[0].kernel", "[3, 5, 3]", "lists a value twice"],
    ),
    ("negative-width", _stage(width="[8, -16]"), ["stage[0].width", "-16", ">= 1"]),
    (
        "stem-kernel-list",
        BASE.replace("kernel = 3\n", "kernel = [3, 5]\n", 1),
        ["stem.kernel", "[3, 5]"],
    ),
    (
        "missing-stem-width",
        BASE.replace("width = 8\nkernel = 3", "kernel = 3"),
        ["stem.width", "missing"],
    ),
    (
        "bad-mlp-ratio",
        BASE + "[network]\nmlp_ratio = -1\n",
        ["network.mlp_ratio", "-1", "positive"],
    ),
    ("bad-window", _stage(window="0"), ["stage[0].window", "0 is too small", ">= 1"]),
    (
        "even-stem-kernel",
        BASE.replace("kernel = 3\n", "kernel = 4\n", 1),
        ["stem.kernel", "4 is even"],
    ),
    (
        "zero-stride",
        BASE.replace("kernel = 3\n", "kernel = 3\nstride = 0\n", 1),
        ["stem.stride", "0"],
    ),
    # Absurd sizes are refused before anything is built (a 10^8 width would exhaust memory).
    (
        "huge-width",
        _stage(width="100000000"),
        ["stage[0].width: 100000000 is too large; allowed: integers 1..65536"],
    ),
    (
        "huge-stem-width",
        BASE.replace("width = 8\n", "width = 100000000\n", 1),
        ["stem.width", "100000000 is too large", "1..65536"],
    ),
    (
        "huge-channels",
        BASE.replace("channels = 1", "channels = 70000"),
        ["input.channels", "70000 is too large"],
    ),
    (
        "huge-size",
        BASE.replace("size = [8, 8]", "size = [8, 10000000]"),
        ["input.size", "too large"],
    ),
    (
        "huge-classes",
        BASE.replace("classes = 10", "classes = 10000000"),
        ["input.classes", "2..65536"],
    ),
    ("huge-kernel", _stage(kernel="[3, 100001]"), ["stage[0].kernel", "100001 is too large"]),
    ("huge-depth", _stage(depth="5000"), ["stage[0].depth", "5000 is too large", "1..1024"]),
    (
        "huge-mlp-ratio",
        BASE + "[network]\nmlp_ratio = 1e9\n",
        ["network.mlp_ratio", "too large", "<= 64"],
    ),
]


def test_base_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(BASE)
    space = load_space(path)
    assert space.name == "tiny" and space.size == (8, 8) and len(space.stages) == 1
    # conv: 2 kernels; attention: 2 heads x 2 variants; times 2 widths.
    assert space.num_architectures() == (2 + 4) * 2


def test_many_malformed_cases() -> None:
    assert len(MALFORMED) >= 34
    assert len({case[0] for case in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize(
    ("text", "fragments"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_space_rejected(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    # parse_space names its source the same way.
    with pytest.raises(SpaceError, match=r"^<text>: "):
        parse_space(text, source="<text>")


def test_huge_width_message_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "my.toml"
    path.write_text(_stage(width="100000000"))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(info.value) == (
        f"{path}: stage[0].width: 100000000 is too large; allowed: integers 1..65536"
    )


def test_heads_message_lists_the_divisors() -> None:
    text = _stage(width="[16, 32]", heads="[1, 3]")
    with pytest.raises(SpaceError) as info:
        parse_space(text, source="my.toml")
    assert str(info.value) == (
        "my.toml: stage[0].heads: 3 heads do not divide width 16; allowed: 1, 2, 4, 8, 16"
    )


def test_heads_only_need_to_divide_widths_where_an_operator_reads_them() -> None:
    # A conv-only stage ignores heads, so 3 heads next to width 8 are fine there.
    assert parse_space(_stage(operator='["conv"]', heads="[3]")).stages[0].heads == (3,)
    with pytest.raises(SpaceError, match="stage\\[0\\].heads: 0 is too small"):
        parse_space(_stage(operator='["conv"]', heads="[0]"))


def test_cap_is_a_module_constant(monkeypatch) -> None:
    monkeypatch.setattr(space_mod, "MAX_SIZE", 10**9)
    with pytest.raises(SpaceError, match=r"stage\[0\]\.width: 100000000 at size .* too many"):
        parse_space(_stage(width="100000000"))  # the tensors per sample are capped too
    monkeypatch.setattr(space_mod, "MAX_VALUES", 10**30)
    space = parse_space(_stage(width="100000000"))
    assert space.stages[0].width == (100_000_000,)


def test_largest_tensor_counts_the_least_shrinking_downsample(monkeypatch) -> None:
    # 16 channels at 64x64 = 65,536 values; a stage that may skip keeps the size for the next.
    text = 'name = "tiny"\n' + BASE_INPUT.replace("[8, 8]", "[64, 64]") + BASE_STEM
    monkeypatch.setattr(space_mod, "MAX_VALUES", 16 * 64 * 64)
    parse_space(text + "[[stage]]\noperator = 'conv'\nwidth = 16\n")
    skippable = "[[stage]]\noperator = 'conv'\nwidth = 16\ndepth = [0, 1]\ndownsample = 'pool'\n"
    with pytest.raises(SpaceError, match=r"stage\[1\]\.width: 17 at size \(64, 64\)"):
        parse_space(text + skippable + "[[stage]]\noperator = 'conv'\nwidth = 17\n")
    # Without the skip, the first stage halves the size: 17 channels at 32x32 fit.
    parse_space(
        text + skippable.replace("[0, 1]", "1") + "[[stage]]\noperator = 'conv'\nwidth = 17\n"
    )


def test_stage_choices_are_capped(monkeypatch) -> None:
    monkeypatch.setattr(space_mod, "MAX_STAGE_CHOICES", 3)
    with pytest.raises(SpaceError, match=r"stage\[0\]: 4 distinct choices, too many"):
        parse_space(_stage(operator='["conv"]', kernel="[3, 5]", width="[8, 16]"))


def test_unknown_builtin_lists_allowed_names() -> None:
    with pytest.raises(SpaceError) as info:
        load_space("cifar")
    msg = str(info.value)
    assert "\n" not in msg and "'cifar'" in msg
    for name in BUILTINS:
        assert repr(name) in msg


def test_missing_file_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(SpaceError, match="does not exist") as info:
        load_space(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- validate


def _digits_arch(*stages: StageChoice) -> Architecture:
    return Architecture("digits", stages)


GOOD = (StageChoice("conv", 8, 1, 3), StageChoice("attention", 16, 1, None, 2, "global"))


def test_validate_accepts_a_member() -> None:
    space = load_space("digits")
    arch = _digits_arch(*GOOD)
    assert space.validate(arch) is arch
    # Fields the operator ignores do not matter (canonical form).
    assert space.validate(_digits_arch(StageChoice("conv", 8, 1, 3, 16, "swin"), GOOD[1]))


@pytest.mark.parametrize(
    ("stages", "fragment"),
    [
        ((GOOD[0],), "1 stages; space 'digits' has 2"),
        ((*GOOD, GOOD[1]), "3 stages"),
        ((StageChoice("conv", 32, 1, 3), GOOD[1]), "stage 0: width 32 is not allowed; allowed: 8"),
        (
            (StageChoice("conv", 8, 1, 7), GOOD[1]),
            "stage 0: kernel 7 is not allowed; allowed: 3, 5",
        ),
        ((StageChoice("conv", 8, 2, 3), GOOD[1]), "stage 0: depth 2 is not allowed; allowed: 1"),
        ((GOOD[0], StageChoice("attention", 16, 1, None, 4, "global")), "stage 1: heads 4"),
        ((GOOD[0], StageChoice("gated", 16, 1, 3, 2, "window")), "stage 1: attention 'window'"),
    ],
)
def test_validate_rejects_non_members(stages: tuple, fragment: str) -> None:
    space = load_space("digits")
    with pytest.raises(ArchitectureError) as info:
        space.validate(_digits_arch(*stages))
    msg = str(info.value)
    assert "\n" not in msg and fragment in msg, msg
    with pytest.raises(ArchitectureError):
        build_model(_digits_arch(*stages), space)


def test_validate_rejects_operator_not_in_stage(tmp_path: Path) -> None:
    path = tmp_path / "convonly.toml"
    path.write_text(_stage(operator='["conv"]'))
    space = load_space(path)
    arch = Architecture("tiny", (StageChoice("attention", 8, 1, None, 1, "global"),))
    with pytest.raises(
        ArchitectureError, match="operator 'attention' is not allowed; allowed: 'conv'"
    ):
        space.validate(arch)


# --------------------------------------------------------------------------- configs


def test_net_cfg_of_an_architecture() -> None:
    space = load_space("digits")
    arch = _digits_arch(StageChoice("conv", 8, 1, 5), StageChoice("gated", 16, 1, 3, 2, "linear"))
    cfg = space.net_cfg(arch)
    assert isinstance(cfg, NetCfg)
    assert (cfg.in_channels, cfg.size, cfg.classes) == (1, (8, 8), 10)
    assert (cfg.stem_width, cfg.stem_kernel, cfg.stem_stride) == (8, 3, 1)
    conv, gated = cfg.stages
    # Fields an operator ignores keep BlockCfg's defaults; window and MLP ratio come from the file.
    assert conv == StageCfg(BlockCfg("conv", 8, kernel=5, window=4, mlp_ratio=2.0), 1, False)
    assert gated == StageCfg(
        BlockCfg("gated", 16, kernel=3, heads=2, attention="linear", window=4, mlp_ratio=2.0),
        1,
        True,
    )
    assert cfg.stage_sizes() == space.stage_sizes()
    with pytest.raises(ArchitectureError, match="stage 0: kernel 7"):
        space.net_cfg(_digits_arch(StageChoice("conv", 8, 1, 7), GOOD[1]))


def test_omitted_fields_take_the_block_config_defaults() -> None:
    text = 'name = "t"\n' + BASE_INPUT + BASE_STEM + '[[stage]]\noperator = ["gated"]\n'
    space = parse_space(text)
    st = space.stages[0]
    assert (st.kernel, st.heads, st.attention) == (
        (BlockCfg.kernel,),
        (BlockCfg.heads,),
        (BlockCfg.attention,),
    )
    assert (st.window, space.mlp_ratio, st.width, st.depth) == (
        BlockCfg.window,
        BlockCfg.mlp_ratio,
        (8,),  # the stem's width
        (StageCfg.depth,),
    )
    assert st.downsample == (StageCfg.downsample,) and st.mlp_ratio == (BlockCfg.mlp_ratio,)


@pytest.mark.parametrize("name", BUILTINS)
def test_every_architecture_config_is_valid(name: str) -> None:
    space = load_space(name)
    for seed in range(10):
        cfg = space.net_cfg(space.sample(seed))
        assert len(cfg.stages) == len(space.stages)


def test_stage_sizes_follow_stem_and_downsampling() -> None:
    fm = load_space("fashion-mnist")  # stem stride 1; first choices: none, pooling, pooling
    assert fm.stem_size() == (28, 28)
    assert fm.stage_sizes() == [(28, 28), (14, 14), (7, 7)]
    assert load_space("cifar10").stage_sizes() == [(32, 32), (16, 16), (8, 8)]
    coat = load_space("coatnet-like")
    assert coat.stage_sizes() == [(56, 56), (28, 28), (14, 14), (7, 7)]
    # stem stride 2; first choices: no downsampling, none, pooling
    assert load_space("mnist1d").stage_sizes() == [(20,), (20,), (10,)]
    assert math.prod(load_space("digits").input_shape(3)) == 3 * 64


# --------------------------------------------------------------------------- richer vocabulary


def test_vocabulary_counts_by_hand() -> None:
    space = parse_space(VOCAB)
    st0, st1 = space.stages
    assert st0.downsample == ("none", "pool", "conv") and st0.mlp_ratio == (0.0, 1.0)
    assert st1.downsample == ("conv",) and st1.mlp_ratio == (2.0,)
    # Stage 0: conv 1 kernel; gated: 1 kernel x (2 heads global + 1 channel) x 2 ratios = 6;
    # times 3 downsamplings x 2 widths x depth 1, plus the skipped stage.
    assert st0.count() == (1 + 6) * 3 * 2 + 1 == len(st0.options()) == 43
    # Stage 1: channel attention reads no heads; the fixed ratio and downsampling are not choices.
    assert st1.count() == 1 == len(st1.options())
    assert st1.options() == [StageChoice("attention", 8, 1, attention="channel")]
    archs = space.enumerate()
    assert len(archs) == space.num_architectures() == 43
    assert len({a.arch_id for a in archs}) == 43
    for a in archs:
        assert space.validate(a) == a


def test_skipped_stage_and_ignored_fields_share_one_id() -> None:
    space = parse_space(VOCAB)
    last = StageChoice("attention", 8, 1, attention="channel")
    skipped = [
        Architecture("vocab", (StageChoice(op, w, 0, kernel=3, downsample=d), last))
        for op, w, d in (("conv", 4, "pool"), ("gated", 8, "conv"), ("conv", 8, None))
    ]
    assert len({a.arch_id for a in skipped}) == 1
    assert skipped[0].stages[0] == StageChoice("skip", 0, 0)
    assert skipped[0].describe() == "skip > attention(chan)@8"
    # channel attention reads no heads; a ratio written 1 is the ratio 1.0
    a = Architecture("vocab", (StageChoice("gated", 4, 1, 3, 2, "channel", 1, "conv"), last))
    b = Architecture("vocab", (StageChoice("gated", 4, 1, 3, 1, "channel", 1.0, "conv"), last))
    assert a.arch_id == b.arch_id and a.stages[0].heads is None
    assert a.describe() == "gated(k3,chan,mlp1,down=conv)@4 > attention(chan)@8"
    # A field the space fixes, given anyway, is left to the space: same id.
    c = Architecture(
        "vocab",
        (
            a.stages[0],
            StageChoice("attention", 8, 1, attention="channel", mlp_ratio=2.0, downsample="conv"),
        ),
    )
    assert c.arch_id != a.arch_id and space.validate(c) == a
    assert Architecture.from_json(a.to_json()) == a


def test_skipped_stage_builds_nothing_and_width_carries_over() -> None:
    space = parse_space(VOCAB)
    last = StageChoice("attention", 8, 1, attention="channel")
    arch = Architecture("vocab", (StageChoice("skip", 0, 0), last))
    cfg = space.net_cfg(arch)
    assert len(cfg.stages) == 1 and cfg.stages[0].downsample == "conv"
    model = build_model(arch, space)
    assert len(model.stages) == 1
    conv = model.stages[0][0][0]  # the stage-1 transition: stem width 4 -> 8, stride 2
    assert (conv.in_channels, conv.out_channels, conv.stride) == (4, 8, (2,))
    assert model(torch.randn(2, 1, 40)).shape == (2, 10)


def test_downsampling_choices_set_the_sizes() -> None:
    space = parse_space(VOCAB)
    last = StageChoice("attention", 8, 1, attention="channel")
    sizes = {}
    for d in ("none", "pool", "conv"):
        arch = Architecture("vocab", (StageChoice("conv", 4, 1, 3, downsample=d), last))
        sizes[d] = space.net_cfg(arch).stage_sizes()
    # stem stride 2: 40 -> 20; pool floors, the stride-2 conv rounds up (both 10 here)
    assert sizes == {"none": [(20,), (10,)], "pool": [(10,), (5,)], "conv": [(10,), (5,)]}
    odd = NetCfg(1, (9,), 10, 4, (StageCfg(BlockCfg("conv", 4), 1, "conv"),) * 2)
    assert odd.stage_sizes() == [(5,), (3,)]
    assert NetCfg(1, (9,), 10, 4, (StageCfg(BlockCfg("conv", 4), 1, True),)).stage_sizes() == [(4,)]


def test_validate_names_a_missing_or_wrong_new_choice() -> None:
    space = parse_space(VOCAB)
    last = StageChoice("attention", 8, 1, attention="channel")
    with pytest.raises(ArchitectureError, match="stage 0: downsample None is not allowed"):
        space.validate(Architecture("vocab", (StageChoice("conv", 4, 1, 3), last)))
    bad = StageChoice("gated", 4, 1, 3, 1, "global", 0.5, "pool")
    with pytest.raises(ArchitectureError, match=r"stage 0: mlp_ratio 0.5 .* allowed: 0.0, 1.0"):
        space.validate(Architecture("vocab", (bad, last)))


def test_old_spaces_keep_their_ids() -> None:
    # Ids measured before mlp_ratio and downsample became choices: the fields are left out of
    # the JSON where the space fixes them.
    assert load_space("digits").enumerate()[5].arch_id == "73e6f5c0ee"
    assert "downsample" not in load_space("digits").enumerate()[5].to_json()
