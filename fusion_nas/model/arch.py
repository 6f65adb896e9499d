"""Architecture: the concrete choice per stage, with a JSON round trip and a stable short id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from fusion_nas.errors import ArchitectureError, allowed
from fusion_nas.model.configs import cfg_errors, nets_view
from fusion_nas.model.registry import get_op

SEARCHABLE = nets_view().SEARCHABLE  # BlockCfg fields a search may choose per operator

_ABBREV = {"global": "glob", "window": "win", "linear": "lin", "channel": "chan"}
SKIP = "skip"  # the operator of a depth-0 stage: nothing of it is built
# Fields a space may fix for a stage (then they are None here and the space supplies them);
# left out of the JSON when None, so architectures of spaces without them keep their ids.
OPTIONAL = ("mlp_ratio", "downsample", "act", "norm", "expand", "pos", "tkernel")


@dataclass(frozen=True)
class StageChoice:
    """One stage: its operator and the choices that operator reads.

    Fields an operator does not use are ``None`` (a conv stage has no heads, channel
    attention has none either), and a skipped stage (depth 0) is ``StageChoice("skip", 0, 0)``,
    so two architectures that build the same network are equal and share one id.
    ``mlp_ratio`` and ``downsample`` are ``None`` where the space fixes them.
    """

    operator: str
    width: int
    depth: int = nets_view().StageCfg.depth
    kernel: int | None = None
    heads: int | None = None
    attention: str | None = None
    mlp_ratio: float | None = None
    downsample: str | None = None
    act: str | None = None
    norm: str | None = None
    expand: float | None = None
    pos: str | None = None
    tkernel: int | None = None

    def canonical(self) -> StageChoice:
        """The same stage with every field its block ignores set to ``None``."""
        if self.depth == 0:
            return StageChoice(SKIP, 0, 0)
        get_op(self.operator)  # an unknown operator: a one-line error
        uses = nets_view().reads(self.operator, self.attention)
        ignored = {f: None for f in SEARCHABLE if f not in uses}
        ratios = {}
        for f in ("mlp_ratio", "expand"):
            ratio = getattr(self, f)
            if isinstance(ratio, int) and not isinstance(ratio, bool):
                ratios[f] = float(ratio)  # 2 and 2.0 are one ratio: one id
        return StageChoice(**{**asdict(self), **ratios, **ignored})

    def chosen(self) -> dict[str, Any]:
        """The searched fields that are set, as :class:`~fusion_nas.model.nets.BlockCfg`
        keywords."""
        return {f: getattr(self, f) for f in SEARCHABLE if getattr(self, f) is not None}

    def describe(self) -> str:
        """Short label, e.g. ``gated(k3,h2,win,mlp1,down=conv)x2@32``; ``skip`` for depth 0."""
        if self.depth == 0:
            return SKIP
        parts = []
        if self.kernel is not None:
            parts.append(f"k{self.kernel}")
        if self.tkernel is not None:
            parts.append(f"t{self.tkernel}")
        if self.heads is not None:
            parts.append(f"h{self.heads}")
        if self.attention is not None:
            parts.append(_ABBREV.get(self.attention, self.attention))
        if self.mlp_ratio is not None:
            parts.append(f"mlp{self.mlp_ratio:g}")
        if self.expand is not None:
            parts.append(f"e{self.expand:g}")
        for f in ("act", "norm", "pos"):
            if getattr(self, f) is not None:
                parts.append(f"{f}={getattr(self, f)}")
        if self.downsample is not None:
            parts.append(f"down={self.downsample}")
        depth = f"x{self.depth}" if self.depth != 1 else ""
        return f"{self.operator}({','.join(parts)}){depth}@{self.width}"


@dataclass(frozen=True)
class Architecture:
    """A network of one search space: one :class:`StageChoice` per stage (canonical form).

    ``base`` names the zoo network (:mod:`fusion_nas.model.zoo`) of a space's zoo member: its
    stages are then those of the zoo network scaled to the space, not of the space's stages.
    ``None`` for every other architecture; left out of the JSON then, so ids stay as they were.
    """

    space: str
    stages: tuple[StageChoice, ...]
    base: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(s.canonical() for s in self.stages))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: ``{"space": ..., "stages": [{...}, ...]}``."""
        stages = [
            {k: v for k, v in asdict(s).items() if v is not None or k not in OPTIONAL}
            for s in self.stages
        ]
        out: dict[str, Any] = {"space": self.space, "stages": stages}
        if self.base is not None:
            out["base"] = self.base
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the basis of :attr:`arch_id`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def arch_id(self) -> str:
        """Stable 10-hex-digit id of the architecture (same network, same id)."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:10]

    def describe(self) -> str:
        """One line, stage by stage: ``conv(k5)@16 > attention(h2,glob)@32``; a zoo member
        starts with its zoo network: ``zoo:mobilevit_xxs: ...``."""
        line = " > ".join(s.describe() for s in self.stages)
        return line if self.base is None else f"zoo:{self.base}: {line}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        """Inverse of :meth:`to_dict`; malformed data raises :class:`ArchitectureError`.

        Values are checked by the block configs (:class:`~fusion_nas.model.nets.BlockCfg`,
        :class:`~fusion_nas.model.nets.StageCfg`), whose error names the field.
        """
        if not isinstance(data, dict) or not isinstance(data.get("space"), str):
            raise ArchitectureError("architecture must be an object with a 'space' name")
        base = data.get("base")
        if base is not None and (not isinstance(base, str) or not base):
            raise ArchitectureError(f"base {base!r} must be a zoo network's name")

        stages = data.get("stages")
        if not isinstance(stages, list) or not stages:
            raise ArchitectureError("architecture must have a non-empty 'stages' list")
        names = [f.name for f in fields(StageChoice)]
        parsed = []
        for i, st in enumerate(stages):
            if not isinstance(st, dict):
                raise ArchitectureError(f"stages[{i}] must be an object")
            unknown = sorted(set(st) - set(names))
            if unknown:
                raise ArchitectureError(
                    f"stages[{i}]: unknown key {unknown[0]!r}; allowed: {allowed(sorted(names))}"
                )
            for key in ("operator", "width"):
                if key not in st:
                    raise ArchitectureError(f"stages[{i}].{key}: missing")
            choice = StageChoice(**st)
            try:
                skipped = type(choice.depth) is int and choice.depth == 0
                if not skipped:  # a skipped stage builds nothing: nothing else to check
                    view = nets_view()
                    block = view.BlockCfg(choice.operator, choice.width, **choice.chosen())
                    view.StageCfg(block, choice.depth, choice.downsample or "none")
            except cfg_errors() as exc:
                raise ArchitectureError(f"stages[{i}].{exc.field}: {exc.reason}") from None
            parsed.append(choice)
        return cls(space=data["space"], stages=tuple(parsed), base=base)

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        """Parse :meth:`to_json` output (or any equivalent JSON)."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ArchitectureError(f"architecture is not valid JSON: {exc}") from None
