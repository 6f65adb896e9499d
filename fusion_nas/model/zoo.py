"""The zoo: the field's conv/attention hybrids as named single-architecture spaces, and their
scaled variants.

A zoo network is a space file in ``fusion_nas/zoo/`` whose every stage field holds one value
(224x224x3 input, 1000 classes), with a ``[zoo]`` table: ``timm`` (the timm model it matches),
``stage_ends`` (per timm stage, the index of the file's stage whose output is that stage's
output), ``published_params`` and ``published_gmacs``. ``benchmarks/timm_parity.py`` and
``tests/model/test_zoo_parity.py`` check each against timm.

:func:`scaled_zoo` turns any such single-architecture space into a smaller (or larger) one: widths
and depths times a multiplier, another input size, channel count or class count. The result is a
new space whose ``source`` is valid TOML again, so it is stored and reloaded like any other.
Nothing here imports torch, except :func:`zoo_stage_shapes`, which builds the network on the
``meta`` device.
"""

from __future__ import annotations

import copy
import json
import math
import re
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusion_nas.errors import SpaceError, allowed
from fusion_nas.model.arch import Architecture
from fusion_nas.model.configs import cfg_errors, nets_view
from fusion_nas.model.space import SearchSpace, parse_space

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "MIN_MAP",
    "WIDTH_STEP",
    "list_zoo",
    "load_zoo",
    "scaled_zoo",
    "zoo_arch",
    "zoo_stage_shapes",
    "zoo_text",
]

WIDTH_STEP = 8  # scaled widths are multiples of this
MIN_MAP = 4  # a smaller input keeps the last map at least this many positions per axis
# Fields holding a channel count, scaled with the widths where they are set (0: "use width").
_WIDTH_FIELDS = ("width", "inner")
_DEPTH_FIELDS = ("depth", "layers")  # block counts, scaled with the depths (at least 1)


def _zoo_dir() -> Traversable:
    """The built-in zoo: ``fusion_nas/zoo/``."""
    return resources.files("fusion_nas") / "zoo"


def list_zoo() -> list[str]:
    """Names of the zoo networks (``fusion_nas/zoo/*.toml``), sorted."""
    folder = _zoo_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def zoo_text(name: str) -> str:
    """The TOML text of zoo network ``name``; an unknown name lists the zoo (one line)."""
    entry = _zoo_dir() / f"{name}.toml"
    if not entry.is_file():
        raise SpaceError(
            f"unknown zoo network {str(name)!r}; allowed: {allowed(list_zoo()) or 'none'}"
        )
    return entry.read_text(encoding="utf-8")


def load_zoo(name: str | Path) -> SearchSpace:
    """The zoo network ``name`` (or a zoo-like TOML file by path) as a space.

    Raises:
        SpaceError: an unknown name (the message lists the zoo), or a file that is not a
            single-architecture image space.
    """
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise SpaceError(f"zoo file {str(path)!r} does not exist")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        text, source = zoo_text(str(name)), str(_zoo_dir() / f"{name}.toml")
    space = parse_space(text, source=source, default_name=path.stem)
    _check_zoo_like(space, source)
    return space


def _check_zoo_like(space: SearchSpace, source: str) -> None:
    """A zoo-like space: an image space of exactly one architecture."""
    if space.kind != "image":
        raise SpaceError(f"{source}: input.kind: a zoo network takes images, got {space.kind!r}")
    n = space.num_architectures()
    if n != 1:
        raise SpaceError(
            f"{source}: a zoo network is one architecture, this space has {n:,}; allowed: "
            "one value per stage field"
        )


def _as_space(name: str | Path | SearchSpace) -> SearchSpace:
    if isinstance(name, SearchSpace):
        _check_zoo_like(name, name.name)
        return name
    return load_zoo(name)


def zoo_arch(name: str | Path | SearchSpace) -> Architecture:
    """The one architecture of zoo network ``name`` (or of a zoo-like space)."""
    return _as_space(name).enumerate(limit=1)[0]


# --------------------------------------------------------------------------- scaling


def _one(value: Any) -> Any:
    """A stage field's value: a one-element list is its element."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _block_fields() -> set[str]:
    return set(nets_view().BlockCfg.__dataclass_fields__)


def _valid_block(stage: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether ``stage`` (a ``[[stage]]`` table) makes a valid block config."""
    names = _block_fields()
    values = {k: _one(v) for k, v in defaults.items() if k in names}
    values.update({k: _one(v) for k, v in stage.items() if k in names})
    try:
        nets_view().BlockCfg(**values)
    except cfg_errors():
        return False
    return True


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _scaled_width(width: int, mult: float, fits: Any) -> int:
    """``width * mult`` rounded to the nearest multiple of :data:`WIDTH_STEP` (ties up) for
    which ``fits(w)`` holds (head counts, channel splits and key dims stay valid)."""
    target = width * mult
    base = max(1, _round_half_up(target / WIDTH_STEP))
    for k in range(64):  # base, base+1, base-1, base+2, ... (never below one step)
        for m in (base + k, base - k) if k else (base,):
            if m >= 1 and fits(m * WIDTH_STEP):
                return m * WIDTH_STEP
    raise SpaceError(
        f"no width near {target:g} (a multiple of {WIDTH_STEP}) suits the stage's heads and "
        "splits; allowed: another width multiplier"
    )


def _scale_stage(
    stage: dict[str, Any], defaults: dict[str, Any], width: float, depth: float
) -> dict[str, Any]:
    out = dict(stage)
    for field in _DEPTH_FIELDS:
        value = _one(out.get(field))
        if depth != 1.0 and type(value) is int and value > 0:
            out[field] = max(1, _round_half_up(value * depth))
    if width != 1.0:
        inner = _one(out.get("inner", defaults.get("inner", 0)))
        if type(inner) is int and inner > 0:  # an inner width of its own (0: the width)
            out["inner"] = _scaled_width(
                inner, width, lambda w: _valid_block({**out, "inner": w}, defaults)
            )
        if "width" in out:  # else the previous stage's (scaled) width carries over
            out["width"] = _scaled_width(
                _one(out["width"]), width, lambda v: _valid_block({**out, "width": v}, defaults)
            )
    return out


def _last_map(data: dict[str, Any]) -> tuple[int, ...] | None:
    """The last stage's map size of the space ``data``, or ``None`` if it is not valid (an
    input too small for its downsamples, or a stem that refuses its stride)."""
    try:
        return parse_space(_dump_toml(data), source="<scaled zoo>").stage_sizes()[-1]
    except SpaceError:
        return None


def _halve_stem(data: dict[str, Any]) -> dict[str, Any] | None:
    """``data`` with the stem stride halved, or ``None`` where the stem takes no other stride
    (a stem of fixed layout) or is at stride 1 already."""
    stem = data["stem"]
    stride = stem.get("stride", nets_view().NetCfg.stem_stride)
    if stride <= 1:
        return None
    out = copy.deepcopy(data)
    out["stem"]["stride"] = stride // 2
    if stem.get("kind") == "patch":  # a patch stem's kernel is its stride
        out["stem"]["kernel"] = stride // 2
    flat = copy.deepcopy(out)  # nothing downsamples: only the stem can be refused
    for st in flat["stage"]:
        st["downsample"] = "none"
    return out if _last_map(flat) is not None else None


def _shrink_for_input(data: dict[str, Any]) -> dict[str, Any]:
    """Halve the stem stride (where the stem allows), then drop the earliest downsamples, until
    the last map holds at least :data:`MIN_MAP` positions per axis (or nothing is left)."""
    while True:
        last = _last_map(data)
        if last is not None and min(last) >= MIN_MAP:
            return data
        halved = _halve_stem(data)
        if halved is not None:
            data = halved
            continue
        for st in data["stage"]:
            down = _one(st.get("downsample", "none"))
            if _one(st.get("depth", 1)) and down not in ("none", False):
                st["downsample"] = "none"
                break
        else:
            return data  # nothing left to drop: the space's own check says what is wrong


def scaled_zoo(
    name: str | Path | SearchSpace,
    width: float = 1.0,
    depth: float = 1.0,
    size: tuple[int, int] | list[int] | None = None,
    channels: int | None = None,
    classes: int | None = None,
) -> SearchSpace:
    """Zoo network ``name`` (or any zoo-like space) scaled into a new single-architecture space.

    Args:
        name: a zoo name, a zoo-like TOML path or a zoo-like :class:`SearchSpace`.
        width: multiplier of every width (stem, stages, head, inner widths); each is rounded to
            the nearest multiple of :data:`WIDTH_STEP` that keeps the stage's heads, splits and
            key dims valid. 1.0 keeps the widths exactly.
        depth: multiplier of every stage depth and of the transformer layers inside a block,
            rounded half up, at least 1 (skipped stages stay skipped).
        size: the input ``(H, W)``; for a smaller one the stem stride is halved (where the
            stem takes another stride) and then the earliest downsamples dropped until the last
            map is at least :data:`MIN_MAP` per axis (attention windows clip to the map by
            themselves).
        channels, classes: the input channels and class count (default: the network's).

    Returns:
        A space of one architecture, named after the base and what changed
        (``mobilevit_xxs-w0.5-32x32-10cls``), with ``zoo.base`` naming the base network.

    Raises:
        SpaceError: bad multipliers or sizes, or a network that cannot be built scaled.
    """
    space = _as_space(name)
    for label, mult in (("width", width), ("depth", depth)):
        if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not 0 < mult <= 64:
            raise SpaceError(f"{label} multiplier {mult!r} is not allowed; allowed: (0, 64]")
    data = tomllib.loads(space.source)
    defaults = data.get("network", {})
    data["stage"] = [_scale_stage(st, defaults, width, depth) for st in data["stage"]]
    if width != 1.0:
        data["stem"]["width"] = _scaled_width(data["stem"]["width"], width, lambda w: True)
        head = data.get("head")
        if isinstance(head, dict) and type(head.get("width")) is int and head["width"] > 0:
            head["width"] = _scaled_width(head["width"], width, lambda w: True)
    inp = data["input"]
    if channels is not None:
        inp["channels"] = channels
    if classes is not None:
        inp["classes"] = classes
    if size is not None:
        if not isinstance(size, (tuple, list)) or len(size) != 2:
            raise SpaceError(f"size {size!r} is not allowed; allowed: (H, W)")
        inp["size"] = list(size)
        data = _shrink_for_input(data)
        inp = data["input"]
    base = space.zoo.get("base", space.name) if isinstance(space.zoo, dict) else space.name
    parts = [base]
    if width != 1.0:
        parts.append(f"w{width:g}")
    if depth != 1.0:
        parts.append(f"d{depth:g}")
    if size is not None and tuple(size) != tuple(space.size):
        parts.append(f"{size[0]}x{size[1]}")
    if channels is not None and channels != space.channels:
        parts.append(f"{channels}ch")
    if classes is not None and classes != space.classes:
        parts.append(f"{classes}cls")
    data["name"] = "-".join(parts)
    data["description"] = f"{base} scaled: width x{width:g}, depth x{depth:g}, input " + "x".join(
        map(str, inp["size"])
    )
    zoo = {"base": base, "width": float(width), "depth": float(depth)}
    if isinstance(space.zoo, dict) and "timm" in space.zoo:
        zoo["timm"] = space.zoo["timm"]
    data["zoo"] = zoo  # stage_ends and published figures hold for the base only
    return parse_space(_dump_toml(data), source=f"<zoo {data['name']}>")


# --------------------------------------------------------------------------- shapes


def stage_outputs(model: Any, x: Any) -> list[tuple[int, ...]]:
    """Output shape of each module of ``model.stages`` on ``x``, in order (forward hooks,
    no gradients): ours and timm's networks alike."""
    import torch

    seen: list[tuple[int, ...]] = []
    hooks = [
        s.register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape)))
        for s in model.stages
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def zoo_stage_shapes(name: str | Path | SearchSpace) -> list[tuple[int, ...] | None]:
    """Output shape ``(1, C, H, W)`` of each stage of the file (``None`` for a skipped one),
    from forward hooks on the network built on the ``meta`` device (nothing is allocated)."""
    import torch

    from fusion_nas.model.nets import FusionNet

    space = _as_space(name)
    arch = zoo_arch(space)
    with torch.device("meta"):
        model = FusionNet(space.net_cfg(arch)).eval()  # eval: batch-norm heads take batch 1
        x = torch.empty(space.input_shape(1))
    built = [i for i, st in enumerate(arch.stages) if st.depth]  # model.stages holds these
    shapes: list[tuple[int, ...] | None] = [None] * len(arch.stages)
    for i, shape in zip(built, stage_outputs(model, x), strict=True):
        shapes[i] = shape
    return shapes


# --------------------------------------------------------------------------- TOML text

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise SpaceError(f"cannot write {type(v).__name__} {v!r} to TOML")


def _dump_toml(data: dict[str, Any]) -> str:
    """TOML text of parsed space data: scalars first, then tables, then arrays of tables.

    Space files hold only this shape (tables of scalars and lists, ``[[stage]]``), so a few
    lines suffice; a table inside a table is written inline.
    """
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not _is_table(v)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{_key(k)}]", *(f"{_key(a)} = {_value(b)}" for a, b in v.items())]
    for k, v in data.items():
        if _is_table(v) and isinstance(v, list):
            for item in v:
                lines += ["", f"[[{_key(k)}]]"]
                lines += [f"{_key(a)} = {_value(b)}" for a, b in item.items()]
    return "\n".join(lines) + "\n"


def _is_table(v: Any) -> bool:
    return isinstance(v, dict) or (
        isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
    )
