"""The fusion network: block configs, operators, blocks and ``FusionNet``, importing only torch.

This file is the one home of the network. The toolkit builds every model from it, and
``fusion-nas export`` copies its source, pruned to the classes an architecture uses, and sets
``CONFIG`` to that architecture, so an exported model is this code by construction.

    input (B, C_in, *S)        S = (L,) for sequences, (H, W) for images, (T, H, W) for video
      -> stem: conv(k, stride) -> BN -> GELU    (B, W_0, *S_0)
      -> per stage: transition, depth blocks    (B, W_i, *S_i)   a depth-0 stage is skipped
      -> head: mean over S -> LayerNorm -> Linear  (B, classes)

Video maps ``(B, C, T, H, W)``: the stem and every stage entry work per frame (kernels and
strides ``(1, k, k)``, time kept); what reaches across frames is chosen per block: the
temporal extent ``tkernel`` of a conv (1: per frame, k: 3-D), the ``r2plus1d`` operator, and
the attention variants ``temporal`` (across frames at each position), ``spatial`` (within each
frame), ``divided`` (both in turn, TimeSformer) and ``global`` (joint space-time).

Every block keeps the map shape ``(B, C, *S)``. Operators are created by name from ``OPS``,
attention variants (map mixers, like operators without the residual) from ``ATTENTIONS``; a
block reads one :class:`BlockCfg`. The configs hold every default and check every value: a bad
one raises :class:`CfgError` naming the field.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FUSION_INIT = 0.1  # fusion weights start small so neither branch dominates early training
# BlockCfg fields a search may choose per operator
SEARCHABLE = (
    "kernel",
    "heads",
    "attention",
    "mlp_ratio",
    "act",
    "norm",
    "expand",
    "pos",
    "tkernel",
)
# BlockCfg fields a space fixes per stage (one value each), never searched
SETTINGS = (
    "window",
    "se",
    "key_dim",
    "attn_ratio",
    "layer_scale",
    "inner",
    "layers",
    "patch",
    "scales",
    "split",
    "down_ratio",
    "attn_heads",
)
# stage entry: keep the size, AvgPool(2), strided conv, LayerNorm + 2x2 patch conv, or the
# stage's first block downsamples itself (operators registered with downsamples=True)
DOWNSAMPLES = ("none", "pool", "conv", "patch", "block")
ACTS = ("gelu", "relu", "hardswish", "silu")
NORMS = ("bn", "ln")  # BatchNorm, or LayerNorm over the channels of a map
POSITIONS = ("learned", "none", "cpe", "bias", "fourier")  # absolute, none, conv, rel. bias, sdta
SE_REDUCTION = 4  # channel attention: hidden width C // 4 (at least 1)
# what a map of 1, 2 or 3 spatial axes is (the space's input kind)
INPUTS = {1: "sequence", 2: "image", 3: "video"}

OPS: dict[str, type[nn.Module]] = {}  # operator name -> block class
ATTENTIONS: dict[str, type[nn.Module]] = {}  # attention variant -> map mixer class
STEMS: dict[str, type[nn.Module]] = {}  # stem kind -> stem class, built as cls(net_cfg)
HEADS: dict[str, type[nn.Module]] = {}  # head kind -> head class, built as cls(net_cfg, width)


def register_op(
    name: str,
    uses: tuple[str, ...],
    downsamples: bool = False,
    check=None,
    dims: tuple[int, ...] = (1, 2),
):
    """Class decorator: operator ``name`` whose architecture choices are ``uses``.

    ``uses`` names the :class:`BlockCfg` fields a search chooses for this operator (some of
    ``SEARCHABLE``); the others keep their defaults. ``downsamples``: the operator takes a
    stage's ``downsample="block"``, its first block built as
    ``cls(cfg, size, in_width=..., stride=2)`` to halve the map and change the width itself
    (and ``in_size=``, the size of the map it gets, if the class has a ``takes_in_size``).
    ``check``: a function of a :class:`BlockCfg` raising :class:`CfgError` for fields that
    clash for this operator; a space runs it on every block it can build when it loads.
    ``dims``: the map ranks it takes (1 sequences, 2 images, 3 video; :data:`INPUTS`).
    """

    def wrap(cls):
        if name in OPS:
            raise ValueError(f"operator {name!r} is registered twice")
        unknown = [u for u in uses if u not in SEARCHABLE]
        if unknown:
            raise ValueError(f"{unknown[0]!r} cannot be chosen; allowed: {_allowed(SEARCHABLE)}")
        cls.op_name, cls.uses, cls.downsamples = name, tuple(uses), bool(downsamples)
        cls.check = staticmethod(check) if check is not None else None
        cls.dims = tuple(dims)
        OPS[name] = cls
        return cls

    return wrap


def register_stem(name: str, dims: tuple[int, ...] = (1, 2)):
    """Class decorator: stem kind ``name``, built as ``cls(cfg: NetCfg)``.

    A stem maps ``(B, C_in, *S)`` to ``(B, stem_width, *stem_size)`` (:meth:`NetCfg.stem_size`);
    ``dims``: the input ranks it takes (:data:`INPUTS`).
    """

    def wrap(cls):
        if name in STEMS:
            raise ValueError(f"stem {name!r} is registered twice")
        cls.stem_name, cls.dims = name, tuple(dims)
        STEMS[name] = cls
        return cls

    return wrap


def register_head(name: str, dims: tuple[int, ...] = (1, 2)):
    """Class decorator: head kind ``name``, built as ``cls(cfg: NetCfg, width: int)``.

    A head maps the last stage's ``(B, width, *S)`` to logits ``(B, classes)``; ``dims``: the
    map ranks it takes (:data:`INPUTS`).
    """

    def wrap(cls):
        if name in HEADS:
            raise ValueError(f"head {name!r} is registered twice")
        cls.head_name, cls.dims = name, tuple(dims)
        HEADS[name] = cls
        return cls

    return wrap


def register_attention(
    name: str,
    uses: tuple[str, ...] = ("heads", "pos"),
    positions: tuple[str, ...] = ("learned", "none", "cpe"),
    dims: tuple[int, ...] = (1, 2),
):
    """Class decorator: attention variant ``name``, built as ``cls(cfg, size)``.

    Every variant maps a ``(B, C, *S)`` map to ``(B, C, *S)`` without the residual, so the
    attention, parallel and gated blocks take any of them. ``uses`` names the searchable
    :class:`BlockCfg` fields the variant reads (``heads`` and ``pos`` for token attention, none
    for channel attention); a block ignores those its variant does not read. ``dims``: the
    map ranks it takes (:data:`INPUTS`).
    """

    def wrap(cls):
        if name in ATTENTIONS:
            raise ValueError(f"attention variant {name!r} is registered twice")
        unknown = [u for u in uses if u not in SEARCHABLE]
        if unknown:
            raise ValueError(f"{unknown[0]!r} cannot be chosen; allowed: {_allowed(SEARCHABLE)}")
        cls.variant, cls.uses, cls.positions = name, tuple(uses), tuple(positions)
        cls.dims = tuple(dims)
        ATTENTIONS[name] = cls
        return cls

    return wrap


class CfgError(ValueError):
    """A config field holds a value no network can be built with.

    ``field`` names the field (``kernel``, ``stages[2].downsample``), ``reason`` says what is
    wrong and what is allowed; ``str()`` is ``"field: reason"``.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def _allowed(values) -> str:
    return ", ".join(repr(v) for v in values)


def reads(operator: str, attention: str | None = None) -> tuple[str, ...]:
    """The ``SEARCHABLE`` fields a block of ``operator`` with variant ``attention`` reads.

    An operator reads what it registered; ``heads`` and ``pos`` only when its attention variant
    reads them.
    """
    uses = OPS[operator].uses
    if "attention" in uses and attention in ATTENTIONS:
        skipped = {"heads", "pos"} - set(ATTENTIONS[attention].uses)
        uses = tuple(f for f in uses if f not in skipped)
    return uses


def takes(cfg: "BlockCfg", size: tuple[int, ...]) -> None:
    """Raise :class:`CfgError` if a block of ``cfg`` cannot run on maps of ``size`` (its rank:
    :data:`INPUTS`): its operator, its attention variant (where it reads one), a temporal
    kernel on maps without frames or longer than the clip's ``T`` frames."""
    dim = len(size)
    kind = INPUTS.get(dim, f"{dim}-D")
    op = OPS[cfg.operator]
    if dim not in op.dims:
        able = [name for name, c in OPS.items() if dim in c.dims]
        raise CfgError(
            "operator",
            f"{cfg.operator!r} does not take {kind} input; allowed for {kind}: {_allowed(able)}",
        )
    if "attention" in op.uses and dim not in ATTENTIONS[cfg.attention].dims:
        able = [name for name, c in ATTENTIONS.items() if dim in c.dims]
        raise CfgError(
            "attention",
            f"{cfg.attention!r} does not take {kind} input; allowed for {kind}: {_allowed(able)}",
        )
    if dim != 3 and cfg.tkernel != 1 and "tkernel" in op.uses:
        raise CfgError(
            "tkernel",
            f"{cfg.tkernel} reaches across frames, but {kind} input has none; allowed: 1 "
            "(video input, kind 'video', has frames)",
        )
    if dim == 3 and "tkernel" in op.uses and cfg.tkernel > size[0]:
        T = size[0]
        raise CfgError(
            "tkernel",
            f"a temporal kernel of {cfg.tkernel} frames is longer than the clip's {T} frames "
            f"(T); allowed: odd values up to {T - 1 + T % 2}, or longer clips",
        )


def spatial(dim: int, n: int, time: int = 1) -> int | tuple[int, int, int]:
    """A kernel, stride or padding ``n`` over the spatial axes of a ``dim``-axis map; on video
    (``dim = 3``, maps ``(T, H, W)``) ``(time, n, n)``: per frame unless ``time`` says not."""
    return n if dim < 3 else (time, n, n)


def _whole(value, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CfgError(field, f"{value!r} is not an integer")
    if value < minimum:
        raise CfgError(field, f"{value!r} is too small; allowed: integers >= {minimum}")
    return value


def _word(value, field: str, words) -> str:
    if not isinstance(value, str) or value not in words:
        raise CfgError(field, f"{value!r} is not allowed; allowed: {_allowed(words)}")
    return value


def _number(value, field: str, low: float, high: float = math.inf, words: str = "") -> float:
    """A real number in ``[low, high)``; ``words`` says what is allowed when it is not."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value < high
    if not ok:
        raise CfgError(field, f"{value!r} is not allowed; allowed: {words}")
    return value


def _divisors(n: int, most: int = 16) -> list[int]:
    """The ``most`` smallest divisors of ``n`` (found up to sqrt(n), so huge n cost nothing)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})[:most]


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class BlockCfg:
    """One block: its operator, width and the settings operators read (defaults live here).

    ``kernel``: odd conv kernel; ``heads``: attention heads, a divisor of ``width``;
    ``attention``: variant (``ATTENTIONS``); ``window``: tokens per window and axis;
    ``mlp_ratio``: hidden width of the MLP of attention-type blocks, times ``width`` (0: no MLP);
    ``act``: activation (``ACTS``); ``norm``: conv-branch norm (``NORMS``); ``expand``: hidden
    width of inverted-residual (MBConv-type) blocks, times ``width``; ``pos``: positional
    encoding of attention (``POSITIONS``). Settings a space fixes per stage (``SETTINGS``):
    ``se``: squeeze-excitation ratio (0: none); ``key_dim``: query/key width per head (0:
    ``width // heads``); ``attn_ratio``: value width per head, times ``key_dim``;
    ``layer_scale``: initial per-channel residual scale (0: none); ``inner``: width of an inner
    transformer (0: ``width``); ``layers``: transformer layers inside one block; ``patch``:
    patch side of unfold/fold blocks; ``scales``: channel groups of split blocks; ``split``:
    share of channels the conv branch of a channel-split block takes; ``down_ratio``: value
    width per head, times ``key_dim``, of a downsampling attention block (LeViT: 4);
    ``attn_heads``: heads of attention whose heads are ``key_dim`` wide, any count, where
    ``heads`` must divide ``width`` (LeViT-128S: 6 heads at width 256; 0: ``heads``).
    ``tkernel`` (searchable, video only): frames a conv kernel spans, odd (1: each frame on
    its own, a 2-D conv per frame; ``k``: a ``(k, kernel, kernel)`` 3-D conv).
    A bad value raises :class:`CfgError` naming the field.
    """

    operator: str
    width: int
    kernel: int = 3
    heads: int = 1
    attention: str = "global"
    window: int = 4
    mlp_ratio: float = 2.0
    act: str = "gelu"
    norm: str = "bn"
    expand: float = 4.0
    pos: str = "learned"
    se: float = 0.0
    key_dim: int = 0
    attn_ratio: float = 1.0
    layer_scale: float = 0.0
    inner: int = 0
    layers: int = 1
    patch: int = 2
    scales: int = 1
    split: float = 0.5
    down_ratio: float = 4.0
    attn_heads: int = 0
    tkernel: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.operator, str) or self.operator not in OPS:
            raise CfgError(
                "operator", f"{self.operator!r} is not an operator; allowed: {_allowed(OPS)}"
            )
        _whole(self.width, "width")
        if _whole(self.kernel, "kernel") % 2 == 0:
            raise CfgError(
                "kernel", f"{self.kernel} is even; allowed: odd integers (1, 3, 5, 7...)"
            )
        if self.width % _whole(self.heads, "heads"):
            raise CfgError(
                "heads",
                f"{self.heads} heads do not divide width {self.width}; "
                f"allowed: {_allowed(_divisors(self.width))}",
            )
        if not isinstance(self.attention, str) or self.attention not in ATTENTIONS:
            raise CfgError(
                "attention",
                f"{self.attention!r} is not an attention variant; allowed: {_allowed(ATTENTIONS)}",
            )
        _whole(self.window, "window")
        r = self.mlp_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < math.inf:
            raise CfgError(
                "mlp_ratio", f"{r!r} is not allowed; allowed: 0 (no MLP) or positive numbers"
            )
        _word(self.act, "act", ACTS)
        _word(self.norm, "norm", NORMS)
        _number(self.expand, "expand", 1e-9, words="positive numbers")
        _word(self.pos, "pos", POSITIONS)
        _number(self.se, "se", 0.0, 1.0 + 1e-9, "0 (none) or numbers in (0, 1]")
        _whole(self.key_dim, "key_dim", minimum=0)
        _number(self.attn_ratio, "attn_ratio", 1e-9, words="positive numbers")
        _number(self.layer_scale, "layer_scale", 0.0, words="0 (none) or positive numbers")
        _whole(self.inner, "inner", minimum=0)
        _whole(self.layers, "layers")
        _whole(self.patch, "patch")
        _whole(self.scales, "scales")
        _number(self.split, "split", 1e-9, 1.0, "numbers in (0, 1)")
        if self.operator == "mobilevit" and (self.inner or self.width) % self.heads:
            d = self.inner or self.width  # the transformer runs at the inner width
            raise CfgError(
                "heads",
                f"{self.heads} heads do not divide inner width {d}; "
                f"allowed: {_allowed(_divisors(d))}",
            )
        if (
            self.operator == "meta3d"
            and self.attn_ratio * (self.key_dim or self.width // self.heads) < 1
        ):
            raise CfgError(
                "attn_ratio",
                f"{self.attn_ratio!r} gives value width < 1 per head; "
                "allowed: attn_ratio * key_dim >= 1",
            )
        _number(self.down_ratio, "down_ratio", 1e-9, words="positive numbers")
        _whole(self.attn_heads, "attn_heads", minimum=0)
        if _whole(self.tkernel, "tkernel") % 2 == 0:
            raise CfgError(
                "tkernel", f"{self.tkernel} is even; allowed: odd integers (1, 3, 5, 7...)"
            )
        _sdta_checks(self)
        if "attention" in OPS[self.operator].uses and "pos" in reads(self.operator, self.attention):
            able = ATTENTIONS[self.attention].positions  # the encodings the variant takes
            if self.pos not in able:
                raise CfgError(
                    "pos",
                    f"{self.pos!r} is not supported by attention variant {self.attention!r}; "
                    f"allowed: {_allowed(able)}",
                )


@dataclass(frozen=True)
class StageCfg:
    """One stage: ``depth`` blocks of ``block`` (0: the stage is skipped, width carried over).

    ``downsample`` (``DOWNSAMPLES``) halves the map on entry: ``"pool"`` by AvgPool(2),
    ``"conv"`` by a stride-2 conv that also changes the width, ``"patch"`` by LayerNorm and a
    2x2 stride-2 conv, ``"block"`` by the stage's first block itself (an operator registered
    with ``downsamples=True``); ``True``/``False`` mean ``"pool"``/``"none"``.
    """

    block: BlockCfg
    depth: int = 1
    downsample: str = "none"

    def __post_init__(self) -> None:
        _whole(self.depth, "depth", minimum=0)
        if isinstance(self.downsample, bool):  # the older spelling
            object.__setattr__(self, "downsample", "pool" if self.downsample else "none")
        if not isinstance(self.downsample, str) or self.downsample not in DOWNSAMPLES:
            words = f"{_allowed(DOWNSAMPLES)}, True, False"
            raise CfgError("downsample", f"{self.downsample!r} is not allowed; allowed: {words}")
        if self.downsample == "block" and not OPS[self.block.operator].downsamples:
            able = _allowed([name for name, cls in OPS.items() if cls.downsamples]) or "none"
            raise CfgError(
                "downsample",
                f"'block' needs an operator that downsamples itself, not "
                f"{self.block.operator!r}; allowed operators: {able}",
            )


def entry_size(size: tuple[int, ...], downsample: str) -> tuple[int, ...]:
    """Spatial size inside a stage entered at ``size`` with ``downsample``: pooling and the
    2x2 patch conv round down, the stride-2 conv (padding 1) and a downsampling block round up.
    Video ``(T, H, W)`` keeps its frames: only ``H`` and ``W`` shrink."""
    time, size = (size[:1], size[1:]) if len(size) == 3 else ((), size)
    if downsample in ("pool", "patch"):
        return (*time, *(n // 2 for n in size))
    if downsample in ("conv", "block"):
        return (*time, *((n + 1) // 2 for n in size))
    return (*time, *size)


@dataclass(frozen=True)
class NetCfg:
    """A whole network: input, stem, stages, head."""

    in_channels: int
    size: tuple[int, ...]  # (L,), (H, W) or (T, H, W)
    classes: int
    stem_width: int
    stages: tuple[StageCfg, ...]
    stem_kernel: int = 3
    stem_stride: int = 1
    stem: str = "conv"  # stem kind (STEMS)
    act: str = "gelu"  # activation of the stem and the head
    head: str = "ln"  # head kind (HEADS)
    head_width: int = 0  # hidden or feature width of the head (0: none)
    distill: bool = False  # a second classifier, averaged with the first (distilled heads)

    def __post_init__(self) -> None:
        if not isinstance(self.size, tuple) or len(self.size) not in (1, 2, 3):
            raise CfgError(
                "size", f"{self.size!r} is not allowed; allowed: (L,), (H, W) or (T, H, W)"
            )
        for n in self.size:
            _whole(n, "size")
        _whole(self.in_channels, "in_channels")
        _whole(self.classes, "classes", minimum=2)
        _whole(self.stem_width, "stem_width")
        _word(self.stem, "stem", STEMS)
        if _whole(self.stem_kernel, "stem_kernel") % 2 == 0 and self.stem != "patch":
            raise CfgError(
                "stem_kernel", f"{self.stem_kernel} is even; allowed: odd integers (1, 3, 5, 7...)"
            )
        _whole(self.stem_stride, "stem_stride")
        if self.stem == "patch" and self.stem_kernel != self.stem_stride:
            raise CfgError(
                "stem_kernel",
                f"a patch stem's kernel {self.stem_kernel} must equal its stride "
                f"{self.stem_stride}; allowed: {self.stem_stride}",
            )
        _word(self.act, "act", ACTS)
        _word(self.head, "head", HEADS)
        _whole(self.head_width, "head_width", minimum=0)
        if not isinstance(self.distill, bool):
            raise CfgError("distill", f"{self.distill!r} is not allowed; allowed: true, false")
        if not self.stages:
            raise CfgError("stages", "a network needs at least one stage")
        self._check_input()
        downsamples = 0
        for i, (st, n) in enumerate(zip(self.stages, self.stage_sizes())):
            downsamples += st.depth > 0 and st.downsample != "none"
            if min(n) < 1:
                raise CfgError(
                    f"stages[{i}].downsample",
                    f"input {self.size} is too small for {downsamples} downsampling stages",
                )
        if self.stem == "efficientformer" and (
            (self.stem_kernel, self.stem_stride) != (3, 4) or self.stem_width < 2
        ):
            raise CfgError(
                "stem_stride",
                f"an efficientformer stem (two 3x3 stride-2 convs) has kernel 3, stride 4 and "
                f"width >= 2, not kernel {self.stem_kernel}, stride {self.stem_stride}, "
                f"width {self.stem_width}; allowed: kernel = 3, stride = 4",
            )

    def _check_input(self) -> None:
        """Every part takes maps of this input's rank (:data:`INPUTS`); temporal kernels fit
        the clip's frames."""
        dim = len(self.size)
        kind = INPUTS[dim]
        for field, name, table in (("stem", self.stem, STEMS), ("head", self.head, HEADS)):
            if dim not in table[name].dims:
                able = [n for n, c in table.items() if dim in c.dims]
                raise CfgError(
                    field,
                    f"{name!r} does not take {kind} input; allowed for {kind}: {_allowed(able)}",
                )
        for i, st in enumerate(self.stages):
            if st.depth == 0:
                continue
            try:
                takes(st.block, self.size)
            except CfgError as exc:
                raise CfgError(f"stages[{i}].{exc.field}", exc.reason) from None

    def stem_size(self) -> tuple[int, ...]:
        """Spatial size after the stem: a patch stem cuts ``n // stride`` patches; the others
        pad ``k // 2`` and stride (for 3x3 stride-2 convs repeated, the same ceil-halving).
        A video stem works per frame: ``T`` is kept."""
        k, s = self.stem_kernel, self.stem_stride
        time, size = (self.size[:1], self.size[1:]) if len(self.size) == 3 else ((), self.size)
        if self.stem == "patch":
            return (*time, *(n // s for n in size))
        return (*time, *((n + 2 * (k // 2) - k) // s + 1 for n in size))

    def stage_sizes(self) -> list[tuple[int, ...]]:
        """Spatial size inside each stage: the stem's output, halved per downsample
        (:func:`entry_size`); a skipped stage keeps it."""
        size, out = self.stem_size(), []
        for st in self.stages:
            if st.depth:
                size = entry_size(size, st.downsample)
            out.append(size)
        return out


# --------------------------------------------------------------------------- shared pieces


def conv_nd(dim: int) -> type[nn.Module]:
    """``nn.Conv1d``, ``nn.Conv2d`` or ``nn.Conv3d``."""
    return (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dim - 1]


def batchnorm_nd(dim: int) -> type[nn.Module]:
    """``nn.BatchNorm1d``, ``nn.BatchNorm2d`` or ``nn.BatchNorm3d``."""
    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[dim - 1]


def avgpool_nd(dim: int) -> type[nn.Module]:
    """``nn.AvgPool1d``, ``nn.AvgPool2d`` or ``nn.AvgPool3d``."""
    return (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[dim - 1]


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, N, C) with N = prod(S)."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(t: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(B, N, C) -> (B, C, *size)."""
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *size)


def channel_view(p: torch.Tensor, dim: int) -> torch.Tensor:
    """Per-channel vector (C,) -> (1, C, 1) or (1, C, 1, 1) to scale a map."""
    return p.view(1, -1, *([1] * dim))


def make_act(name: str) -> nn.Module:
    """The activation module of ``name`` (``ACTS``)."""
    return {"gelu": nn.GELU, "relu": nn.ReLU, "hardswish": nn.Hardswish, "silu": nn.SiLU}[name]()


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, *S) map (timm's ``LayerNorm2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


def make_norm(norm: str, dim: int, channels: int, eps: float = 1e-6) -> nn.Module:
    """The norm of ``norm`` (``NORMS``) for (B, C, *S) maps: BatchNorm, or LayerNorm over C."""
    if norm == "ln":
        return ChannelNorm(channels, eps=eps)
    return batchnorm_nd(dim)(channels)


class Mlp(nn.Module):
    """Pre-norm token MLP, residual left to the caller: LN -> Linear -> GELU -> Linear."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        hidden = max(1, round(channels * ratio))
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)
        for fc in (self.fc1, self.fc2):
            nn.init.trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        t = to_tokens(x)  # (B, N, C)
        t = self.fc2(self.act(self.fc1(self.norm(t))))
        return from_tokens(t, tuple(x.shape[2:]))


class ConvMixer(nn.Module):
    """Same-padding conv of odd kernel over C channels -> norm -> act (Kaiming fan-out init).

    ``norm`` (``NORMS``) and ``act`` (``ACTS``) default to BatchNorm and GELU. On video the
    kernel is ``(tkernel, kernel, kernel)``: per frame at ``tkernel = 1``, else a 3-D conv.
    """

    def __init__(
        self,
        dim: int,
        channels: int,
        kernel: int,
        act: str = "gelu",
        norm: str = "bn",
        tkernel: int = 1,
    ) -> None:
        super().__init__()
        k, p = spatial(dim, kernel, tkernel), spatial(dim, kernel // 2, tkernel // 2)
        self.conv = conv_nd(dim)(channels, channels, k, padding=p, bias=False)
        self.norm = make_norm(norm, dim, channels)
        self.act = make_act(act)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        return self.act(self.norm(self.conv(x)))


# --------------------------------------------------------------------------- attention


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B', N, C) -> (B', heads, N, C // heads)."""
    Bp, N, C = t.shape
    return t.reshape(Bp, N, heads, C // heads).transpose(1, 2)


class AttentionMixer(nn.Module):
    """Token attention on a (B, C, *S) map: position embedding + LayerNorm + qkv projection,
    the variant's :meth:`attend` over the tokens, then the output projection (no residual).

    Xavier initialisation for the query/key/value and output projections.
    """

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        C, self.size, self.heads = cfg.width, tuple(size), cfg.heads
        if cfg.pos not in self.positions:
            raise CfgError(
                "pos",
                f"{cfg.pos!r} is not supported by attention variant {cfg.attention!r}; "
                f"allowed: {_allowed(self.positions)}",
            )
        self.pos, self.cpe = None, None
        if cfg.pos == "learned":  # absolute embedding, one vector per position
            self.pos = nn.Parameter(torch.zeros(1, C, *size))
        elif cfg.pos == "cpe":  # conditional encoding: x + depthwise conv(x), any map size
            dim = len(size)
            self.cpe = conv_nd(dim)(C, C, 3, padding=1, groups=C)
        self.norm = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        if self.pos is not None:
            nn.init.trunc_normal_(self.pos, std=0.02)
        for chunk in self.qkv.weight.data.chunk(3, dim=0):  # query, key, value: (C, C) each
            nn.init.xavier_uniform_(chunk)
        nn.init.zeros_(self.qkv.bias)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    positions = ("learned", "none", "cpe")  # the pos encodings this variant takes

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, N, 3C) -> (B, N, C): the variant's token mixing."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        if self.pos is not None:
            x = x + self.pos
        elif self.cpe is not None:
            x = x + self.cpe(x)
        t = to_tokens(x)  # (B, N, C)
        o = self.attend(self.qkv(self.norm(t)))  # (B, N, 3C) -> (B, N, C)
        return from_tokens(self.proj(o), self.size)


@register_attention("global", positions=POSITIONS, dims=(1, 2, 3))
class GlobalAttention(AttentionMixer):
    """Every token attends to every token: cost quadratic in tokens. ``pos="bias"``: a
    relative position bias over the whole map (:class:`RelPosBias`, CoAtNet)."""

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__(cfg, size)
        self.rel = RelPosBias(cfg.heads, self.size) if cfg.pos == "bias" else None

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, N, 3C) -> (B, N, C)."""
        q, k, v = (split_heads(t, self.heads) for t in qkv.chunk(3, dim=-1))  # (B, h, N, hd)
        bias = None if self.rel is None else self.rel.matrix()  # (h, N, N) added to the logits
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, h, N, hd)
        return o.transpose(1, 2).flatten(2)


def window_shape(size: tuple[int, ...], window: int) -> tuple[int, ...]:
    """Window extent per axis: ``window``, or the whole axis when the axis is shorter."""
    return tuple(min(window, s) for s in size)


def padded_size(size: tuple[int, ...], window: int) -> tuple[int, ...]:
    """Axis lengths rounded up to a multiple of the window extent."""
    return tuple(math.ceil(s / w) * w for s, w in zip(size, window_shape(size, window)))


def partition(x: torch.Tensor, win: tuple[int, ...]) -> torch.Tensor:
    """(B, *P, D) with P divisible by win -> (B * nW, prod(win), D), windows in row-major
    order of their place on the map, tokens in row-major order inside a window."""
    B, D, n = x.shape[0], x.shape[-1], len(win)
    split = [m for p, w in zip(x.shape[1:-1], win) for m in (p // w, w)]
    x = x.reshape(B, *split, D)  # (B, n1, w1, n2, w2, ..., D)
    order = [*range(1, 2 * n, 2), *range(2, 2 * n + 1, 2)]  # (n1, n2, ..., w1, w2, ...)
    return x.permute(0, *order, 2 * n + 1).reshape(-1, math.prod(win), D)


def merge(x: torch.Tensor, win: tuple[int, ...], padded: tuple[int, ...], B: int) -> torch.Tensor:
    """Inverse of :func:`partition`: (B * nW, prod(win), D) -> (B, *padded, D)."""
    D, n = x.shape[-1], len(win)
    x = x.reshape(B, *(p // w for p, w in zip(padded, win)), *win, D)  # (B, n.., w.., D)
    order = [j for i in range(n) for j in (1 + i, 1 + n + i)]  # (n1, w1, n2, w2, ...)
    return x.permute(0, *order, 2 * n + 1).reshape(B, *padded, D)


@register_attention("window", positions=POSITIONS, dims=(1, 2, 3))
class WindowAttention(AttentionMixer):
    """Swin-style attention inside non-overlapping windows of ``window`` tokens per axis.

    The map is zero-padded up to a multiple of the window; padded keys are masked.
    ``pos="bias"``: a relative position bias inside the window (:class:`RelPosBias`, MaxViT).
    """

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__(cfg, size)
        self.win = window_shape(self.size, cfg.window)
        self.padded = padded_size(self.size, cfg.window)
        self.rel = RelPosBias(cfg.heads, self.win) if cfg.pos == "bias" else None

    def arrange(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *padded, D) -> (B, *padded, D): the token order windows are cut from (here
        unchanged; grid attention interleaves it)."""
        return x

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`arrange`: (B, *padded, D) -> (B, *padded, D)."""
        return x

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, N, 3C) -> (B, N, C)."""
        B, N, C3 = qkv.shape
        grid = qkv.reshape(B, *self.size, C3)  # (B, *S, 3C)
        pad = [p - s for s, p in zip(self.size, self.padded)]
        mask = None
        if any(pad):
            # F.pad takes (last axis first) pairs; channels last, so skip it with (0, 0).
            spec = [0, 0]
            for extra in reversed(pad):
                spec += [0, extra]
            grid = F.pad(grid, spec)
            valid = torch.zeros(1, *self.padded, 1, dtype=torch.bool, device=qkv.device)
            valid[(slice(None), *(slice(0, s) for s in self.size))] = True
            valid = partition(self.arrange(valid), self.win).squeeze(-1)  # (nW, T)
            # (B * nW, 1, 1, T): True where the key is a real token; broadcast over heads, queries.
            mask = valid[:, None, None, :].repeat(B, 1, 1, 1)
        if self.rel is not None:  # (1, h, T, T) float bias; masked keys get -inf
            bias = self.rel.matrix()[None]
            mask = bias if mask is None else torch.where(mask, bias, float("-inf"))
        windows = partition(self.arrange(grid), self.win)  # (B * nW, T, 3C), T = prod(win)
        q, k, v = (split_heads(t, self.heads) for t in windows.chunk(3, dim=-1))  # (B*nW,h,T,hd)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B * nW, h, T, hd)
        o = merge(o.transpose(1, 2).flatten(2), self.win, self.padded, B)  # (B, *padded, C)
        o = self.restore(o)
        o = o[(slice(None), *(slice(0, s) for s in self.size))]  # crop the padding
        return o.reshape(B, N, C3 // 3)


@register_attention("linear", dims=(1, 2, 3))
class LinearAttention(AttentionMixer):
    """Kernelised ``phi(Q) (phi(K)^T V)`` with ``phi = elu + 1``: cost linear in tokens."""

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, N, 3C) -> (B, N, C)."""
        q, k, v = (split_heads(t, self.heads) for t in qkv.chunk(3, dim=-1))  # (B, h, N, hd)
        q, k = F.elu(q) + 1.0, F.elu(k) + 1.0  # positive features phi(.)
        kv = torch.matmul(k.transpose(-2, -1), v)  # (B, h, hd, hd)
        num = torch.matmul(q, kv)  # (B, h, N, hd)
        den = torch.matmul(q, k.sum(dim=2, keepdim=True).transpose(-2, -1))  # (B, h, N, 1)
        return (num / (den + 1e-6)).transpose(1, 2).flatten(2)


@register_attention("channel", uses=(), dims=(1, 2, 3))
class ChannelAttention(nn.Module):
    """Squeeze-excitation (the CAN paper's channel attention): ``x * sigmoid(fc2(relu(fc1(
    mean over S of x))))``, one weight per sample and channel; no heads, no tokens.

    Hidden width ``C // SE_REDUCTION`` (at least 1). A squeeze-excitation output is the
    rescaled map itself, so the block adds it to ``x`` as any attention branch.
    """

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        C = cfg.width
        hidden = max(1, C // SE_REDUCTION)
        self.fc1 = nn.Linear(C, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        pooled = x.mean(dim=tuple(range(2, x.dim())))  # (B, C): squeeze the spatial axes
        w = torch.sigmoid(self.fc2(self.act(self.fc1(pooled))))  # (B, C): excitation
        return x * w.view(*w.shape, *([1] * (x.dim() - 2)))


# --------------------------------------------------------------------------- operators


@register_op("conv", uses=("kernel", "act", "norm", "tkernel"), dims=(1, 2, 3))
class ConvBlock(nn.Module):
    """``x + act(norm(conv_k(x)))``: local mixing only, receptive field ``k`` per block (on
    video ``tkernel`` frames: 1 a 2-D conv per frame, more a 3-D conv)."""

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        self.mixer = ConvMixer(len(size), cfg.width, cfg.kernel, cfg.act, cfg.norm, cfg.tkernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        return x + self.mixer(x)


@register_op("attention", uses=("heads", "attention", "mlp_ratio", "pos"), dims=(1, 2, 3))
class AttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(x)``, then ``x + mlp(x)`` (no MLP at ratio 0)."""

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        self.attn = ATTENTIONS[cfg.attention](cfg, size)
        self.mlp = Mlp(cfg.width, cfg.mlp_ratio) if cfg.mlp_ratio else None  # 0: lean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        x = x + self.attn(x)
        return x if self.mlp is None else x + self.mlp(x)


@register_op(
    "parallel",
    uses=("kernel", "heads", "attention", "mlp_ratio", "act", "norm", "pos", "tkernel"),
    dims=(1, 2, 3),
)
class ParallelBlock(nn.Module):
    """The CAN block done right: ``x + a * conv(x) + b * attn(x)``, then ``x + mlp(x)``.

    ``a`` and ``b`` are learned per-channel fusion weights starting at ``FUSION_INIT``.
    """

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        self.dim = len(size)
        self.conv = ConvMixer(self.dim, cfg.width, cfg.kernel, cfg.act, cfg.norm, cfg.tkernel)
        self.attn = ATTENTIONS[cfg.attention](cfg, size)
        self.conv_weight = nn.Parameter(torch.full((cfg.width,), FUSION_INIT))
        self.attn_weight = nn.Parameter(torch.full((cfg.width,), FUSION_INIT))
        self.mlp = Mlp(cfg.width, cfg.mlp_ratio) if cfg.mlp_ratio else None  # 0: lean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        a = channel_view(self.conv_weight, self.dim)
        b = channel_view(self.attn_weight, self.dim)
        x = x + a * self.conv(x) + b * self.attn(x)
        return x if self.mlp is None else x + self.mlp(x)


@register_op(
    "gated",
    uses=("kernel", "heads", "attention", "mlp_ratio", "act", "norm", "pos", "tkernel"),
    dims=(1, 2, 3),
)
class GatedBlock(nn.Module):
    """The DynamicGate done right: ``x + s * (g * conv(x) + (1 - g) * attn(x))``, then the MLP.

    ``g = sigmoid(Linear(C, C)(mean over the spatial axes of x))``: one gate per sample and
    channel, starting near 0.5; ``s`` is a learned per-channel scale starting at ``FUSION_INIT``.
    """

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        self.dim = len(size)
        self.conv = ConvMixer(self.dim, cfg.width, cfg.kernel, cfg.act, cfg.norm, cfg.tkernel)
        self.attn = ATTENTIONS[cfg.attention](cfg, size)
        self.gate = nn.Linear(cfg.width, cfg.width)
        self.scale = nn.Parameter(torch.full((cfg.width,), FUSION_INIT))
        self.mlp = Mlp(cfg.width, cfg.mlp_ratio) if cfg.mlp_ratio else None  # 0: lean
        nn.init.normal_(self.gate.weight, std=0.02)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        pooled = x.mean(dim=tuple(range(2, x.dim())))  # (B, C): spatial axes only
        g = torch.sigmoid(self.gate(pooled)).view(*pooled.shape, *([1] * self.dim))  # (B, C, 1..)
        fused = g * self.conv(x) + (1.0 - g) * self.attn(x)
        x = x + channel_view(self.scale, self.dim) * fused
        return x if self.mlp is None else x + self.mlp(x)


# --------------------------------------------------------------------------- stems and heads


@register_stem("conv", dims=(1, 2, 3))
class ConvStem(nn.Sequential):
    """conv(kernel, stride, same padding) -> BN -> act: (B, C_in, *S) -> (B, W_0, *S_0); on
    video per frame (kernel ``(1, k, k)``, frames kept)."""

    def __init__(self, cfg: NetCfg) -> None:
        dim, k = len(cfg.size), cfg.stem_kernel
        conv = conv_nd(dim)(
            cfg.in_channels,
            cfg.stem_width,
            spatial(dim, k),
            stride=spatial(dim, cfg.stem_stride),
            padding=spatial(dim, k // 2, 0),
        )
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        super().__init__(conv, batchnorm_nd(dim)(cfg.stem_width), make_act(cfg.act))


@register_stem("patch", dims=(1, 2, 3))
class PatchStem(nn.Sequential):
    """Non-overlapping patches: conv(kernel = stride) -> channel LayerNorm (ConvNeXt, EdgeNeXt):
    (B, C_in, *S) -> (B, W_0, *(S // stride)); on video per frame (frames kept)."""

    def __init__(self, cfg: NetCfg) -> None:
        dim, s = len(cfg.size), cfg.stem_stride
        conv = conv_nd(dim)(
            cfg.in_channels, cfg.stem_width, spatial(dim, s), stride=spatial(dim, s)
        )
        super().__init__(conv, ChannelNorm(cfg.stem_width, eps=1e-6))


@register_head("ln", dims=(1, 2, 3))
class LayerNormHead(nn.Module):
    """mean over S -> LayerNorm -> Linear (``fc``); ``distill``: a second Linear (``fc_dist``),
    the two averaged, as timm's distilled heads."""

    def __init__(self, cfg: NetCfg, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, cfg.classes)
        self.fc_dist = nn.Linear(width, cfg.classes) if cfg.distill else None
        for fc in (self.fc, self.fc_dist):
            if fc is not None:
                nn.init.trunc_normal_(fc.weight, std=0.02)
                nn.init.zeros_(fc.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W, *S) -> (B, W): pooled, then normalised."""
        return self.norm(x.mean(dim=tuple(range(2, x.dim()))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W, *S) -> (B, classes)."""
        x = self.features(x)  # (B, W)
        if self.fc_dist is None:
            return self.fc(x)
        return (self.fc(x) + self.fc_dist(x)) / 2


# --------------------------------------------------------------------------- maxxvit
# CoAtNet and MaxViT (timm maxxvit.py): MBConv with squeeze-excitation, transformer blocks with
# relative position bias that may downsample, grid attention, the MaxViT block, their stem and
# the pool -> LN -> Linear -> tanh -> Linear head.

MBCONV_DIVISOR = 8  # MBConv hidden width: width * expand rounded to a multiple of 8 (timm)


def round_width(value: float, divisor: int = MBCONV_DIVISOR) -> int:
    """timm's ``make_divisible``: ``value`` to the nearest multiple of ``divisor`` (at least
    ``divisor``), one step up when rounding down would lose more than 10%."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def half_pool(dim: int) -> nn.Module:
    """AvgPool(2) rounding up, ``(n + 1) // 2`` per axis like a stride-2 conv with padding;
    an edge window past the map averages the cells inside it."""
    return avgpool_nd(dim)(2, ceil_mode=True)


class Downsample(nn.Module):
    """timm's ``Downsample2d`` shortcut: AvgPool(2), then conv1x1 (with bias) to the new width
    if the width changes."""

    def __init__(self, dim: int, in_width: int, width: int) -> None:
        super().__init__()
        self.pool = half_pool(dim)
        self.expand = conv_nd(dim)(in_width, width, 1) if in_width != width else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S) -> (B, C, *((S + 1) // 2))."""
        return self.expand(self.pool(x))


class SqueezeExcite(nn.Module):
    """``x * sigmoid(fc2(silu(fc1(mean over S of x))))`` with a ``hidden``-wide bottleneck
    (timm ``SEModule`` with SiLU, as MaxViT and CoAtNet use it)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        pooled = x.mean(dim=tuple(range(2, x.dim())))  # (B, C)
        w = torch.sigmoid(self.fc2(self.act(self.fc1(pooled))))  # (B, C)
        return x * w.view(*w.shape, *([1] * (x.dim() - 2)))


class RelPosBias(nn.Module):
    """Relative position bias (Swin, CoAtNet, MaxViT): one learned logit per head and relative
    offset inside a window of extent ``win``, added to the attention logits of query ``q`` and
    key ``k``: ``table[h, k - q]``, ``prod(2 * w - 1)`` offsets per head (timm ``RelPosBias``)."""

    def __init__(self, heads: int, win: tuple[int, ...]) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(heads, math.prod(2 * w - 1 for w in win)))
        nn.init.trunc_normal_(self.table, std=0.02)
        axes = torch.meshgrid(*(torch.arange(w) for w in win), indexing="ij")
        coords = torch.stack(axes).flatten(1)  # (dim, T): each token's position in the window
        index = torch.zeros((), dtype=torch.long)
        for pos, w in zip(coords, win):  # row-major over the axes' offsets k - q + w - 1
            index = index * (2 * w - 1) + (pos[None, :] - pos[:, None] + w - 1)  # (T, T)
        self.register_buffer("index", index, persistent=False)  # rebuilt, not saved

    def matrix(self) -> torch.Tensor:
        """The bias of every query/key pair: (heads, T, T)."""
        return self.table[:, self.index]


def interleave(x: torch.Tensor, groups: tuple[int, ...]) -> torch.Tensor:
    """(B, *P, D) -> (B, *P, D), each axis of length ``P = g * m`` reordered from ``(g, m)`` to
    ``(m, g)``: ``g`` consecutive tokens of the result lie ``m`` apart in ``x``."""
    return _swap_axes(x, [(g, p // g) for g, p in zip(groups, x.shape[1:-1])])


def deinterleave(x: torch.Tensor, groups: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`interleave`: (B, *P, D) -> (B, *P, D)."""
    return _swap_axes(x, [(p // g, g) for g, p in zip(groups, x.shape[1:-1])])


def _swap_axes(x: torch.Tensor, splits: list[tuple[int, int]]) -> torch.Tensor:
    """Split each spatial axis of (B, *P, D) into ``(a, b)``, swap to ``(b, a)``, flatten."""
    B, P, D = x.shape[0], x.shape[1:-1], x.shape[-1]
    x = x.reshape(B, *(n for ab in splits for n in ab), D)  # (B, a1, b1, [a2, b2,] D)
    order = [i for axis in range(len(splits)) for i in (2 + 2 * axis, 1 + 2 * axis)]
    return x.permute(0, *order, x.dim() - 1).reshape(B, *P, D)


@register_attention("grid", positions=POSITIONS, dims=(1, 2, 3))
class GridAttention(WindowAttention):
    """MaxViT's grid attention: dilated windows, each of ``window`` tokens per axis spread
    evenly over the map (``m = padded / window`` apart), so every window spans the whole map.

    The map is zero-padded like window attention (padded keys masked), then each axis is
    interleaved so that the windows of :class:`WindowAttention` are cut from the grid;
    ``pos="bias"`` measures offsets in grid steps (timm ``grid_partition``).
    """

    def arrange(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *padded, D) -> (B, *padded, D): grid groups made contiguous."""
        return interleave(x, self.win)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *padded, D) -> (B, *padded, D): back to map order."""
        return deinterleave(x, self.win)


def mlp_of(cfg: BlockCfg) -> nn.Module | None:
    """The attention blocks' MLP with ``cfg.act`` (None at ``mlp_ratio`` 0)."""
    if not cfg.mlp_ratio:
        return None
    mlp = Mlp(cfg.width, cfg.mlp_ratio)
    mlp.act = make_act(cfg.act)
    return mlp


@register_op("mbconv", uses=("kernel", "act", "expand"), downsamples=True)
class MBConvBlock(nn.Module):
    """timm's pre-norm MBConv (CoAtNet, MaxViT): ``shortcut(x) + conv1x1(se(act(BN(dw_k(
    act(BN(conv1x1(BN(x)))))))))``.

    Hidden width ``round_width(width * expand)``; squeeze-excitation ``se`` (a setting, 0: none)
    with ``int(se * width)`` hidden units. The first block of a ``downsample = "block"`` stage
    (``stride=2``) strides the depthwise conv and takes the shortcut through
    :class:`Downsample` (pool, then conv1x1 to the new width); otherwise the shortcut is ``x``.
    """

    def __init__(
        self, cfg: BlockCfg, size: tuple[int, ...], in_width: int | None = None, stride: int = 1
    ) -> None:
        super().__init__()
        dim, width, k = len(size), cfg.width, cfg.kernel
        in_width = width if in_width is None else in_width
        mid = round_width(width * cfg.expand)
        conv, bn = conv_nd(dim), batchnorm_nd(dim)
        self.shortcut = Downsample(dim, in_width, width) if stride == 2 else nn.Identity()
        self.pre_norm = bn(in_width)
        self.conv1 = conv(in_width, mid, 1, bias=False)  # expand, at the input size
        self.norm1, self.act1 = bn(mid), make_act(cfg.act)
        self.conv2 = conv(mid, mid, k, stride=stride, padding=k // 2, groups=mid, bias=False)
        self.norm2, self.act2 = bn(mid), make_act(cfg.act)
        self.se = SqueezeExcite(mid, max(1, int(cfg.se * width))) if cfg.se else nn.Identity()
        self.conv3 = conv(mid, width, 1)  # project, with bias (timm output_bias)
        for c in (self.conv1, self.conv2, self.conv3):
            nn.init.kaiming_normal_(c.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv3.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S_in) -> (B, C, *S), S = S_in or (S_in + 1) // 2 at stride 2."""
        y = self.act1(self.norm1(self.conv1(self.pre_norm(x))))  # (B, mid, *S_in)
        y = self.se(self.act2(self.norm2(self.conv2(y))))  # (B, mid, *S)
        return self.shortcut(x) + self.conv3(y)


@register_op(
    "transformer", uses=("heads", "attention", "mlp_ratio", "act", "pos"), downsamples=True
)
class TransformerBlock(AttentionBlock):
    """CoAtNet's transformer block (timm ``TransformerBlock2d``): the attention block (pre-norm
    attention, then the MLP with ``act``); with ``pos="bias"`` and global attention it is
    CoAtNet's block with relative position bias.

    The first block of a ``downsample = "block"`` stage (``stride=2``) pools inside the
    attention path, whose query/key/value projection maps the input width to the new one:
    ``Downsample(x) + proj(attend(qkv(pool(LN(x)))))``; a learned or conv position encoding
    then acts on the pooled input. Channel attention has no projection to do that.
    """

    def __init__(
        self, cfg: BlockCfg, size: tuple[int, ...], in_width: int | None = None, stride: int = 1
    ) -> None:
        super().__init__(cfg, size)
        self.mlp = mlp_of(cfg)
        self.shortcut = self.down = None
        if stride == 1:
            return
        attn, dim = self.attn, len(size)
        in_width = cfg.width if in_width is None else in_width
        if not isinstance(attn, AttentionMixer):
            able = _allowed(n for n, c in ATTENTIONS.items() if issubclass(c, AttentionMixer))
            raise CfgError(
                "attention",
                f"{cfg.attention!r} cannot downsample in a transformer block; allowed: {able}",
            )
        self.shortcut = Downsample(dim, in_width, cfg.width)
        self.down = nn.Sequential(ChannelNorm(in_width, eps=1e-5), half_pool(dim))
        attn.norm = nn.Identity()  # normalised before the pool instead
        attn.qkv = nn.Linear(in_width, 3 * cfg.width)
        for chunk in attn.qkv.weight.data.chunk(3, dim=0):  # query, key, value: (C, C_in) each
            nn.init.xavier_uniform_(chunk)
        nn.init.zeros_(attn.qkv.bias)
        if attn.pos is not None:
            attn.pos = nn.Parameter(torch.zeros(1, in_width, *size))
            nn.init.trunc_normal_(attn.pos, std=0.02)
        if attn.cpe is not None:
            attn.cpe = conv_nd(dim)(in_width, in_width, 3, padding=1, groups=in_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S_in) -> (B, C, *S), S = S_in or (S_in + 1) // 2 at stride 2."""
        if self.down is None:
            return super().forward(x)
        x = self.shortcut(x) + self.attn(self.down(x))  # (B, C, *S)
        return x if self.mlp is None else x + self.mlp(x)


@register_op(
    "maxvit",
    uses=("kernel", "heads", "mlp_ratio", "act", "expand", "pos"),
    downsamples=True,
)
class MaxViTBlock(nn.Module):
    """MaxViT's block (timm ``MaxxVitBlock``): :class:`MBConvBlock`, then window attention and
    an MLP, then grid attention and an MLP, each pre-norm with its own residual.

    ``window`` (a setting) is the window and the grid extent (MaxViT: 7); ``pos`` applies to
    both attentions (MaxViT: ``"bias"``); ``downsample = "block"`` strides the MBConv.
    """

    def __init__(
        self, cfg: BlockCfg, size: tuple[int, ...], in_width: int | None = None, stride: int = 1
    ) -> None:
        super().__init__()
        self.conv = MBConvBlock(cfg, size, in_width, stride)
        self.block_attn, self.block_mlp = WindowAttention(cfg, size), mlp_of(cfg)
        self.grid_attn, self.grid_mlp = GridAttention(cfg, size), mlp_of(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S_in) -> (B, C, *S), S = S_in or (S_in + 1) // 2 at stride 2."""
        x = self.conv(x)  # (B, C, *S)
        for attn, mlp in ((self.block_attn, self.block_mlp), (self.grid_attn, self.grid_mlp)):
            x = x + attn(x)
            x = x if mlp is None else x + mlp(x)
        return x


@register_stem("maxxvit")
class MaxxVitStem(nn.Module):
    """timm's MaxxVit ``Stem``: conv(kernel, stride) -> BN -> act -> conv(kernel), both to
    ``stem_width``, without bias (CoAtNet): (B, C_in, *S) -> (B, W_0, *S_0)."""

    bias = False

    def __init__(self, cfg: NetCfg) -> None:
        super().__init__()
        dim, W, k = len(cfg.size), cfg.stem_width, cfg.stem_kernel
        conv = conv_nd(dim)
        self.conv1 = conv(cfg.in_channels, W, k, cfg.stem_stride, k // 2, bias=self.bias)
        self.norm, self.act = batchnorm_nd(dim)(W), make_act(cfg.act)
        self.conv2 = conv(W, W, k, 1, k // 2, bias=self.bias)
        for c in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(c.weight, mode="fan_out", nonlinearity="relu")
            if c.bias is not None:
                nn.init.zeros_(c.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S) -> (B, W_0, *S_0)."""
        return self.conv2(self.act(self.norm(self.conv1(x))))


@register_stem("maxxvit_tf")
class MaxxVitTfStem(MaxxVitStem):
    """:class:`MaxxVitStem` with biased convs (timm's MaxViT ``*_tf`` models)."""

    bias = True


@register_head("mlp")
class MlpHead(nn.Module):
    """timm's ``NormMlpClassifierHead``: mean over S -> LayerNorm -> Linear(``head_width``) ->
    tanh -> Linear (CoAtNet, MaxViT); ``head_width`` 0: no hidden layer (the ``ln`` head)."""

    def __init__(self, cfg: NetCfg, width: int) -> None:
        super().__init__()
        hidden = cfg.head_width
        self.norm = nn.LayerNorm(width)
        self.pre_logits = nn.Sequential(nn.Linear(width, hidden), nn.Tanh()) if hidden else None
        self.fc = nn.Linear(hidden or width, cfg.classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W, *S) -> (B, classes)."""
        x = self.norm(x.mean(dim=tuple(range(2, x.dim()))))  # (B, W)
        if self.pre_logits is not None:
            x = self.pre_logits(x)  # (B, head_width)
        return self.fc(x)


# --------------------------------------------------------------------------- levit
# LeViT (Graham et al. 2021; timm's ``levit``) on maps: timm's Linear+BatchNorm1d over tokens
# ("LinearNorm") is a 1x1 conv + BatchNorm over the map here, the same math and parameters (the
# layout of timm's ``levit_conv_*`` models), so every block keeps the (B, C, *S) convention.
# And the re-parameterisable conv (RepVGG / MobileOne / FastViT): train with branches, deploy
# one folded conv.

LEVIT_DOWN_STRIDE = 2  # an attention downsample keeps every 2nd query per axis (size (n+1)//2)


class LevitConvNorm(nn.Module):
    """Conv (no bias, same padding) -> BatchNorm: timm's ConvNorm, and its LinearNorm at k = 1.

    ``bn_init`` is the initial BN scale: 0 for the last layer of a residual branch (timm), so
    the branch starts as zero.
    """

    def __init__(
        self,
        dim: int,
        c_in: int,
        c_out: int,
        kernel: int = 1,
        stride: int = 1,
        bn_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.linear = conv_nd(dim)(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = batchnorm_nd(dim)(c_out)
        nn.init.constant_(self.bn.weight, bn_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c_in, *S) -> (B, c_out, *S') (S' = S / stride, rounded up)."""
        return self.bn(self.linear(x))


@register_stem("levit")
class LevitStem(nn.Sequential):
    """timm's Stem16 / Stem8: log2(stride) convs (``stem_kernel``, timm 3) of stride 2 + BN,
    the act (``NetCfg.act``) between them.

    Widths ramp up to ``stem_width``: ``stem_width / 2**(m-1), ..., stem_width / 2, stem_width``
    for ``m = log2(stem_stride)`` convs (16: W/8, W/4, W/2, W). Each conv halves the size
    rounding up, which is the stem-size formula of a single ``stem_stride`` conv.
    """

    def __init__(self, cfg: NetCfg) -> None:
        stride, width = cfg.stem_stride, cfg.stem_width
        if stride < 2 or stride & (stride - 1):
            raise CfgError(
                "stem_stride", f"{stride} is not allowed by a levit stem; allowed: 2, 4, 8, 16..."
            )
        convs = stride.bit_length() - 1  # log2(stride)
        if width % 2 ** (convs - 1):
            raise CfgError(
                "stem_width",
                f"{width} does not halve {convs - 1} times for a levit stem of stride {stride}; "
                f"allowed: multiples of {2 ** (convs - 1)}",
            )
        super().__init__()
        dim, c_in = len(cfg.size), cfg.in_channels
        for i in range(convs):
            if i:
                self.add_module(f"act{i}", make_act(cfg.act))
            c_out = width >> (convs - 1 - i)  # W / 2**(m-1-i)
            self.add_module(f"conv{i + 1}", LevitConvNorm(dim, c_in, c_out, cfg.stem_kernel, 2))
            c_in = c_out


def levit_bias_index(size: tuple[int, ...], step: int = 1) -> torch.Tensor:
    """(N_q, N_k) index of each query/key pair into a table of ``prod(size)`` biases.

    Keys are every position of ``size``; queries every ``step``-th position per axis. The index
    is the pair's absolute offset per axis, raveled over ``size`` (timm: |dy| * W + |dx|), so
    pairs at the same offset share a bias.
    """
    keys = torch.stack(torch.meshgrid(*(torch.arange(n) for n in size), indexing="ij"))
    queries = torch.meshgrid(*(torch.arange(0, n, step) for n in size), indexing="ij")
    # (d, N_q, N_k): |query - key| along each of the d axes
    rel = (torch.stack(queries).flatten(1)[:, :, None] - keys.flatten(1)[:, None, :]).abs()
    index = rel[0]  # (N_q, N_k), raveled with the later axes below
    for axis in range(1, len(size)):
        index = index * size[axis] + rel[axis]
    return index


def levit_key_dim(cfg: BlockCfg) -> int:
    """Query/key width per head: ``key_dim``, or (0) the width split over the heads."""
    return cfg.key_dim or max(1, cfg.width // (cfg.attn_heads or cfg.heads))


class LevitAttention(nn.Module):
    """LeViT attention with learned attention biases, no residual (timm ``Attention``).

    ``qkv`` (1x1 conv + BN) gives per head a query and key of ``key_dim`` and a value of
    ``attn_ratio * key_dim`` channels; ``softmax(q^T k / sqrt(key_dim) + bias)`` with one bias
    per head and relative offset (:func:`levit_bias_index`); then act -> 1x1 conv + BN back to
    ``C`` (BN scale starts at 0). With ``in_width`` (timm ``AttentionDownsample``), queries come
    from every 2nd position per axis through their own projection ``q``, keys and values from
    ``kv``, and the output has ``width`` channels on the subsampled map.
    """

    def __init__(
        self,
        cfg: BlockCfg,
        size: tuple[int, ...],
        heads: int,
        attn_ratio: float,
        in_width: int | None = None,
    ) -> None:
        super().__init__()
        dim, C = len(size), cfg.width
        self.heads, self.size = heads, tuple(size)  # size: the input map's
        self.key_dim = levit_key_dim(cfg)
        self.val_dim = int(attn_ratio * self.key_dim)  # timm rounds down
        if self.val_dim < 1:
            field = "down_ratio" if in_width is not None else "attn_ratio"
            raise CfgError(
                field,
                f"{attn_ratio} times key width {self.key_dim} leaves no value channel; "
                f"allowed: numbers >= {1 / self.key_dim:g}",
            )
        self.scale = self.key_dim**-0.5
        self.down = in_width is not None
        c_in, kd, vd = (in_width or C), self.key_dim, self.val_dim
        if self.down:
            self.kv = LevitConvNorm(dim, c_in, heads * (kd + vd))
            self.q = LevitConvNorm(dim, c_in, heads * kd)
        else:
            self.qkv = LevitConvNorm(dim, c_in, heads * (2 * kd + vd))
        self.proj = nn.Sequential(
            make_act(cfg.act),
            LevitConvNorm(dim, heads * vd, C, bn_init=1.0 if self.down else 0.0),  # timm's
        )
        step = LEVIT_DOWN_STRIDE if self.down else 1
        self.attention_biases = nn.Parameter(torch.zeros(heads, math.prod(size)))
        self.register_buffer("bias_index", levit_bias_index(self.size, step), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S) -> (B, C, *S_out): S_out = S, or ceil(S / 2) when downsampling."""
        B, N, h = x.shape[0], math.prod(self.size), self.heads
        kd, vd = self.key_dim, self.val_dim
        if self.down:
            k, v = self.kv(x).view(B, h, kd + vd, N).split([kd, vd], dim=2)  # (B, h, *, N)
            sub = x[(..., *[slice(None, None, LEVIT_DOWN_STRIDE)] * len(self.size))]
            q = self.q(sub).view(B, h, kd, -1)  # (B, h, kd, N_q)
            out_size = tuple(sub.shape[2:])
        else:
            q, k, v = self.qkv(x).view(B, h, 2 * kd + vd, N).split([kd, kd, vd], dim=2)
            out_size = self.size
        bias = self.attention_biases[:, self.bias_index]  # (h, N_q, N)
        attn = ((q.transpose(-2, -1) @ k) * self.scale + bias).softmax(dim=-1)  # (B, h, N_q, N)
        o = (v @ attn.transpose(-2, -1)).reshape(B, h * vd, *out_size)  # (B, h * vd, *S_out)
        return self.proj(o)


class LevitMlp(nn.Module):
    """1x1 conv + BN -> act -> 1x1 conv + BN (scale starts at 0), residual left to the caller."""

    def __init__(self, dim: int, channels: int, ratio: float, act: str) -> None:
        super().__init__()
        hidden = max(1, int(channels * ratio))  # timm rounds down
        self.ln1 = LevitConvNorm(dim, channels, hidden)
        self.act = make_act(act)
        self.ln2 = LevitConvNorm(dim, hidden, channels, bn_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        return self.ln2(self.act(self.ln1(x)))


@register_op("levit", uses=("heads", "mlp_ratio", "act"), downsamples=True)
class LevitBlock(nn.Module):
    """LeViT block: ``x + attn(x)``, then ``x + mlp(x)`` (timm ``LevitBlock``; no MLP at 0).

    Reads ``heads`` (``attn_heads`` instead where set: LeViT's head counts need not divide the
    width), ``key_dim`` (0: width // heads), ``attn_ratio``, ``mlp_ratio``, ``act``. Built with
    ``in_width`` and ``stride=2`` (a stage's ``downsample = "block"``), it is timm's
    ``LevitDownsample``: attention downsample ``in_width -> width`` without a residual, with
    ``in_width // key_dim`` heads and value ratio ``down_ratio``, then ``x + mlp(x)``.
    """

    takes_in_size = True  # FusionNet passes the downsampling block its input size too

    def __init__(
        self,
        cfg: BlockCfg,
        size: tuple[int, ...],
        in_width: int | None = None,
        stride: int = 1,
        in_size: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        dim = len(size)
        if stride not in (1, LEVIT_DOWN_STRIDE):
            raise ValueError(f"stride {stride} is not allowed by a levit block; allowed: 1, 2")
        self.down = stride != 1
        if self.down:
            in_width = cfg.width if in_width is None else in_width
            key_dim = levit_key_dim(cfg)
            heads = in_width // key_dim
            if heads < 1:
                raise CfgError(
                    "key_dim",
                    f"{key_dim} is wider than the {in_width} channels a levit downsample gets; "
                    f"allowed: 1..{in_width}",
                )
            # the map it downsamples (without in_size: the even size that halves to size)
            in_size = tuple(in_size) if in_size is not None else tuple(2 * n for n in size)
            self.attn = LevitAttention(cfg, in_size, heads, cfg.down_ratio, in_width)
        else:
            self.attn = LevitAttention(cfg, size, cfg.attn_heads or cfg.heads, cfg.attn_ratio)
        self.mlp = LevitMlp(dim, cfg.width, cfg.mlp_ratio, cfg.act) if cfg.mlp_ratio else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S); downsampling: (B, C_in, *S_in) -> (B, C, *ceil(S_in / 2))."""
        x = self.attn(x) if self.down else x + self.attn(x)
        return x if self.mlp is None else x + self.mlp(x)


class LevitNormLinear(nn.Module):
    """BatchNorm1d -> Linear (timm ``NormLinear``; weight trunc-normal std 0.02, bias 0)."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(width)
        self.linear = nn.Linear(width, classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, width) -> (B, classes)."""
        return self.linear(self.bn(x))


@register_head("bn")
class BnHead(nn.Module):
    """Mean over S -> BatchNorm1d -> Linear (LeViT); ``distill`` adds a second BN + Linear and
    averages the two, as timm's distilled models do at inference."""

    def __init__(self, cfg: NetCfg, width: int) -> None:
        super().__init__()
        if cfg.head_width:
            raise CfgError(
                "head_width", f"{cfg.head_width} is not allowed by a bn head; allowed: 0"
            )
        self.head = LevitNormLinear(width, cfg.classes)
        self.head_dist = LevitNormLinear(width, cfg.classes) if cfg.distill else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, width, *S) -> (B, classes)."""
        pooled = x.mean(dim=tuple(range(2, x.dim())))  # (B, width)
        out = self.head(pooled)
        return out if self.head_dist is None else (out + self.head_dist(pooled)) / 2


def fold_conv_bn(weight: torch.Tensor, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv weight (C_out, C_in, *k) followed by eval-mode BN -> (weight, bias) of one conv."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std  # (C_out,)
    return weight * scale.view(-1, *[1] * (weight.dim() - 1)), bn.bias - bn.running_mean * scale


@register_op("repconv", uses=("kernel", "act"))
class RepConvBlock(nn.Module):
    """``x + act(BN(conv_k(x)) + BN(conv_1(x)) + BN(x))``: RepVGG's training-time branches
    (dense convs, same padding; 1-D and 2-D), reading ``kernel`` and ``act``.

    :meth:`fuse` folds the three branches into one ``k``-conv with bias (deployment), equal to
    them in eval mode (BN running statistics); after it the block is ``x + act(conv(x))``.
    """

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        dim, C, k = len(size), cfg.width, cfg.kernel
        self.dim, self.kernel = dim, k
        self.conv = nn.Sequential(
            conv_nd(dim)(C, C, k, padding=k // 2, bias=False), batchnorm_nd(dim)(C)
        )
        self.scale = nn.Sequential(conv_nd(dim)(C, C, 1, bias=False), batchnorm_nd(dim)(C))
        self.identity = batchnorm_nd(dim)(C)
        self.act = make_act(cfg.act)
        self.fused: nn.Module | None = None
        for conv in (self.conv[0], self.scale[0]):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        if self.fused is not None:
            return x + self.act(self.fused(x))
        return x + self.act(self.conv(x) + self.scale(x) + self.identity(x))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the branches into ``self.fused``, one ``k``-conv with bias; drops the branches.

        Exact for eval mode: every BN folds with its running statistics. Calling it twice is a
        no-op.
        """
        if self.fused is not None:
            return
        C, k, pad = self.identity.num_features, self.kernel, self.kernel // 2
        centre = (slice(None), slice(None), *[slice(pad, pad + 1)] * self.dim)  # the 1x1 tap
        wk, bk = fold_conv_bn(self.conv[0].weight, self.conv[1])  # (C, C, *k), (C,)
        one = torch.zeros_like(wk)  # the 1x1 conv as a k-conv: its weight at the centre tap
        one[centre] = self.scale[0].weight
        w1, b1 = fold_conv_bn(one, self.scale[1])
        eye = torch.zeros_like(wk)  # the identity as a k-conv: 1 at the centre, channel c -> c
        eye[centre] = torch.eye(C, dtype=wk.dtype, device=wk.device).view(C, C, *[1] * self.dim)
        wi, bi = fold_conv_bn(eye, self.identity)
        fused = conv_nd(self.dim)(C, C, k, padding=pad, device=wk.device, dtype=wk.dtype)
        fused.weight.copy_(wk + w1 + wi)
        fused.bias.copy_(bk + b1 + bi)
        self.fused = fused
        del self.conv, self.scale, self.identity


# --------------------------------------------------------------------------- mobilevit
# MobileViT (Mehta & Rastegari 2021) as timm builds ``mobilevit_*``: MobileNetV2 inverted
# residuals and MobileViT blocks (local conv, a transformer over unfolded patches, fold, fusion).


def conv_norm_act(
    dim: int, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str = ""
) -> nn.Sequential:
    """Same-padding conv (no bias) -> BN -> ``act`` (``""``: none), timm's ``ConvNormAct``.

    Output size per axis: ``(n - 1) // stride + 1`` (``(n + 1) // 2`` at stride 2).
    """
    conv = conv_nd(dim)(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    layers = [conv, batchnorm_nd(dim)(cout)]
    return nn.Sequential(*layers, make_act(act)) if act else nn.Sequential(*layers)


def init_block_weights(module: nn.Module, qkv: tuple[nn.Linear, ...] = ()) -> None:
    """The project's initialisation inside ``module``: Kaiming (fan-out) for convolutions,
    Xavier for the query/key/value projections ``qkv`` and attention output projections named
    ``proj``, truncated normal (std 0.02) for the other linears; biases zero."""
    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            if m in qkv or name.endswith("proj"):
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.trunc_normal_(m.weight, std=0.02)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


@register_op("mv2", uses=("kernel", "act", "expand"), downsamples=True)
class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand -> BN -> act -> depthwise kxk -> BN -> act ->
    1x1 project -> BN, plus ``x`` when the stride is 1 and the width stays (timm's
    ``BottleneckBlock(bottle_in=True, linear_out=True, gs=1)``).

    Hidden width ``round(in_width * expand)``. The first block of a ``downsample = "block"``
    stage has stride 2 and maps ``in_width`` to ``width``: no residual there.
    """

    def __init__(
        self, cfg: BlockCfg, size: tuple[int, ...], in_width: int | None = None, stride: int = 1
    ) -> None:
        super().__init__()
        dim, cin = len(size), in_width or cfg.width
        hidden = max(1, round(cin * cfg.expand))
        self.expand = conv_norm_act(dim, cin, hidden, 1, act=cfg.act)
        self.dw = conv_norm_act(dim, hidden, hidden, cfg.kernel, stride, hidden, act=cfg.act)
        self.project = conv_norm_act(dim, hidden, cfg.width, 1)
        self.residual = stride == 1 and cin == cfg.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S_in) -> (B, C, *S)."""
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class TokenTransformer(nn.Module):
    """timm's ViT ``Block`` on tokens (B', N, D): ``t + attn(LN(t))``, then ``t + mlp(LN(t))``.

    Multi-head self-attention with biased qkv and output projections; MLP hidden width
    ``int(D * mlp_ratio)`` (0: no MLP) with activation ``act``; LayerNorm eps 1e-5.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, act: str) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = None
        if hidden:
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), make_act(act), nn.Linear(hidden, dim))
        init_block_weights(self, qkv=(self.qkv,))
        for chunk in self.qkv.weight.data.chunk(3, dim=0):  # query, key, value: (D, D) each
            nn.init.xavier_uniform_(chunk)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B', N, D) -> (B', N, D)."""
        q, k, v = (split_heads(u, self.heads) for u in self.qkv(self.norm1(t)).chunk(3, dim=-1))
        o = F.scaled_dot_product_attention(q, k, v)  # (B', heads, N, D // heads)
        t = t + self.proj(o.transpose(1, 2).flatten(2))
        return t if self.mlp is None else t + self.mlp(self.norm2(t))


def unfold_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, D, *S), every axis a multiple of ``patch`` -> (B * patch^dim, N, D): one sequence of
    the N = prod(S) / patch^dim patches per position inside a patch (MobileViT's unfold)."""
    B, D = x.shape[:2]
    if x.dim() == 3:  # (B, D, n * p) -> (B, p, n, D)
        t = x.reshape(B, D, -1, patch).permute(0, 3, 2, 1)
    else:  # (B, D, nh * p, nw * p) -> (B, p, p, nh, nw, D)
        H, W = x.shape[2:]
        t = x.reshape(B, D, H // patch, patch, W // patch, patch).permute(0, 3, 5, 2, 4, 1)
    return t.reshape(-1, x[0, 0].numel() // patch ** (x.dim() - 2), D)


def fold_patches(t: torch.Tensor, patch: int, size: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`unfold_patches`: (B * patch^dim, N, D) -> (B, D, *size)."""
    D, grid = t.shape[-1], tuple(n // patch for n in size)
    if len(size) == 1:  # (B, p, n, D) -> (B, D, n, p)
        x = t.reshape(-1, patch, grid[0], D).permute(0, 3, 2, 1)
    else:  # (B, p, p, nh, nw, D) -> (B, D, nh, p, nw, p)
        x = t.reshape(-1, patch, patch, *grid, D).permute(0, 5, 3, 1, 4, 2)
    return x.reshape(x.shape[0], D, *size)


@register_op("mobilevit", uses=("kernel", "heads", "mlp_ratio", "act"))
class MobileViTBlock(nn.Module):
    """MobileViT block (timm's ``MobileVitBlock``), no residual of its own:

        local = conv1x1(C -> inner)(conv_kxk -> BN -> act(x))       (B, inner, *S)
        unfold into patch^dim sequences of patches, ``layers`` x TokenTransformer(inner), LN, fold
        y = conv_kxk(2C -> C) -> BN -> act(cat(x, conv1x1(inner -> C) -> BN -> act(local)))

    A map whose sides are not multiples of ``patch`` is resized (bilinear; linear for
    sequences) up to the next multiple before the unfold and back after the fold, as timm does.
    ``heads`` must divide ``inner`` (:class:`BlockCfg` checks it).
    """

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        dim, C, D = len(size), cfg.width, cfg.inner or cfg.width
        self.size, self.patch = tuple(size), cfg.patch
        self.padded = tuple(math.ceil(n / cfg.patch) * cfg.patch for n in size)
        self.local = conv_norm_act(dim, C, C, cfg.kernel, act=cfg.act)
        self.inner = conv_nd(dim)(C, D, 1, bias=False)
        nn.init.kaiming_normal_(self.inner.weight, mode="fan_out", nonlinearity="relu")
        self.layers = nn.Sequential(
            *(TokenTransformer(D, cfg.heads, cfg.mlp_ratio, cfg.act) for _ in range(cfg.layers))
        )
        self.norm = nn.LayerNorm(D)
        self.proj = conv_norm_act(dim, D, C, 1, act=cfg.act)
        self.fusion = conv_norm_act(dim, 2 * C, C, cfg.kernel, act=cfg.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        y = self.inner(self.local(x))  # (B, inner, *S)
        mode = ("linear", "bilinear")[y.dim() - 3]
        if self.padded != self.size:
            y = F.interpolate(y, size=self.padded, mode=mode, align_corners=False)
        t = self.norm(self.layers(unfold_patches(y, self.patch)))  # (B * p^dim, N, inner)
        y = fold_patches(t, self.patch, self.padded)  # (B, inner, *padded)
        if self.padded != self.size:
            y = F.interpolate(y, size=self.size, mode=mode, align_corners=False)
        return self.fusion(torch.cat((x, self.proj(y)), dim=1))


@register_attention("separable", uses=("pos",))
class SeparableAttention(AttentionMixer):
    """MobileViT-v2's separable self-attention (timm's ``LinearSelfAttention``) over all tokens:
    a 1-wide query gives each token a context score (softmax over the tokens), the context
    vector is the score-weighted sum of the keys, and each token's output is ``relu(value) *
    context`` before the output projection. No heads; cost linear in the tokens.

    The qkv projection is ``Linear(C, 1 + 2C)`` (query, keys, values), Xavier-initialised.
    """

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__(cfg, size)
        C = cfg.width
        self.qkv = nn.Linear(C, 1 + 2 * C)
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, N, 1 + 2C) -> (B, N, C)."""
        C = (qkv.shape[-1] - 1) // 2
        q, k, v = qkv.split([1, C, C], dim=-1)  # (B, N, 1), (B, N, C), (B, N, C)
        scores = q.softmax(dim=1)  # (B, N, 1): one weight per token, summing to 1
        context = scores.transpose(1, 2) @ k  # (B, 1, C)
        return F.relu(v) * context


@register_stem("convbn")
class ConvBNStem(nn.Sequential):
    """conv(kernel, stride, same padding, no bias) -> BN -> act: timm's ``ConvNormAct`` stem
    (MobileNet, MobileViT); (B, C_in, *S) -> (B, W_0, *S_0)."""

    def __init__(self, cfg: NetCfg) -> None:
        dim, k = len(cfg.size), cfg.stem_kernel
        conv = conv_nd(dim)(cfg.in_channels, cfg.stem_width, k, cfg.stem_stride, k // 2, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        super().__init__(conv, batchnorm_nd(dim)(cfg.stem_width), make_act(cfg.act))


@register_head("conv")
class ConvHead(nn.Module):
    """conv1x1 (no bias) -> BN -> act to ``head_width`` features (0: no conv), mean over S,
    Linear (``fc``); ``distill``: a second Linear (``fc_dist``), the two averaged. timm's
    ByobNet ``final_conv`` + ``ClassifierHead`` (MobileViT, EfficientNet)."""

    def __init__(self, cfg: NetCfg, width: int) -> None:
        super().__init__()
        dim, features = len(cfg.size), cfg.head_width or width
        self.conv = nn.Identity()
        if cfg.head_width:
            self.conv = conv_norm_act(dim, width, features, 1, act=cfg.act)
        self.fc = nn.Linear(features, cfg.classes)
        self.fc_dist = nn.Linear(features, cfg.classes) if cfg.distill else None
        init_block_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W, *S) -> (B, classes)."""
        x = self.conv(x)  # (B, F, *S)
        x = x.mean(dim=tuple(range(2, x.dim())))  # (B, F)
        if self.fc_dist is None:
            return self.fc(x)
        return (self.fc(x) + self.fc_dist(x)) / 2


# --------------------------------------------------------------------------- efficientformer
# EfficientFormer (Li et al. 2022) as timm builds ``efficientformer_l*``: Meta4D blocks (pooling
# token mixer, conv MLP) on maps, then Meta3D blocks (attention with learned biases) on tokens.


class ResidualScale(nn.Module):
    """``x * gamma`` per channel, gamma starting at ``init`` (CaiT's layer scale); for maps
    (B, C, *S) with ``channels_last=False``, tokens (B, N, C) with ``channels_last=True``."""

    def __init__(self, channels: int, init: float, channels_last: bool) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init)))
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S), or (B, N, C) -> (B, N, C) when ``channels_last``."""
        return x * (self.gamma if self.channels_last else channel_view(self.gamma, x.dim() - 2))


def residual_scale(channels: int, init: float, channels_last: bool = False) -> nn.Module:
    """:class:`ResidualScale` starting at ``init``, or the identity when ``init`` is 0."""
    return ResidualScale(channels, init, channels_last) if init else nn.Identity()


@register_op("pool", uses=("kernel", "mlp_ratio", "act"), downsamples=True)
class PoolBlock(nn.Module):
    """EfficientFormer's Meta4D block (PoolFormer's block with a BN conv MLP):

        x = x + ls1 * (avgpool_k(x) - x)           stride 1, padding k // 2, pads not counted
        x = x + ls2 * BN(conv1x1(act(BN(conv1x1(x)))))   hidden int(C * mlp_ratio)

    ``ls1``, ``ls2``: per-channel layer scales starting at ``layer_scale`` (0: none). The first
    block of a ``downsample = "block"`` stage starts with EfficientFormer's stage entry, a 3x3
    stride-2 conv (with bias) from ``in_width`` to ``width`` -> BN.
    """

    def __init__(
        self, cfg: BlockCfg, size: tuple[int, ...], in_width: int | None = None, stride: int = 1
    ) -> None:
        super().__init__()
        dim, C, k = len(size), cfg.width, cfg.kernel
        self.down = nn.Identity()
        if stride != 1:
            conv = conv_nd(dim)(in_width or C, C, 3, stride, 1)
            self.down = nn.Sequential(conv, batchnorm_nd(dim)(C))
        self.pool = avgpool_nd(dim)(k, 1, k // 2, count_include_pad=False)
        hidden, conv = int(C * cfg.mlp_ratio), conv_nd(dim)
        self.ls1 = residual_scale(C, cfg.layer_scale)
        self.mlp = None  # mlp_ratio 0 (or a hidden width under 1): no MLP
        if hidden:
            self.mlp = nn.Sequential(
                conv(C, hidden, 1),
                batchnorm_nd(dim)(hidden),
                make_act(cfg.act),
                conv(hidden, C, 1),
                batchnorm_nd(dim)(C),
            )
            self.ls2 = residual_scale(C, cfg.layer_scale)
        init_block_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S_in) -> (B, C, *S)."""
        x = self.down(x)
        x = x + self.ls1(self.pool(x) - x)
        return x if self.mlp is None else x + self.ls2(self.mlp(x))


def offset_index(size: tuple[int, ...]) -> torch.Tensor:
    """(N, N) index of the absolute offset between two positions of a ``size`` grid, in
    ``0..N-1``: ``|dy| * W + |dx|`` for (H, W), ``|dx|`` for (L,) (EfficientFormer, LeViT)."""
    grid = torch.stack(torch.meshgrid(*(torch.arange(n) for n in size), indexing="ij")).flatten(1)
    offsets = (grid[:, :, None] - grid[:, None, :]).abs()  # (dim, N, N)
    strides = [math.prod(size[i + 1 :]) for i in range(len(size))]
    return sum(o * s for o, s in zip(offsets, strides))


@register_stem("efficientformer")
class EfficientFormerStem(nn.Sequential):
    """Two conv3x3 stride 2 (padding 1, bias) -> BN -> act: C_in -> W_0 // 2 -> W_0, a quarter
    of the size per axis (rounding up); the config asks for kernel 3, stride 4 (``Stem4``)."""

    def __init__(self, cfg: NetCfg) -> None:
        dim, half, W = len(cfg.size), cfg.stem_width // 2, cfg.stem_width
        conv, norm = conv_nd(dim), batchnorm_nd(dim)
        super().__init__(
            *(conv(cfg.in_channels, half, 3, 2, 1), norm(half), make_act(cfg.act)),
            *(conv(half, W, 3, 2, 1), norm(W), make_act(cfg.act)),
        )
        init_block_weights(self)


@register_head("tokenln")
class TokenNormHead(LayerNormHead):
    """LayerNorm (eps 1e-5) at every position, then mean over S -> Linear (``fc``);
    ``distill``: a second Linear (``fc_dist``), the two averaged. EfficientFormer's head (it
    normalises before pooling, where the ``ln`` head pools first)."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W, *S) -> (B, W): normalised per position, then pooled."""
        return self.norm(to_tokens(x)).mean(dim=1)  # (B, N, W) -> (B, W)


class BiasedAttention(nn.Module):
    """timm's EfficientFormer ``Attention`` on tokens (B, N, C): per head a ``key_dim`` query
    and key and an ``attn_ratio * key_dim`` value; softmax(q k^T / sqrt(key_dim) + bias) v,
    where bias is a learned per-head value for each absolute offset between the two tokens."""

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.key_dim = cfg.key_dim or cfg.width // cfg.heads
        self.val_dim = int(cfg.attn_ratio * self.key_dim)
        per_head = 2 * self.key_dim + self.val_dim
        self.qkv = nn.Linear(cfg.width, per_head * self.heads)
        self.proj = nn.Linear(self.val_dim * self.heads, cfg.width)
        self.biases = nn.Parameter(torch.zeros(self.heads, math.prod(size)))
        self.register_buffer("bias_index", offset_index(tuple(size)), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        B, N, _ = t.shape
        qkv = self.qkv(t).reshape(B, N, self.heads, -1).transpose(1, 2)  # (B, h, N, 2kd + vd)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=-1)
        bias = self.biases[:, self.bias_index]  # (h, N, N)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, h, N, vd)
        return self.proj(o.transpose(1, 2).flatten(2))


@register_op("meta3d", uses=("heads", "mlp_ratio", "act"))
class Meta3DBlock(nn.Module):
    """EfficientFormer's Meta3D block on the tokens of a (B, C, *S) map:

        t = t + ls1 * attn(LN(t))     :class:`BiasedAttention` (settings key_dim, attn_ratio)
        t = t + ls2 * mlp(LN(t))      Linear -> act -> Linear, hidden int(C * mlp_ratio)

    LayerNorm eps 1e-5; layer scales start at ``layer_scale`` (0: none).
    """

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        C, self.size = cfg.width, tuple(size)
        self.norm1 = nn.LayerNorm(C)
        self.attn = BiasedAttention(cfg, size)
        self.ls1 = residual_scale(C, cfg.layer_scale, channels_last=True)
        hidden = int(C * cfg.mlp_ratio)
        self.mlp = None  # mlp_ratio 0 (or a hidden width under 1): no MLP
        if hidden:
            self.norm2 = nn.LayerNorm(C)
            self.mlp = nn.Sequential(nn.Linear(C, hidden), make_act(cfg.act), nn.Linear(hidden, C))
            self.ls2 = residual_scale(C, cfg.layer_scale, channels_last=True)
        init_block_weights(self, qkv=(self.attn.qkv,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        t = to_tokens(x)  # (B, N, C)
        t = t + self.ls1(self.attn(self.norm1(t)))
        if self.mlp is not None:
            t = t + self.ls2(self.mlp(self.norm2(t)))
        return from_tokens(t, self.size)


# --------------------------------------------------------------------------- edgenext
# EdgeNeXt (timm edgenext.py): the ConvNeXt-style conv encoder ``convnext``, the split depthwise
# transposed attention block ``sdta`` with its Fourier position encoding, cross-covariance
# attention as the variant ``xca``, and the channel-split conv/attention block ``split``.

EDGENEXT_EPS = 1e-6  # LayerNorm eps of EdgeNeXt's blocks (timm)
FOURIER_FEATURES = 32  # sine/cosine features per axis of the Fourier position encoding
FOURIER_TEMPERATURE = 10000.0
SDTA_KERNEL = 3  # the depthwise convs of a split depthwise transposed attention block
SDTA_POSITIONS = ("none", "fourier", "learned", "cpe")  # position encodings an sdta block takes


def split_widths(width: int, scales: int) -> list[int]:
    """Channel groups of an ``sdta`` block: ``scales - 1`` groups of ``ceil(width / scales)``
    channels and the rest (``Tensor.chunk``'s sizes, as timm splits)."""
    w = -(-width // scales)
    return [w] * (scales - 1) + [width - w * (scales - 1)]


def fourier_features(size: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """Sine/cosine features of every position: (FOURIER_FEATURES * len(size), *size).

    timm's PositionalEncodingFourier before its projection, axis by axis (first axis first):
    position ``p = 2 pi i / n`` (``i = 1..n``), feature ``j`` is ``sin(p / t_j)`` at even and
    ``cos(p / t_j)`` at odd ``j``, ``t_j = FOURIER_TEMPERATURE ** (2 * (j // 2) / F)``.
    """
    j = torch.arange(FOURIER_FEATURES, device=device, dtype=torch.float32)
    t = FOURIER_TEMPERATURE ** (2 * torch.div(j, 2, rounding_mode="floor") / FOURIER_FEATURES)
    out = []
    for axis, n in enumerate(size):
        pos = torch.arange(1, n + 1, device=device, dtype=torch.float32)
        p = (pos / (n + 1e-6) * (2 * math.pi))[:, None] / t  # (n, F)
        p = torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)  # (n, F)
        shape = [1] * len(size)
        shape[axis] = n
        out.append(p.t().reshape(FOURIER_FEATURES, *shape).expand(FOURIER_FEATURES, *size))
    return torch.cat(out)  # (F * len(size), *size)


class FourierPosition(nn.Module):
    """Adds fixed Fourier features of each position (:func:`fourier_features`), projected to
    the C channels by a 1x1 conv with bias (timm's PositionalEncodingFourier)."""

    def __init__(self, size: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.size = tuple(size)
        self.proj = conv_nd(len(size))(FOURIER_FEATURES * len(size), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        w = self.proj.weight
        feats = fourier_features(self.size, w.device).to(w.dtype)  # (F * dim, *S)
        return x + self.proj(feats[None])  # (1, C, *S), the same for every sample


class LearnedPosition(nn.Module):
    """Adds a learned vector per position (the attention mixers' ``"learned"`` encoding)."""

    def __init__(self, size: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, channels, *size))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        return x + self.pos


class ConvPosition(nn.Module):
    """Conditional position encoding ``x + dw3(x)`` (the attention mixers' ``"cpe"``)."""

    def __init__(self, dim: int, channels: int) -> None:
        super().__init__()
        self.conv = conv_nd(dim)(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        return x + self.conv(x)


def sdta_position(pos: str, size: tuple[int, ...], channels: int) -> nn.Module | None:
    """The module that adds encoding ``pos`` (``SDTA_POSITIONS``) to a map; None for "none"."""
    if pos == "fourier":
        return FourierPosition(size, channels)
    if pos == "learned":
        return LearnedPosition(size, channels)
    if pos == "cpe":
        return ConvPosition(len(size), channels)
    return None


class ChannelsLastScale(nn.Module):
    """Learned per-channel scale of a channels-last tensor, every entry starting at ``init``."""

    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *S, C) -> (B, *S, C)."""
        return x * self.gamma


class PointMlp(nn.Module):
    """Channels-last MLP: Linear(C, int(expand * C)) -> act -> Linear back, both with bias."""

    def __init__(self, channels: int, expand: float, act: str) -> None:
        super().__init__()
        hidden = int(expand * channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = make_act(act)
        self.fc2 = nn.Linear(hidden, channels)
        for fc in (self.fc1, self.fc2):
            nn.init.trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *S, C) -> (B, *S, C)."""
        return self.fc2(self.act(self.fc1(x)))


@register_op("convnext", uses=("kernel", "act", "norm", "expand"))
class ConvNextBlock(nn.Module):
    """EdgeNeXt's conv encoder (timm ConvBlock): ``x + gamma * mlp(norm(dw_k(x)))``.

    Depthwise ``kernel`` conv with bias, ``norm`` (``"ln"``: LayerNorm over channels, eps 1e-6),
    pointwise MLP of ``expand * C`` hidden channels and ``act``, per-channel ``layer_scale``.
    """

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        C, k = cfg.width, cfg.kernel
        self.conv = conv_nd(len(size))(C, C, k, padding=k // 2, groups=C)
        self.norm = make_norm(cfg.norm, len(size), C, eps=EDGENEXT_EPS)
        self.mlp = PointMlp(C, cfg.expand, cfg.act)
        self.scale = ChannelsLastScale(C, cfg.layer_scale) if cfg.layer_scale else None
        nn.init.trunc_normal_(self.conv.weight, std=0.02)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        y = self.mlp(self.norm(self.conv(x)).movedim(1, -1))  # (B, *S, C)
        if self.scale is not None:
            y = self.scale(y)
        return x + y.movedim(-1, 1)


def xca_attend(qkv: torch.Tensor, heads: int, temperature: torch.Tensor) -> torch.Tensor:
    """Cross-covariance attention (XCiT): (B, N, 3C) -> (B, N, C).

    Per head, a (hd, hd) softmax map between the channels of queries and keys, each channel
    L2-normalised over the tokens, times a learned temperature per head (``temperature``:
    (heads, 1, 1)); cost linear in tokens.
    """
    B, N, C3 = qkv.shape
    qkv = qkv.reshape(B, N, 3, heads, C3 // (3 * heads)).permute(2, 0, 3, 4, 1)
    q, k, v = qkv.unbind(0)  # (B, h, hd, N) each
    attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)  # (B, h, hd, hd)
    attn = (attn * temperature).softmax(dim=-1)
    return (attn @ v).permute(0, 3, 1, 2).reshape(B, N, C3 // 3)  # (B, h, hd, N) -> (B, N, C)


class CrossCovariance(nn.Module):
    """timm's CrossCovarianceAttn on tokens: qkv Linear with bias, :func:`xca_attend`, output
    Linear; the temperature per head starts at 1."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        return self.proj(xca_attend(self.qkv(t), self.heads, self.temperature))


class SplitConvs(nn.Module):
    """The first part of an ``sdta`` block: the channels split into ``scales`` groups
    (:func:`split_widths`); group ``i < scales - 1`` goes through a depthwise 3x3 conv with
    bias after adding the previous group's output (Res2Net style), the last group passes
    (``scales`` 1: no conv)."""

    def __init__(self, dim: int, channels: int, scales: int) -> None:
        super().__init__()
        self.widths = split_widths(channels, scales)
        self.convs = nn.ModuleList(
            conv_nd(dim)(w, w, SDTA_KERNEL, padding=SDTA_KERNEL // 2, groups=w)
            for w in self.widths[:-1]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        groups = x.split(self.widths, dim=1)  # (B, w_i, *S)
        outs, y = [], groups[0]
        for i, conv in enumerate(self.convs):
            y = conv(y if i == 0 else y + groups[i])
            outs.append(y)
        return torch.cat([*outs, groups[-1]], dim=1)


@register_op("sdta", uses=("heads", "act", "expand", "pos"))
class SdtaBlock(nn.Module):
    """EdgeNeXt's split depthwise transposed attention (timm SplitTransposeBlock).

    ``y = convs(x)`` (:class:`SplitConvs` over ``scales`` channel groups), plus the ``pos``
    encoding (``SDTA_POSITIONS``; ``"fourier"``: timm's); ``y = y + g1 * xca(LN(y))`` over
    ``heads`` heads; the block returns ``x + g2 * mlp(LN(y))`` (MLP: ``expand``, ``act``): the
    input, not ``y``, is the residual. ``g1``, ``g2``: per-channel ``layer_scale`` (0: none).
    """

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        C, dim, ls = cfg.width, len(size), cfg.layer_scale
        self.convs = SplitConvs(dim, C, cfg.scales)
        self.pos = sdta_position(cfg.pos, size, C)
        self.norm_xca = nn.LayerNorm(C, eps=EDGENEXT_EPS)
        self.scale_xca = ChannelsLastScale(C, ls) if ls else None
        self.xca = CrossCovariance(C, cfg.heads)
        self.norm = nn.LayerNorm(C, eps=EDGENEXT_EPS)
        self.mlp = PointMlp(C, cfg.expand, cfg.act)
        self.scale = ChannelsLastScale(C, ls) if ls else None
        for m in self.modules():  # timm's EdgeNeXt init: every conv and Linear
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        y = self.convs(x)  # (B, C, *S)
        if self.pos is not None:
            y = self.pos(y)
        t = to_tokens(y)  # (B, N, C)
        a = self.xca(self.norm_xca(t))
        t = t + (a if self.scale_xca is None else self.scale_xca(a))
        t = self.mlp(self.norm(t))
        if self.scale is not None:
            t = self.scale(t)
        return x + from_tokens(t, tuple(x.shape[2:]))


@register_attention("xca")
class XcaAttention(AttentionMixer):
    """Cross-covariance attention (XCiT, EdgeNeXt) as an attention variant: the mixer's
    position encoding, LayerNorm and qkv projection, then :func:`xca_attend` (attention between
    the channels of each head, a learned temperature per head, cost linear in tokens)."""

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__(cfg, size)
        self.temperature = nn.Parameter(torch.ones(cfg.heads, 1, 1))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, N, 3C) -> (B, N, C)."""
        return xca_attend(qkv, self.heads, self.temperature)


def split_share(width: int, split: float) -> int:
    """Channels of the conv branch of a ``split`` block: ``round(split * width)``; the
    attention branch takes the rest."""
    return round(split * width)


def _sdta_checks(cfg: BlockCfg) -> None:
    """The rules of ``sdta`` blocks that read several fields together; ``pos="fourier"`` only
    there (the attention variants have no Fourier encoding and must not ignore it)."""
    if cfg.operator != "sdta":
        if cfg.pos == "fourier" and "pos" in reads(cfg.operator, cfg.attention):
            others = [p for p in POSITIONS if p != "fourier"]
            raise CfgError(
                "pos",
                f"'fourier' is only supported by operator 'sdta', not {cfg.operator!r}; "
                f"allowed: {_allowed(others)}",
            )
        return
    if cfg.pos not in SDTA_POSITIONS:
        raise CfgError(
            "pos",
            f"{cfg.pos!r} is not supported by operator 'sdta'; allowed: {_allowed(SDTA_POSITIONS)}",
        )
    C = cfg.width
    if split_widths(C, cfg.scales)[-1] < 1:  # e.g. 5 channels in 4 groups: 2, 2, 2, -1
        able = [s for s in range(1, min(C, 64) + 1) if split_widths(C, s)[-1] >= 1]
        raise CfgError(
            "scales",
            f"{cfg.scales} groups of {-(-C // cfg.scales)} channels do not fit width {C}; "
            f"allowed: {_allowed(able[:16])}",
        )


def _split_checks(cfg: BlockCfg) -> None:
    """The rules of a ``split`` block: both branches get channels, ``heads`` divide the
    attention share. Checked when the block is built, not in :class:`BlockCfg`: the attention
    branch's own config (the share as its width) must pass BlockCfg's checks as any block's."""
    C, conv = cfg.width, split_share(cfg.width, cfg.split)
    if not 0 < conv < C:
        raise CfgError(
            "split",
            f"{cfg.split!r} of width {C} leaves {conv} conv and {C - conv} attention channels; "
            f"allowed: shares that leave both at least one, {1 / C:.4g} to {(C - 1) / C:.4g}",
        )
    if "heads" in ATTENTIONS[cfg.attention].uses and (C - conv) % cfg.heads:
        able = [h for h in _divisors(C - conv) if C % h == 0]
        raise CfgError(
            "heads",
            f"{cfg.heads} heads do not divide the attention share {C - conv} of width {C} "
            f"(split {cfg.split!r}); allowed: {_allowed(able)}",
        )


@register_op(
    "split",
    uses=("kernel", "heads", "attention", "mlp_ratio", "act", "norm", "pos", "tkernel"),
    check=_split_checks,
    dims=(1, 2, 3),
)
class SplitBlock(nn.Module):
    """Channel-split fusion (EdgeNeXt, Next-ViT): the first ``round(split * C)`` channels go
    through the conv branch (:class:`ConvMixer`: ``kernel``, ``act``, ``norm``), the rest through
    the attention variant (``heads`` must divide that share); the two outputs are concatenated
    and mixed by a 1x1 conv ``fuse``: ``x + fuse(cat(conv(x_c), attn(x_a)))``, then
    ``x + mlp(x)`` as in the parallel block (no MLP at ``mlp_ratio`` 0).
    """

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        C, dim = cfg.width, len(size)
        _split_checks(cfg)
        self.share = split_share(C, cfg.split)  # conv channels; the attention takes the rest
        self.conv = ConvMixer(dim, self.share, cfg.kernel, cfg.act, cfg.norm, cfg.tkernel)
        heads = cfg.heads if "heads" in ATTENTIONS[cfg.attention].uses else 1
        rest = BlockCfg(**{**cfg.__dict__, "width": C - self.share, "heads": heads})
        self.attn = ATTENTIONS[cfg.attention](rest, size)
        self.fuse = conv_nd(dim)(C, C, 1)
        self.mlp = Mlp(C, cfg.mlp_ratio) if cfg.mlp_ratio else None  # 0: lean
        nn.init.xavier_uniform_(self.fuse.weight)
        nn.init.zeros_(self.fuse.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        c = self.share
        y = torch.cat([self.conv(x[:, :c]), self.attn(x[:, c:])], dim=1)  # (B, C, *S)
        x = x + self.fuse(y)
        return x if self.mlp is None else x + self.mlp(x)


# --------------------------------------------------------------------------- video
# Video maps are (B, C, T, H, W). Tokens follow to_tokens' row-major order: token
# n = t * (H * W) + p, frame t and position p = h * W + w.


class FrameAttention(AttentionMixer):
    """Token attention within groups of a video's tokens: each frame's positions
    (``spatial``) or each position's frames (``temporal``); :meth:`groups` cuts them out."""

    across_frames = False  # True: one group per position, its T frames (temporal attention)

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__(cfg, size)
        T, H, W = self.size
        # pos="bias": a relative bias over the group's own axes (frames, or the frame's grid)
        self.rel = None
        if cfg.pos == "bias":
            self.rel = RelPosBias(cfg.heads, (T,) if self.across_frames else (H, W))

    def groups(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, T*H*W, D) -> (B * groups, tokens per group, D)."""
        B, N, D = qkv.shape
        T = self.size[0]
        frames = qkv.reshape(B, T, N // T, D)  # (B, T, H*W, D)
        if self.across_frames:
            return frames.transpose(1, 2).reshape(-1, T, D)  # (B*H*W, T, D)
        return frames.reshape(-1, N // T, D)  # (B*T, H*W, D)

    def ungroup(self, o: torch.Tensor, B: int) -> torch.Tensor:
        """Inverse of :meth:`groups`: (B * groups, tokens per group, D) -> (B, T*H*W, D)."""
        T, D = self.size[0], o.shape[-1]
        if self.across_frames:
            return o.reshape(B, -1, T, D).transpose(1, 2).reshape(B, -1, D)
        return o.reshape(B, -1, D)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, N, 3C) -> (B, N, C)."""
        grouped = self.groups(qkv)  # (B', n, 3C)
        q, k, v = (split_heads(t, self.heads) for t in grouped.chunk(3, dim=-1))  # (B',h,n,hd)
        bias = None if self.rel is None else self.rel.matrix()  # (h, n, n)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B', h, n, hd)
        return self.ungroup(o.transpose(1, 2).flatten(2), qkv.shape[0])


@register_attention("temporal", positions=("learned", "none", "cpe", "bias"), dims=(3,))
class TemporalAttention(FrameAttention):
    """Each position attends across the clip's frames (TimeSformer's time attention): ``H*W``
    sequences of ``T`` tokens, cost ``H*W*T^2`` per head dimension; it sees no neighbour."""

    across_frames = True


@register_attention("spatial", positions=("learned", "none", "cpe", "bias"), dims=(3,))
class SpatialAttention(FrameAttention):
    """Each frame's positions attend to each other, frames apart (TimeSformer's space
    attention; on its own a 2-D attention per frame): ``T`` sequences of ``H*W`` tokens."""


@register_attention("divided", positions=("learned", "none", "cpe", "bias"), dims=(3,))
class DividedAttention(nn.Module):
    """Divided space-time attention (TimeSformer): attention across frames, then within each
    frame on the result, each with its own norm, projections and position encoding:
    ``t = temporal(x); return t + spatial(x + t)``, so that the block's residual makes it
    ``x + t + spatial(x + t)`` (TimeSformer's two residual steps before the MLP)."""

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        self.heads, self.size = cfg.heads, tuple(size)
        self.time = TemporalAttention(cfg, size)
        self.space = SpatialAttention(cfg, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, C, T, H, W)."""
        t = self.time(x)
        return t + self.space(x + t)


@register_op("r2plus1d", uses=("kernel", "act", "norm", "tkernel"), dims=(3,))
class R2Plus1DBlock(nn.Module):
    """(2+1)D convolution (R(2+1)D): a ``(1, k, k)`` conv within each frame, then a
    ``(tkernel, 1, 1)`` conv across frames, each followed by norm and act, added to ``x``:
    ``x + act(norm(conv_t(act(norm(conv_s(x))))))``. The middle width is the block's width
    (not R(2+1)D's parameter-matching width), so it costs ``C^2 (k^2 + tkernel)`` per
    position against ``C^2 k^2 tkernel`` for the 3-D conv it factorises."""

    def __init__(self, cfg: BlockCfg, size: tuple[int, ...]) -> None:
        super().__init__()
        C, k, t = cfg.width, cfg.kernel, cfg.tkernel
        self.space = ConvMixer(3, C, k, cfg.act, cfg.norm)  # (1, k, k): per frame
        self.time = nn.Conv3d(C, C, (t, 1, 1), padding=(t // 2, 0, 0), bias=False)
        self.norm = make_norm(cfg.norm, 3, C)
        self.act = make_act(cfg.act)
        nn.init.kaiming_normal_(self.time.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, C, T, H, W)."""
        return x + self.act(self.norm(self.time(self.space(x))))


# --------------------------------------------------------------------------- network


def transition(dim: int, in_width: int, out_width: int, downsample: str | bool) -> nn.Module:
    """Stage entry (the HVT 1x1 projection), by ``downsample`` (``DOWNSAMPLES``; True: pool):

    ``"conv"``: stride-2 conv k3 (padding 1) to the new width -> BN, even at the same width;
    ``"pool"``: ``AvgPool(2)``, then ``conv1x1 -> BN`` if the width changes;
    ``"patch"``: channel LayerNorm -> conv 2x2 stride 2 with bias (ConvNeXt, EdgeNeXt);
    ``"block"``: the identity (the stage's first block downsamples);
    ``"none"``: ``conv1x1 -> BN`` if the width changes, else the identity.
    """
    mode = {True: "pool", False: "none"}.get(downsample, downsample)
    if mode == "block":
        return nn.Identity()
    # video (dim 3): kernels and strides (1, k, k), so the frames are kept
    if mode == "patch":
        conv = conv_nd(dim)(in_width, out_width, spatial(dim, 2), stride=spatial(dim, 2))
        return nn.Sequential(ChannelNorm(in_width, eps=1e-6), conv)
    if mode == "conv":
        conv = conv_nd(dim)(
            in_width,
            out_width,
            spatial(dim, 3),
            stride=spatial(dim, 2),
            padding=spatial(dim, 1, 0),
            bias=False,
        )
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        return nn.Sequential(conv, batchnorm_nd(dim)(out_width))
    layers: list[nn.Module] = []
    if mode == "pool":
        layers.append(avgpool_nd(dim)(spatial(dim, 2)))
    if in_width != out_width:
        conv = conv_nd(dim)(in_width, out_width, 1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        layers += [conv, batchnorm_nd(dim)(out_width)]
    return nn.Sequential(*layers) if layers else nn.Identity()


def _old_head_keys(state: dict, prefix: str, *args) -> None:
    """Weights saved before heads were modules: ``norm.*`` and ``head.{weight,bias}``."""
    for name in ("weight", "bias"):
        if prefix + f"head.{name}" in state:  # the old Linear head
            state[prefix + f"head.fc.{name}"] = state.pop(prefix + f"head.{name}")
        if prefix + f"norm.{name}" in state:
            state[prefix + f"head.norm.{name}"] = state.pop(prefix + f"norm.{name}")


CONFIG: NetCfg | None = None  # the network FusionNet() builds; an exported file sets it


class FusionNet(nn.Module):
    """stem -> stages -> global pool -> LayerNorm -> Linear, for sequences, images and video."""

    def __init__(self, cfg: NetCfg | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else CONFIG
        if cfg is None:
            raise ValueError("FusionNet needs a NetCfg")
        self.cfg, dim = cfg, len(cfg.size)
        self.stem = STEMS[cfg.stem](cfg)
        stages, width, prev = [], cfg.stem_width, cfg.stem_size()
        for st, size in zip(cfg.stages, cfg.stage_sizes()):
            if st.depth == 0:
                continue  # skipped: no transition, the width carries over
            block = OPS[st.block.operator]
            layers = [transition(dim, width, st.block.width, st.downsample)]
            if st.downsample == "block":  # the first block halves the map, changes the width
                seen = {"in_size": prev} if hasattr(block, "takes_in_size") else {}
                layers.append(block(st.block, size, in_width=width, stride=2, **seen))
            layers += [block(st.block, size) for _ in range(len(layers) - 1, st.depth)]
            stages.append(nn.Sequential(*layers))
            width, prev = st.block.width, size
        self.stages = nn.Sequential(*stages)
        self.head = HEADS[cfg.head](cfg, width)
        self._register_load_state_dict_pre_hook(_old_head_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S) -> logits (B, classes)."""
        x = self.stages(self.stem(x))  # (B, W, *S_last)
        return self.head(x)
