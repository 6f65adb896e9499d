"""Search spaces: load and validate TOML files; count, enumerate and sample architectures.

A space file (see ``search_spaces/`` and the README) describes the input, the stem and a list
of ``[[stage]]`` tables, each with the allowed choices for operator, kernel size, head count,
attention variant, width and depth, and whether the stage halves the spatial size.
Validation rejects a bad file with one line naming the file, the field, the bad value and the
allowed values.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion_nas.arch import Architecture, StageChoice
from fusion_nas.errors import ArchitectureError, SpaceError, allowed
from fusion_nas.ops.attention import ATTENTION_VARIANTS
from fusion_nas.ops.registry import list_ops, op_uses

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
INPUT_KINDS = ("sequence", "image")

_TOP_KEYS = ("name", "description", "input", "network", "stem", "stage")
_INPUT_KEYS = ("kind", "channels", "classes", "length", "size")
_NETWORK_KEYS = ("mlp_ratio", "window")
_STEM_KEYS = ("width", "kernel", "stride")
_STAGE_KEYS = (
    "operator",
    "kernel",
    "heads",
    "attention",
    "width",
    "depth",
    "window",
    "downsample",
)


@dataclass(frozen=True)
class StemSpec:
    """Convolution stem: ``width`` channels, odd ``kernel``, ``stride``."""

    width: int
    kernel: int
    stride: int


@dataclass(frozen=True)
class StageSpec:
    """Allowed choices of one stage."""

    operator: tuple[str, ...]
    kernel: tuple[int, ...]
    heads: tuple[int, ...]
    attention: tuple[str, ...]
    width: tuple[int, ...]
    depth: tuple[int, ...]
    window: int
    downsample: bool

    def options(self) -> list[StageChoice]:
        """Every distinct (canonical) choice of this stage."""
        out: list[StageChoice] = []
        for op in self.operator:
            uses = op_uses(op)
            kernels = self.kernel if "kernel" in uses else (None,)
            heads = self.heads if "heads" in uses else (None,)
            variants = self.attention if "attention" in uses else (None,)
            for k, h, a, w, d in itertools.product(
                kernels, heads, variants, self.width, self.depth
            ):
                out.append(StageChoice(op, w, d, k, h, a))
        return out

    def count(self) -> int:
        """Number of distinct choices of this stage (without listing them)."""
        n = 0
        for op in self.operator:
            uses = op_uses(op)
            n_k = len(self.kernel) if "kernel" in uses else 1
            n_h = len(self.heads) if "heads" in uses else 1
            n_a = len(self.attention) if "attention" in uses else 1
            n += n_k * n_h * n_a
        return n * len(self.width) * len(self.depth)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space."""

    name: str
    description: str
    kind: str  # "sequence" or "image"
    channels: int
    size: tuple[int, ...]  # (L,) or (H, W)
    classes: int
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    mlp_ratio: float
    source: str  # the TOML text it was loaded from (stored with every search)

    @property
    def dim(self) -> int:
        """Spatial dimensions: 1 for sequences, 2 for images."""
        return len(self.size)

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Shape of a model input: ``(B, C, L)`` or ``(B, C, H, W)``."""
        return (batch, self.channels, *self.size)

    def stem_size(self) -> tuple[int, ...]:
        """Spatial size after the stem (same padding ``k // 2``, then stride)."""
        k, s = self.stem.kernel, self.stem.stride
        return tuple((n + 2 * (k // 2) - k) // s + 1 for n in self.size)

    def stage_sizes(self) -> list[tuple[int, ...]]:
        """Spatial size inside each stage (a downsampling stage halves it, rounding down)."""
        size, out = self.stem_size(), []
        for st in self.stages:
            if st.downsample:
                size = tuple(n // 2 for n in size)
            out.append(size)
        return out

    def num_architectures(self) -> int:
        """Number of distinct architectures in the space."""
        return math.prod(st.count() for st in self.stages)

    def enumerate(self, limit: int = 100_000) -> list[Architecture]:
        """Every architecture, in a fixed order; refuses spaces larger than ``limit``."""
        n = self.num_architectures()
        if n > limit:
            raise SpaceError(
                f"space {self.name!r} has {n:,} architectures, more than the {limit:,} "
                "that can be enumerated"
            )
        per_stage = [st.options() for st in self.stages]
        return [Architecture(self.name, combo) for combo in itertools.product(*per_stage)]

    def sample(self, rng: random.Random | int | None = None) -> Architecture:
        """One architecture drawn uniformly over the (canonical) choices of each stage."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        return Architecture(self.name, tuple(rng.choice(st.options()) for st in self.stages))

    def validate(self, arch: Architecture) -> Architecture:
        """Check that ``arch`` belongs to this space; raise :class:`ArchitectureError` if not."""
        if len(arch.stages) != len(self.stages):
            raise ArchitectureError(
                f"architecture has {len(arch.stages)} stages; space {self.name!r} has "
                f"{len(self.stages)}"
            )
        for i, (choice, spec) in enumerate(zip(arch.stages, self.stages)):
            if choice.operator not in spec.operator:
                raise ArchitectureError(
                    f"stage {i}: operator {choice.operator!r} is not allowed; "
                    f"allowed: {allowed(spec.operator)}"
                )
            uses = op_uses(choice.operator)
            for field, options in (
                ("kernel", spec.kernel),
                ("heads", spec.heads),
                ("attention", spec.attention),
                ("width", spec.width),
                ("depth", spec.depth),
            ):
                if field in ("kernel", "heads", "attention") and field not in uses:
                    continue
                value = getattr(choice, field)
                # type check too: 16.0 == 16 and True == 1 would otherwise pass `in`
                if value not in options or type(value) is not type(options[0]):
                    raise ArchitectureError(
                        f"stage {i}: {field} {value!r} is not allowed; allowed: {allowed(options)}"
                    )
        return arch


# --------------------------------------------------------------------------- loading


def builtin_spaces() -> list[str]:
    """Names of the search spaces shipped in ``search_spaces/``."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


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
    builtin = BUILTIN_DIR / f"{name_or_path}.toml"
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


class _Validator:
    """Turns parsed TOML into a :class:`SearchSpace`, failing on the first problem."""

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

    def integer(self, value: Any, field: str, minimum: int = 1) -> int:
        if value is None:  # TOML has no null: the key is absent
            raise self.fail(field, f"missing; allowed: integers >= {minimum}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field, f"{value!r} is not an integer")
        if value < minimum:
            raise self.fail(field, f"{value!r} is too small; allowed: integers >= {minimum}")
        return value

    def choices(self, value: Any, field: str) -> list[Any]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(field, "empty choice list; give at least one value")
        if len(set(map(repr, items))) != len(items):
            raise self.fail(field, f"{value!r} lists a value twice")
        return items

    def odd_kernels(self, value: Any, field: str) -> tuple[int, ...]:
        out = []
        for k in self.choices(value, field):
            k = self.integer(k, field)
            if k % 2 == 0:
                raise self.fail(
                    field, f"kernel size {k} is even; allowed: odd integers (1, 3, 5, 7...)"
                )
            out.append(k)
        return tuple(out)

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
            size = (self.integer(inp.get("length"), "input.length"),)
        else:
            if "length" in inp:
                raise self.fail("input.length", "images take 'size = [H, W]', not 'length'")
            raw = inp.get("size")
            if not isinstance(raw, list) or len(raw) != 2:
                raise self.fail("input.size", f"{raw!r} must be a list [H, W] of two integers")
            size = tuple(self.integer(v, "input.size") for v in raw)
        channels = self.integer(inp.get("channels"), "input.channels")
        classes = self.integer(inp.get("classes"), "input.classes", minimum=2)

        net = self.keys(data.get("network", {}), "network", _NETWORK_KEYS)
        mlp_ratio = net.get("mlp_ratio", 2.0)
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
            raise self.fail("network.mlp_ratio", f"{mlp_ratio!r} must be a positive number")
        window = self.integer(net.get("window", 4), "network.window")

        if "stem" not in data:
            raise self.fail("stem", "missing table [stem]")
        stem_t = self.keys(data["stem"], "stem", _STEM_KEYS)
        if isinstance(stem_t.get("kernel"), list):  # a stem is one conv, not a choice
            raise self.fail("stem.kernel", f"{stem_t['kernel']!r} must be one odd integer")
        stem = StemSpec(
            width=self.integer(stem_t.get("width"), "stem.width"),
            kernel=self.odd_kernels(stem_t.get("kernel", 3), "stem.kernel")[0],
            stride=self.integer(stem_t.get("stride", 1), "stem.stride"),
        )
        raw_stages = data.get("stage")
        if not isinstance(raw_stages, list) or not raw_stages:
            raise self.fail("stage", "at least one [[stage]] table is required")
        stages = []
        width = stem.width
        for i, st in enumerate(raw_stages):
            spec = self.stage(st, f"stage[{i}]", window, width)
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
            mlp_ratio=float(mlp_ratio),
            source=text,
        )
        for i, sz in enumerate(space.stage_sizes()):
            if min(sz) < 1:
                raise self.fail(
                    f"stage[{i}].downsample",
                    f"input {space.size} is too small for this many downsampling stages",
                )
        return space

    def stage(self, st: Any, field: str, window: int, prev_width: int) -> StageSpec:
        st = self.keys(st, field, _STAGE_KEYS)
        if "operator" not in st:
            raise self.fail(f"{field}.operator", f"missing; allowed: {allowed(list_ops())}")
        ops = self.choices(st["operator"], f"{field}.operator")
        for op in ops:
            if op not in list_ops():
                raise self.fail(
                    f"{field}.operator",
                    f"{op!r} is not an operator; allowed: {allowed(list_ops())}",
                )
        kernel = self.odd_kernels(st.get("kernel", 3), f"{field}.kernel")
        heads = tuple(
            self.integer(h, f"{field}.heads")
            for h in self.choices(st.get("heads", 1), f"{field}.heads")
        )
        variants = self.choices(st.get("attention", "global"), f"{field}.attention")
        for v in variants:
            if v not in ATTENTION_VARIANTS:
                raise self.fail(
                    f"{field}.attention",
                    f"{v!r} is not an attention variant; allowed: {allowed(ATTENTION_VARIANTS)}",
                )
        widths = tuple(
            self.integer(w, f"{field}.width")
            for w in self.choices(st.get("width", prev_width), f"{field}.width")
        )
        depths = tuple(
            self.integer(d, f"{field}.depth")
            for d in self.choices(st.get("depth", 1), f"{field}.depth")
        )
        if any("heads" in op_uses(op) for op in ops):
            for w in widths:
                bad = [h for h in heads if w % h]
                if bad:
                    divisors = [d for d in range(1, w + 1) if w % d == 0]
                    raise self.fail(
                        f"{field}.heads",
                        f"{bad[0]} heads do not divide width {w}; allowed: {allowed(divisors)}",
                    )
        down = st.get("downsample", False)
        if not isinstance(down, bool):
            raise self.fail(f"{field}.downsample", f"{down!r} is not allowed; allowed: true, false")
        return StageSpec(
            operator=tuple(ops),
            kernel=kernel,
            heads=heads,
            attention=tuple(variants),
            width=widths,
            depth=depths,
            window=self.integer(st.get("window", window), f"{field}.window"),
            downsample=down,
        )
