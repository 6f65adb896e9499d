"""Search spaces: TOML files -> validated choices -> network configs; count, enumerate, sample.

A space file (see ``search_spaces/`` and the README) describes the input, the stem and a list
of ``[[stage]]`` tables, each with the allowed choices for operator, kernel size, head count,
attention variant, MLP ratio (0: no MLP), width and depth (0: the stage is skipped), and how the
stage halves the spatial size on entry (``"none"``, ``"pool"`` or ``"conv"``; ``true`` is
``"pool"``).

Values are checked by the network configs of :mod:`fusion_nas.model.nets` (``BlockCfg``,
``StageCfg``,
``NetCfg``), the one place defaults and rules live. This module checks the file's layout, refuses
absurd sizes before anything is built (integers above :data:`MAX_SIZE`, depths above
:data:`MAX_DEPTH`, MLP ratios above :data:`MAX_MLP_RATIO`, tensors of more than
:data:`MAX_VALUES` values per sample, stages of more than :data:`MAX_STAGE_CHOICES` choices) and
reports the first problem in one line naming the file, the field, the bad value and the allowed
values.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fusion_nas.errors import ArchitectureError, FusionNasError, SpaceError, allowed
from fusion_nas.model.arch import OPTIONAL, SKIP, Architecture, StageChoice
from fusion_nas.model.configs import cfg_errors, nets_view
from fusion_nas.model.registry import list_ops, op_uses

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from fusion_nas.model.nets import BlockCfg, NetCfg, StageCfg

# The configs of nets.py, read through the torch-free view until nets is imported
# (fusion_nas.model.configs): parsing and listing spaces never imports torch.
SEARCHABLE: tuple[str, ...] = nets_view().SEARCHABLE
SETTINGS: tuple[str, ...] = nets_view().SETTINGS  # fixed per stage: one value, never searched
DOWNSAMPLES: tuple[str, ...] = nets_view().DOWNSAMPLES
RATIOS = ("mlp_ratio", "expand")  # searchable numbers: 2 and 2.0 are one choice


def reads(operator: str, attention: str | None = None) -> tuple[str, ...]:
    """The searchable fields a block of ``operator`` with ``attention`` reads (``nets.reads``)."""
    return nets_view().reads(operator, attention)


T = TypeVar("T")

MAX_SIZE = 65_536  # widths, channels, classes, input sizes, kernels, heads, windows, strides
MAX_DEPTH = 1_024  # blocks in one stage
MAX_MLP_RATIO = 64.0
# Values one sample's largest tensor may hold: the input, the stem's output, a stage's output
# or MLP hidden layer (2^26 float32 = 256 MiB per sample; training holds a batch of them).
MAX_VALUES = 2**26
MAX_STAGE_CHOICES = 100_000  # distinct choices of one stage (strategies list them)
# spatial axes of each input kind: sequence 1, image 2, video 3 (nets.INPUTS, inverted)
INPUT_DIMS: dict[str, int] = {kind: dim for dim, kind in nets_view().INPUTS.items()}
INPUT_KINDS = tuple(INPUT_DIMS)

_TOP_KEYS = ("name", "description", "input", "network", "stem", "head", "stage", "zoo")
_INPUT_KEYS = ("kind", "channels", "classes", "length", "size")
_NETWORK_KEYS = ("mlp_ratio", "act", "norm", "expand", "pos", "tkernel", *SETTINGS)
_STEM_KEYS = ("width", "kernel", "stride", "kind", "act")
_HEAD_KEYS = ("kind", "width", "distill")
_STAGE_KEYS = ("operator", *SEARCHABLE, "width", "depth", "downsample", *SETTINGS)


@dataclass(frozen=True)
class StemSpec:
    """Stem: ``width`` channels, ``kernel``, ``stride``, its ``kind`` (``nets.STEMS``) and the
    activation of the stem and head (``act``)."""

    width: int
    kernel: int
    stride: int
    kind: str = "conv"
    act: str = "gelu"


@dataclass(frozen=True)
class HeadSpec:
    """Head: its ``kind`` (``nets.HEADS``), hidden ``width`` (0: none), ``distill``."""

    kind: str = "ln"
    width: int = 0
    distill: bool = False


@dataclass(frozen=True)
class StageSpec:
    """Allowed choices of one stage.

    A field of ``OPTIONAL`` (``mlp_ratio``, ``downsample``, ``act``, ``norm``, ``expand``,
    ``pos``, ``tkernel``) with one value is fixed by the space: the architectures leave it
    ``None``. Depth 0 is one choice, the skipped stage. ``settings`` holds the ``SETTINGS``
    fields the stage fixes (besides ``window``), as ``(field, value)`` pairs.
    """

    operator: tuple[str, ...]
    kernel: tuple[int, ...]
    heads: tuple[int, ...]
    attention: tuple[str, ...]
    mlp_ratio: tuple[float, ...]
    width: tuple[int, ...]
    depth: tuple[int, ...]
    window: int
    downsample: tuple[str, ...]
    act: tuple[str, ...] = ("gelu",)
    norm: tuple[str, ...] = ("bn",)
    expand: tuple[float, ...] = (4.0,)
    pos: tuple[str, ...] = ("learned",)
    tkernel: tuple[int, ...] = (1,)
    settings: tuple[tuple[str, Any], ...] = ()

    def _chosen(self, field: str) -> tuple[Any, ...]:
        """The values an architecture holds for ``field``: ``(None,)`` where the space fixes it."""
        values = getattr(self, field)
        return (None,) if field in OPTIONAL and len(values) == 1 else values

    def _searched(self, op: str) -> list[tuple[Any, ...]]:
        """Per searchable field: this stage's values if ``op`` reads the field, else ``(None,)``."""
        uses = op_uses(op)
        return [self._chosen(f) if f in uses else (None,) for f in SEARCHABLE]

    def iter_options(self) -> Iterator[StageChoice]:
        """Every distinct (canonical) choice of this stage, lazily, in a fixed order."""
        depths = [d for d in self.depth if d]
        down = self._chosen("downsample")
        h = SEARCHABLE.index("heads")
        for op in self.operator:
            searched = self._searched(op)
            for *chosen, ds, w, d in itertools.product(*searched, down, self.width, depths):
                values = dict(zip(SEARCHABLE, chosen))
                if "heads" not in reads(op, values["attention"]) and chosen[h] != searched[h][0]:
                    continue  # a variant without heads: one choice, not one per head count
                yield StageChoice(op, w, d, downsample=ds, **values).canonical()
        if 0 in self.depth:
            yield StageChoice(SKIP, 0, 0)

    def options(self) -> list[StageChoice]:
        """Every distinct (canonical) choice of this stage."""
        return list(self.iter_options())

    def count(self) -> int:
        """Number of distinct choices of this stage (without listing them)."""
        per_op = 0
        for op in self.operator:
            searched = dict(zip(SEARCHABLE, map(len, self._searched(op))))
            h = searched.pop("heads")
            pairs = h * searched.pop("attention")  # (heads, variant) pairs
            if "attention" in op_uses(op):  # head counts only for variants that read them
                pairs = sum(h if "heads" in reads(op, v) else 1 for v in self.attention)
            per_op += pairs * math.prod(searched.values())
        built = len(self._chosen("downsample")) * len(self.width) * sum(1 for d in self.depth if d)
        return per_op * built + (0 in self.depth)

    def fixed(self, choice: StageChoice) -> StageChoice:
        """``choice`` with the ``OPTIONAL`` fields this stage fixes set to ``None``."""
        return dataclasses.replace(
            choice, **{f: None for f in OPTIONAL if self._chosen(f) == (None,)}
        )


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space."""

    name: str
    description: str
    kind: str  # "sequence", "image" or "video"
    channels: int
    size: tuple[int, ...]  # (L,), (H, W) or (T, H, W)
    classes: int
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    mlp_ratio: float
    source: str  # the TOML text it was loaded from (stored with every search)
    head: HeadSpec = HeadSpec()
    # the file's [zoo] table as written (a zoo network's timm name, stage mapping, ...)
    zoo: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)
    # the zoo networks the space holds ([zoo] members; "all": every one installed, when loaded)
    zoo_members: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        """Spatial dimensions: 1 for sequences, 2 for images, 3 for video (T, H, W)."""
        return len(self.size)

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Shape of a model input: ``(B, C, L)`` or ``(B, C, H, W)``."""
        return (batch, self.channels, *self.size)

    def stem_size(self) -> tuple[int, ...]:
        """Spatial size after the stem (same padding ``k // 2``, then stride)."""
        return self._sizes_net().stem_size()

    def stage_sizes(self) -> list[tuple[int, ...]]:
        """Spatial size inside each stage, with every stage built and taking its first
        downsampling choice (pooling rounds down, the strided conv rounds up)."""
        return self._sizes_net().stage_sizes()

    def num_architectures(self) -> int:
        """Number of distinct architectures in the space: the stage product and the zoo
        members."""
        return self.product_size() + len(self.zoo_members)

    def product_size(self) -> int:
        """Number of architectures of the stage product (what strategies sample)."""
        return math.prod(st.count() for st in self.stages)

    def enumerate(self, limit: int = 100_000, members: bool = True) -> list[Architecture]:
        """Every architecture, in a fixed order (the stage product, then the zoo members
        unless ``members`` is false); refuses spaces larger than ``limit``."""
        n = self.num_architectures() if members else self.product_size()
        if n > limit:
            raise SpaceError(
                f"space {self.name!r} has {n:,} architectures, more than the {limit:,} "
                "that can be enumerated"
            )
        per_stage = [st.options() for st in self.stages]
        product = [Architecture(self.name, combo) for combo in itertools.product(*per_stage)]
        return product + (self.members() if members else [])

    def sample(self, rng: random.Random | int | None = None) -> Architecture:
        """One architecture of the stage product, drawn uniformly over the (canonical) choices
        of each stage (zoo members are never drawn: ``--start-from`` queues them)."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        return Architecture(self.name, tuple(rng.choice(st.options()) for st in self.stages))

    def validate(self, arch: Architecture) -> Architecture:
        """Check that ``arch`` belongs to this space; raise :class:`ArchitectureError` if not.

        Returns ``arch`` with the fields this space fixes set to ``None`` (its id in the space).
        A zoo member (``arch.base`` set) must be the space's member of that name exactly.
        """
        if arch.base is not None:
            member = self.member_arch(arch.base, ArchitectureError)
            if arch.stages != member.stages:
                raise ArchitectureError(
                    f"architecture names zoo member {arch.base!r} of space {self.name!r}, but "
                    f"its stages differ from the member's: {member.describe()}"
                )
            return arch
        if len(arch.stages) != len(self.stages):
            raise ArchitectureError(
                f"architecture has {len(arch.stages)} stages; space {self.name!r} has "
                f"{len(self.stages)}"
            )
        for i, (choice, spec) in enumerate(zip(arch.stages, self.stages)):
            if choice.depth == 0:
                if 0 not in spec.depth:
                    raise ArchitectureError(
                        f"stage {i}: depth 0 is not allowed; allowed: {allowed(spec.depth)}"
                    )
                continue
            if choice.operator not in spec.operator:
                raise ArchitectureError(
                    f"stage {i}: operator {choice.operator!r} is not allowed; "
                    f"allowed: {allowed(spec.operator)}"
                )
            uses = reads(choice.operator, choice.attention)
            for field in (*SEARCHABLE, "width", "depth", "downsample"):
                if field in SEARCHABLE and field not in uses:
                    continue
                value, options = getattr(choice, field), getattr(spec, field)
                if field in OPTIONAL and value is None and len(options) == 1:
                    continue  # fixed by the space
                if field in RATIOS and type(value) is int:
                    value = float(value)
                # type check too: 16.0 == 16 and True == 1 would otherwise pass `in`
                if value not in options or type(value) is not type(options[0]):
                    raise ArchitectureError(
                        f"stage {i}: {field} {value!r} is not allowed; allowed: {allowed(options)}"
                    )
        stages = tuple(spec.fixed(c) for c, spec in zip(arch.stages, self.stages))
        return arch if stages == arch.stages else Architecture(arch.space, stages)

    def net_cfg(self, arch: Architecture) -> NetCfg:
        """The network config of ``arch``, after checking that it belongs to this space (a zoo
        member's is its scaled zoo network's)."""
        arch = self.validate(arch)
        if arch.base is not None:
            member = self.member_space(arch.base)
            return member.net_cfg(Architecture(member.name, arch.stages))
        return self._net(arch.stages)

    # ------------------------------------------------------------------ zoo members

    def member_space(self, name: str, error: type[FusionNasError] = SpaceError) -> SearchSpace:
        """Zoo member ``name`` as its own single-architecture space: the zoo network scaled
        by the space's ``[zoo] width``/``depth`` to its input, channels and classes."""
        if name not in self.zoo_members:
            held = allowed(self.zoo_members) if self.zoo_members else "none"
            raise error(f"{name!r} is not a zoo member of space {self.name!r}; allowed: {held}")
        from fusion_nas.model.zoo import zoo_text

        return _scaled_member(
            name,
            zoo_text(name),
            float(self.zoo.get("width", 1.0)),
            float(self.zoo.get("depth", 1.0)),
            tuple(self.size),
            self.channels,
            self.classes,
        )

    def member_arch(self, name: str, error: type[FusionNasError] = SpaceError) -> Architecture:
        """The architecture of zoo member ``name`` in this space (``base`` = ``name``)."""
        from fusion_nas.model.zoo import zoo_arch

        return Architecture(self.name, zoo_arch(self.member_space(name, error)).stages, name)

    def members(self) -> list[Architecture]:
        """The architectures of the zoo members, in the file's order."""
        return [self.member_arch(name) for name in self.zoo_members]

    def stage_cfg(self, i: int, choice: StageChoice) -> StageCfg:
        """The config of stage ``i`` for canonical ``choice``: fields the choice leaves
        ``None`` take the space's (window, fixed MLP ratio and downsampling) or the defaults."""
        spec = self.stages[i]
        fixed = {f: getattr(spec, f)[0] for f in ("mlp_ratio", *OPTIONAL[2:])}
        block = nets_view().BlockCfg(
            choice.operator,
            choice.width,
            window=spec.window,
            **dict(spec.settings),
            **{**fixed, **choice.chosen()},  # fields the block ignores: the space's first
        )
        down = choice.downsample if choice.downsample is not None else spec.downsample[0]
        return nets_view().StageCfg(block, choice.depth, down)

    def _net(self, choices: Iterable[StageChoice]) -> NetCfg:
        """The network of canonical ``choices``; skipped stages are left out."""
        stages = tuple(self.stage_cfg(i, c) for i, c in enumerate(choices) if c.depth)
        return nets_view().NetCfg(**self._net_fields(), stages=stages)

    def _net_fields(self) -> dict[str, Any]:
        """The :class:`NetCfg` fields of the input, stem and head."""
        s, h = self.stem, self.head
        return dict(
            in_channels=self.channels,
            size=self.size,
            classes=self.classes,
            stem_width=s.width,
            stem_kernel=s.kernel,
            stem_stride=s.stride,
            stem=s.kind,
            act=s.act,
            head=h.kind,
            head_width=h.width,
            distill=h.distill,
        )

    def _sizes_net(self) -> NetCfg:
        """Every stage built, one block, its first downsampling choice: the sizes' network."""
        view = nets_view()
        stages = tuple(
            view.StageCfg(_probe(d), 1, d) for d in (s.downsample[0] for s in self.stages)
        )
        return view.NetCfg(**self._net_fields(), stages=stages)


def _probe(downsample: str, defaults: BlockCfg | None = None) -> BlockCfg:
    """A block that can enter a stage with ``downsample``: for the geometry of a space only
    (``"block"`` needs an operator that downsamples itself)."""
    view = nets_view()
    block = defaults if defaults is not None else view.BlockCfg(list_ops()[0], 1)
    if downsample == "block" and not view.OPS[block.operator].downsamples:
        able = [name for name, cls in view.OPS.items() if cls.downsamples]
        if able:
            block = dataclasses.replace(block, operator=able[0])
    return block


@functools.lru_cache(maxsize=64)
def _scaled_member(
    name: str,
    text: str,
    width: float,
    depth: float,
    size: tuple[int, ...],
    channels: int,
    classes: int,
) -> SearchSpace:
    """The zoo network of TOML ``text`` scaled to a space (cached: spaces are remade often)."""
    from fusion_nas.model.zoo import scaled_zoo

    base = parse_space(text, source=f"<zoo {name}>", default_name=name)
    return scaled_zoo(base, width, depth, size, channels, classes)


# --------------------------------------------------------------------------- loading


def _builtin_dir() -> Traversable:
    """The built-in spaces: ``search_spaces/`` in the repository, shipped inside the package."""
    return resources.files("fusion_nas") / "search_spaces"


def builtin_spaces() -> list[str]:
    """Names of the search spaces shipped in ``search_spaces/``."""
    return sorted(p.name[:-5] for p in _builtin_dir().iterdir() if p.name.endswith(".toml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a built-in space by name, or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SpaceError(f"search-space file {str(path)!r} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpaceError(f"{path}: cannot be read ({exc})") from None
        return parse_space(text, source=str(path), default_name=path.stem)
    builtin = _builtin_dir() / f"{name_or_path}.toml"
    if not builtin.is_file():
        raise SpaceError(
            f"unknown search space {str(name_or_path)!r}; allowed: "
            f"{allowed(builtin_spaces())} or a path to a .toml file"
        )
    return parse_space(builtin.read_text(encoding="utf-8"), source=str(builtin))


def parse_space(text: str, source: str = "<string>", default_name: str = "space") -> SearchSpace:
    """Parse and validate the TOML text of a search space."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"{source}: not valid TOML: {exc}") from None
    return _Validator(source).space(data, text, default_name)


# TOML field of each NetCfg field ("size" depends on the input kind).
_NET_FIELDS = {
    "in_channels": "input.channels",
    "classes": "input.classes",
    "stem_width": "stem.width",
    "stem_kernel": "stem.kernel",
    "stem_stride": "stem.stride",
    "stem": "stem.kind",
    "act": "stem.act",
    "head": "head.kind",
    "head_width": "head.width",
    "distill": "head.distill",
}


class _Validator:
    """Turns parsed TOML into a :class:`SearchSpace`, failing on the first problem.

    Every value is checked by building the config that holds it; a :class:`CfgError` names the
    config field, which is mapped back to the file's field.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, message: str) -> SpaceError:
        return SpaceError(f"{self.source}: {field}: {message}")

    def keys(self, table: Any, field: str, allowed_keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise self.fail(field, f"must be a table, got {type(table).__name__}")
        for key in table:
            if key not in allowed_keys:
                raise self.fail(
                    f"{field}.{key}" if field else key,
                    f"unknown key; allowed: {allowed(allowed_keys)}",
                )
        return table

    def required(self, table: dict[str, Any], key: str, field: str, minimum: int = 1) -> Any:
        if key not in table:  # TOML has no null: the key is absent
            raise self.fail(field, f"missing; allowed: integers >= {minimum}")
        return table[key]

    def choices(self, value: Any, field: str) -> list[Any]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(field, "empty choice list; give at least one value")
        if len(set(map(repr, items))) != len(items):
            raise self.fail(field, f"{value!r} lists a value twice")
        return items

    def capped(self, value: Any, field: str, cap: int | float = MAX_SIZE, low: int = 1) -> Any:
        """``value``, unless it is a number above ``cap`` (sizes that would exhaust memory)."""
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and value > cap:
            kind = (
                f"integers {low}..{cap}" if isinstance(cap, int) else f"numbers >= 0 and <= {cap}"
            )
            raise self.fail(field, f"{value!r} is too large; allowed: {kind}")
        return value

    def build(self, prefix: str, make: Callable[[], T]) -> T:
        """``make()``, a config; its :class:`CfgError` becomes the error on ``prefix.field``."""
        try:
            return make()
        except cfg_errors() as exc:
            raise self.fail(f"{prefix}.{exc.field}", exc.reason) from None

    def block(self, prefix: str, **values: Any) -> BlockCfg:
        """A :class:`BlockCfg` of ``values`` (the other fields valid), checked on ``prefix``."""
        return self.build(
            prefix,
            lambda: nets_view().BlockCfg(**{"operator": list_ops()[0], "width": 1, **values}),
        )

    def net(self, kind: str, **values: Any) -> NetCfg:
        """A :class:`NetCfg` of ``values``, or the error on the file's field."""
        try:
            return nets_view().NetCfg(**values)
        except cfg_errors() as exc:
            size = "input.length" if kind == "sequence" else "input.size"
            field = {**_NET_FIELDS, "size": size}.get(exc.field, exc.field)
            raise self.fail(field.replace("stages[", "stage["), exc.reason) from None

    def space(self, data: dict[str, Any], text: str, default_name: str) -> SearchSpace:
        self.keys(data, "", _TOP_KEYS)
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name.strip():
            raise self.fail("name", f"{name!r} must be a non-empty string")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise self.fail("description", f"{description!r} must be a string")
        if "input" not in data:
            raise self.fail("input", "missing table [input]")
        inp = self.keys(data["input"], "input", _INPUT_KEYS)
        kind = inp.get("kind")
        if kind not in INPUT_KINDS:
            raise self.fail(
                "input.kind", f"{kind!r} is not allowed; allowed: {allowed(INPUT_KINDS)}"
            )
        if kind == "sequence":
            if "size" in inp:
                raise self.fail("input.size", "sequences take 'length', not 'size'")
            size = (self.capped(self.required(inp, "length", "input.length"), "input.length"),)
        else:
            axes = "[T, H, W]" if kind == "video" else "[H, W]"
            if "length" in inp:
                raise self.fail("input.length", f"{kind}s take 'size = {axes}', not 'length'")
            raw, n = inp.get("size"), INPUT_DIMS[kind]
            if not isinstance(raw, list) or len(raw) != n:
                count = "three" if n == 3 else "two"
                raise self.fail("input.size", f"{raw!r} must be a list {axes} of {count} integers")
            size = tuple(self.capped(v, "input.size") for v in raw)
        channels = self.capped(self.required(inp, "channels", "input.channels"), "input.channels")
        classes = self.required(inp, "classes", "input.classes", minimum=2)
        classes = self.capped(classes, "input.classes", low=2)
        size_field = "input.length" if kind == "sequence" else "input.size"
        if all(type(v) is int for v in (channels, *size)):  # other types: refused below
            self.values(
                size_field, math.prod(size) * channels, f"{list(size)} x {channels} channels"
            )

        net = self.keys(data.get("network", {}), "network", _NETWORK_KEYS)
        for key, value in net.items():
            if isinstance(value, list):
                raise self.fail(f"network.{key}", f"{value!r} must be one value, not a list")
        defaults = self.block(
            "network",
            **{
                k: self.capped(v, f"network.{k}", MAX_MLP_RATIO if k in RATIOS else MAX_SIZE)
                for k, v in net.items()
            },
        )

        if "stem" not in data:
            raise self.fail("stem", "missing table [stem]")
        stem_t = self.keys(data["stem"], "stem", _STEM_KEYS)
        for key, value in stem_t.items():  # a stem is one stem, not a choice
            if isinstance(value, list):
                raise self.fail(f"stem.{key}", f"{value!r} must be one value, not a list")
        view = nets_view()
        stem = StemSpec(
            width=self.capped(self.required(stem_t, "width", "stem.width"), "stem.width"),
            kernel=self.capped(stem_t.get("kernel", view.NetCfg.stem_kernel), "stem.kernel"),
            stride=self.capped(stem_t.get("stride", view.NetCfg.stem_stride), "stem.stride"),
            kind=stem_t.get("kind", view.NetCfg.stem),
            act=stem_t.get("act", view.NetCfg.act),
        )
        head_t = self.keys(data.get("head", {}), "head", _HEAD_KEYS)
        for key, value in head_t.items():
            if isinstance(value, list):
                raise self.fail(f"head.{key}", f"{value!r} must be one value, not a list")
        head = HeadSpec(
            kind=head_t.get("kind", view.NetCfg.head),
            width=self.capped(head_t.get("width", view.NetCfg.head_width), "head.width", low=0),
            distill=head_t.get("distill", view.NetCfg.distill),
        )
        zoo = data.get("zoo", {})
        if not isinstance(zoo, dict):
            raise self.fail("zoo", f"must be a table, got {type(zoo).__name__}")
        net_values = dict(
            in_channels=channels,
            size=size,
            classes=classes,
            stem_width=stem.width,
            stem_kernel=stem.kernel,
            stem_stride=stem.stride,
            stem=stem.kind,
            act=stem.act,
            head=head.kind,
            head_width=head.width,
            distill=head.distill,
        )
        stem_cfg = self.net(
            kind, **net_values, stages=(nets_view().StageCfg(defaults),)
        )  # input and stem
        grid = stem_cfg.stem_size()
        self.values("stem.width", math.prod(grid) * stem.width, f"{stem.width} at size {grid}")

        raw_stages = data.get("stage")
        if not isinstance(raw_stages, list) or not raw_stages:
            raise self.fail("stage", "at least one [[stage]] table is required")
        stages = []
        width = stem.width
        for i, st in enumerate(raw_stages):
            spec = self.stage(st, f"stage[{i}]", defaults, width)
            stages.append(spec)
            width = spec.width[0]
        space = SearchSpace(
            name=name,
            description=description,
            kind=kind,
            channels=channels,
            size=size,
            classes=classes,
            stem=stem,
            stages=tuple(stages),
            mlp_ratio=float(defaults.mlp_ratio),
            source=text,
            head=head,
            zoo=zoo,
        )
        # Enough input left for every downsampling stage, each built and shrinking the most
        # it may (pooling rounds down, the strided conv rounds up).
        order = ("pool", "patch", "conv", "block", "none")  # most shrinking first
        most = tuple(
            nets_view().StageCfg(_probe(d, defaults), downsample=d)
            for d in (next(d for d in order if d in st.downsample) for st in stages)
        )
        self.net(kind, **net_values, stages=most)
        for i, spec in enumerate(stages):
            # Largest output: every stage so far keeping the most it may (skipped, or no
            # downsampling, else the strided conv, which rounds up); MLPs widen it.
            if not ("none" in spec.downsample or 0 in spec.depth):
                up = {"conv", "block"} & set(spec.downsample)  # these round up
                grid = tuple((n + 1) // 2 if up else n // 2 for n in grid)
            wide = max(spec.width)
            ratio = 1.0
            for field in RATIOS:  # MLPs and inverted residuals widen the map
                if any(field in op_uses(op) for op in spec.operator):
                    ratio = max(ratio, *getattr(spec, field))
            shown = f"{wide} at size {grid}" + (f" (MLP x{ratio:g})" if ratio > 1 else "")
            self.values(f"stage[{i}].width", int(math.prod(grid) * wide * ratio), shown)
        self.combinations(space)
        return self.members(space)

    def combinations(self, space: SearchSpace) -> None:
        """Every block a stage can build has a valid config: fields checked one at a time
        above can still clash together (an operator's heads and its inner width, say)."""
        view = nets_view()
        for i, spec in enumerate(space.stages):
            if spec.depth == (0,):
                continue
            fixed = {f: getattr(spec, f)[0] for f in ("mlp_ratio", *OPTIONAL[2:])}
            base = {"window": spec.window, **dict(spec.settings), **fixed}
            for op in spec.operator:
                searched = spec._searched(op)  # per SEARCHABLE field: its values or (None,)
                for values in itertools.product(*searched, spec.width):
                    chosen = {f: v for f, v in zip(SEARCHABLE, values) if v is not None}
                    try:
                        cfg = view.BlockCfg(op, values[-1], **{**base, **chosen})
                        view.takes(cfg, space.size)  # the input's rank (video, image...)
                        check = getattr(view.OPS[op], "check", None)  # the operator's rules
                        if check is not None:
                            check(cfg)
                    except cfg_errors() as exc:
                        shown = ", ".join(f"{k} {v}" for k, v in chosen.items())
                        raise self.fail(
                            f"stage[{i}].{exc.field}",
                            f"{exc.reason} (operator {op}, width {values[-1]}, {shown})",
                        ) from None

    def members(self, space: SearchSpace) -> SearchSpace:
        """``space`` holding its ``[zoo] members`` (names of :mod:`fusion_nas.model.zoo`
        networks, or ``"all"``: every one installed), after checking them and the
        ``width``/``depth`` multipliers they are scaled by; each member must build."""
        zoo = space.zoo
        if "members" not in zoo:
            return space
        from fusion_nas.model.zoo import list_zoo

        members = zoo["members"]
        if members == "all":
            members = list_zoo()
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise self.fail(
                "zoo.members", f'{members!r} must be a list of zoo network names or "all"'
            )
        if len(set(members)) != len(members):
            raise self.fail("zoo.members", f"{members!r} lists a network twice")
        if members and space.kind != "image":
            raise self.fail(
                "zoo.members", f"zoo networks take images; this space takes {space.kind}s"
            )
        for key in ("width", "depth"):
            value = zoo.get(key, 1.0)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not 0 < value <= 64:
                raise self.fail(f"zoo.{key}", f"{value!r} is not allowed; allowed: (0, 64]")
        known = list_zoo()
        for i, name in enumerate(members):
            if name not in known:
                raise self.fail(
                    f"zoo.members[{i}]", f"{name!r} is not a zoo network; allowed: {allowed(known)}"
                )
        space = dataclasses.replace(space, zoo_members=tuple(members))
        for i, name in enumerate(members):
            try:
                space.member_space(name)
            except FusionNasError as exc:
                raise self.fail(f"zoo.members[{i}]", f"{name!r} cannot be scaled: {exc}") from None
        return space

    def values(self, field: str, n: int, what: str) -> None:
        """Refuse a tensor of ``n`` values per sample (``what`` says how) over the cap."""
        if n > MAX_VALUES:
            raise self.fail(
                field,
                f"{what} makes {n:,} values per sample, too many; allowed: at most "
                f"{MAX_VALUES:,} (fewer channels, a smaller input or an earlier downsample)",
            )

    def stage(self, st: Any, field: str, defaults: BlockCfg, prev_width: int) -> StageSpec:
        st = self.keys(st, field, _STAGE_KEYS)
        if "operator" not in st:
            raise self.fail(f"{field}.operator", f"missing; allowed: {allowed(list_ops())}")

        def values(key: str, default: Any, cap: int = MAX_SIZE) -> tuple[Any, ...]:
            items = self.choices(st.get(key, default), f"{field}.{key}")
            return tuple(self.capped(v, f"{field}.{key}", cap) for v in items)

        def checked(key: str, default: Any) -> tuple[Any, ...]:
            out = values(key, default)
            for v in out:
                self.block(field, **{key: v})  # BlockCfg's rules, one value at a time
            return out

        ops = checked("operator", None)
        widths = checked("width", prev_width)
        kernels = checked("kernel", defaults.kernel)
        variants = checked("attention", defaults.attention)
        heads = values("heads", defaults.heads)
        reads_heads = any("heads" in op_uses(op) for op in ops)
        for h in heads:
            # Heads must divide every width, where an operator of the stage reads them.
            alone = h if type(h) is int and h > 0 else 1
            for w in widths if reads_heads else (alone,):
                self.block(field, width=w, heads=h)

        def ratios(key: str) -> tuple[float, ...]:
            out = tuple(
                float(getattr(self.block(field, **{key: r}), key))
                for r in values(key, getattr(defaults, key), MAX_MLP_RATIO)
            )
            if len(set(out)) != len(out):
                raise self.fail(f"{field}.{key}", f"{st[key]!r} lists a value twice")
            return out

        mlp_ratios, expands = ratios("mlp_ratio"), ratios("expand")
        acts = checked("act", defaults.act)
        norms = checked("norm", defaults.norm)
        positions = checked("pos", defaults.pos)
        tkernels = checked("tkernel", defaults.tkernel)
        settings = {}
        for key in SETTINGS:
            value = st.get(key, getattr(defaults, key))
            if isinstance(value, list):
                raise self.fail(f"{field}.{key}", f"{value!r} must be one value, not a list")
            value = self.capped(value, f"{field}.{key}")
            settings[key] = getattr(self.block(field, **{key: value}), key)
        window = settings.pop("window")
        depths = tuple(
            self.build(field, lambda d=d: nets_view().StageCfg(defaults, d)).depth
            for d in values("depth", nets_view().StageCfg.depth, MAX_DEPTH)
        )
        downs = []
        raw = st.get("downsample", nets_view().StageCfg.downsample)
        for d in self.choices(raw, f"{field}.downsample"):
            # one value: a name or true/false; a list of choices: names only
            ok = d in DOWNSAMPLES if isinstance(d, str) else isinstance(d, bool) and raw is d
            if not ok:
                words = f"{allowed(DOWNSAMPLES)}, true, false" if raw is d else allowed(DOWNSAMPLES)
                raise self.fail(f"{field}.downsample", f"{d!r} is not allowed; allowed: {words}")
            for op in ops:  # "block": every operator of the stage must downsample itself
                block = dataclasses.replace(defaults, operator=op)
                cfg = self.build(field, lambda d=d, b=block: nets_view().StageCfg(b, 1, d))
            downs.append(cfg.downsample)
        spec = StageSpec(
            operator=ops,
            kernel=kernels,
            heads=heads,
            attention=variants,
            mlp_ratio=mlp_ratios,
            width=widths,
            depth=depths,
            window=window,
            downsample=tuple(downs),
            act=acts,
            norm=norms,
            expand=expands,
            pos=positions,
            tkernel=tkernels,
            settings=tuple(settings.items()),
        )
        if (n := spec.count()) > MAX_STAGE_CHOICES:
            raise self.fail(
                field,
                f"{n:,} distinct choices, too many; allowed: at most {MAX_STAGE_CHOICES:,} "
                "per stage (list fewer values)",
            )
        return spec
