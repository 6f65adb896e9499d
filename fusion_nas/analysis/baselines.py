"""Baselines: reference networks trained with the protocol of searched networks.

Each baseline has a name, a one-line description, a builder for a given search space (its
input shape and classes) and exact MACs and parameters (batch of one):

- ``paper-cnn``: the MNIST-1D paper's CNN, three convolutions of 25 channels (kernel 5, 3, 3,
  stride 2, padding 1) with ReLU, flattened into a linear head; ``Conv2d`` on images. On
  MNIST-1D (1x40): 5,210 params, 31,750 MACs.
- ``paper-gru``: the paper's GRU, bidirectional with hidden size 6 over the sequence, the
  outputs of every step flattened into a linear head. On MNIST-1D: 5,134 params, 14,880 MACs.
  Sequence spaces only.
- ``resnet20``: He et al.'s CIFAR ResNet-20 ("Deep residual learning", 2016, section 4.2): a
  3x3 conv of 16 channels, three stages of three basic blocks (two 3x3 convs with BN and ReLU)
  at 16, 32 and 64 channels, the first conv of stages 2 and 3 of stride 2, global average
  pooling and a linear head. Shortcuts are the paper's option A: identity, and where the size
  halves the strided identity ``x[..., ::2, ::2]`` zero-padded to the new width (no parameters,
  no MACs). On CIFAR-10 (3x32x32): 40,551,040 MACs and 269,722 params (published: 0.27M params;
  the 40.8M MACs often quoted count BN and additions too). Image spaces only; its ``Conv2d``
  takes the space's channels and size.
- the article's designs as :class:`~fusion_nas.model.arch.Architecture` s of the space, so they are
  built, costed and exported like searched networks: ``all-conv``, ``all-attention``, ``can``
  (parallel conv and channel attention everywhere), ``gated`` (gated everywhere) and ``hvt``
  (conv stages first, attention stages after: the first ``ceil(n/2)`` stages conv).
- for video spaces, the article's three video rows and a control, designs as above:
  ``video-3dcnn`` (conv across frames, the largest ``tkernel``, in every stage),
  ``video-transformer`` (joint space-time ``global`` attention in every stage),
  ``video-hybrid`` (conv within each frame in the first ``ceil(n/2)`` stages, ``temporal``
  attention across frames after, as ``hvt``), ``video-parallel`` (``parallel``: conv within
  each frame beside ``temporal`` attention, every stage) and ``frame-average`` (conv within
  each frame only: a 2-D network whose head averages the frames, blind to their order).
- the space's zoo members (``[zoo] members``: the field's hybrids of :mod:`fusion_nas.model.zoo`,
  scaled to the space's input), named ``zoo:<member>`` (:func:`zoo_baselines`); ``fusion-nas
  baselines SPACE --zoo`` trains them.

A design takes, in every stage, the middle value the space allows for kernel, heads, width,
depth (at least 1) and downsampling (the lower middle of an even list; numbers sorted, the
downsampling choices in the space's order), the network's MLP ratio where the stage offers it
(else the middle one) and ``global`` attention where offered (else the first variant other than
``channel``). A design the space cannot express (an operator or attention variant a stage does
not offer) is :class:`Unavailable`, with the reason.

The custom networks' costs are counted analytically (checked against PyTorch's FLOP counter in
the tests); the designs' come from :func:`fusion_nas.model.cost.arch_cost`. Training
(:func:`train_baseline`) uses :class:`fusion_nas.analysis.retrain.TrainingProtocol`: the proxy
score on
the search's validation split, then ``retrain``'s final schedule and one test evaluation;
:func:`train_baselines` trains a selection in turn and stores each beside the searches
(:meth:`fusion_nas.store.store.Store.save_baseline`), as ``fusion-nas baselines`` and
``benchmarks/front_vs_baselines.py`` do.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from fusion_nas._version import __version__
from fusion_nas.errors import FusionNasError, TrialFailed, allowed, one_line
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.build import build_model
from fusion_nas.model.cost import arch_cost
from fusion_nas.model.nets import conv_nd, reads
from fusion_nas.model.registry import op_uses
from fusion_nas.model.space import SearchSpace, StageSpec
from fusion_nas.store.records import BaselineRecord, BaselineSetRecord
from fusion_nas.training.devices import device_name
from fusion_nas.training.protocol import RETRAIN_EPOCHS, TrainingProtocol

if TYPE_CHECKING:
    from fusion_nas.store.store import Store

__all__ = [
    "BASELINES",
    "Baseline",
    "BaselineError",
    "BaselineRun",
    "PaperCNN",
    "PaperGRU",
    "ResNet20",
    "Unavailable",
    "baselines_for",
    "collection_record",
    "select",
    "select_zoo",
    "train_baseline",
    "train_baselines",
    "zoo_baselines",
]


class BaselineError(FusionNasError):
    """An unknown baseline name, or one the space cannot express."""


class _NotExpressible(Exception):
    """Raised by a resolver: the baseline does not exist for this space (the reason)."""


@dataclass(frozen=True)
class Baseline:
    """A baseline resolved for one space: what to build and what it costs."""

    name: str
    description: str
    arch: Architecture | None  # None: a network written outside the toolkit
    macs: int
    params: int
    builder: Callable[[], nn.Module]

    def build(self) -> nn.Module:
        """A fresh model (weights from torch's current seed)."""
        return self.builder()

    def describe(self) -> str:
        """The architecture stage by stage, or the description of a custom network."""
        return self.arch.describe() if self.arch is not None else self.description


@dataclass(frozen=True)
class Unavailable:
    """A baseline the space cannot express, and why."""

    name: str
    description: str
    reason: str


# --------------------------------------------------------------------------- custom networks


def _out(n: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis."""
    return (n + 2 * padding - kernel) // stride + 1


_CNN_LAYERS = ((25, 5), (25, 3), (25, 3))  # (out channels, kernel); stride 2, padding 1


class PaperCNN(nn.Module):
    """The MNIST-1D paper's CNN: ``Conv(C,25,5,s2,p1)``-ReLU-``Conv(25,25,3,s2,p1)``-ReLU-
    ``Conv(25,25,3,s2,p1)``-ReLU-flatten-``Linear(25*S', classes)``; nd by the input."""

    def __init__(self, channels: int, size: tuple[int, ...], classes: int) -> None:
        super().__init__()
        conv = conv_nd(len(size))
        layers: list[nn.Module] = []
        c = channels
        for width, k in _CNN_LAYERS:
            layers += [conv(c, width, k, stride=2, padding=1), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * math.prod(paper_cnn_size(size)), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, classes)."""
        return self.head(self.features(x).flatten(1))


def paper_cnn_size(size: tuple[int, ...]) -> tuple[int, ...]:
    """Spatial size after the CNN's three convolutions."""
    for _, k in _CNN_LAYERS:
        size = tuple(_out(n, k, 2, 1) for n in size)
    return size


def paper_cnn_cost(channels: int, size: tuple[int, ...], classes: int) -> tuple[int, int]:
    """``(MACs, params)`` of :class:`PaperCNN`, counted by hand."""
    macs = params = 0
    c = channels
    for width, k in _CNN_LAYERS:
        size = tuple(_out(n, k, 2, 1) for n in size)
        taps = c * k ** len(size)  # weights per output value
        macs += width * taps * math.prod(size)
        params += width * taps + width
        c = width
    features = c * math.prod(size)
    return macs + features * classes, params + features * classes + classes


GRU_HIDDEN = 6


class PaperGRU(nn.Module):
    """The MNIST-1D paper's GRU: ``GRU(C, 6, bidirectional)`` over the sequence, every step's
    output (2 x 6 values) flattened into ``Linear(L * 12, classes)``."""

    def __init__(self, channels: int, length: int, classes: int) -> None:
        super().__init__()
        self.gru = nn.GRU(channels, GRU_HIDDEN, batch_first=True, bidirectional=True)
        self.head = nn.Linear(length * 2 * GRU_HIDDEN, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, L) -> (B, classes)."""
        out, _ = self.gru(x.transpose(1, 2))  # (B, L, C) -> (B, L, 2 * hidden)
        return self.head(out.flatten(1))


def paper_gru_cost(channels: int, length: int, classes: int) -> tuple[int, int]:
    """``(MACs, params)`` of :class:`PaperGRU`: ``3 * (C*h + h*h)`` MACs per step and
    direction (the three gates' input and hidden projections), plus the linear head."""
    h = GRU_HIDDEN
    gates = 3 * (channels * h + h * h)
    features = length * 2 * h
    macs = 2 * length * gates + features * classes
    params = 2 * (gates + 2 * 3 * h) + features * classes + classes  # two bias vectors of 3h
    return macs, params


RESNET20_WIDTHS = (16, 32, 64)  # channels of the stem and of the three stages
RESNET20_BLOCKS = 3  # basic blocks per stage: 6 * 3 + 2 = 20 weighted layers


class _BasicBlock(nn.Module):
    """``relu(bn(conv3x3(relu(bn(conv3x3_stride(x))))) + shortcut(x))``; the shortcut is the
    identity, or (option A) the strided identity zero-padded in channels where the block
    halves the map and widens it."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.extra = stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H / s), ceil(W / s))."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x[:, :, :: self.stride, :: self.stride]  # ceil(H / s): as the padded conv
        if self.extra:  # zero channels, half before and half after (no parameters)
            half = self.extra // 2
            short = F.pad(short, (0, 0, 0, 0, half, self.extra - half))
        return torch.relu(out + short)


class ResNet20(nn.Module):
    """He et al.'s CIFAR ResNet-20 with option-A shortcuts: ``conv3x3(C, 16)``-BN-ReLU, three
    stages of :data:`RESNET20_BLOCKS` basic blocks at :data:`RESNET20_WIDTHS` (stride 2 on
    entering stages 2 and 3), global average pooling, ``Linear(64, classes)``. He (Kaiming
    normal) initialisation of the convolutions, as in the paper."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        w0 = RESNET20_WIDTHS[0]
        self.stem = nn.Sequential(
            nn.Conv2d(channels, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        c = w0
        for i, width in enumerate(RESNET20_WIDTHS):
            for j in range(RESNET20_BLOCKS):
                blocks.append(_BasicBlock(c, width, 2 if i and not j else 1))
                c = width
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Linear(c, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, classes)."""
        x = self.stages(self.stem(x))  # (B, 64, ceil(H / 4), ceil(W / 4))
        return self.head(x.mean(dim=(2, 3)))


def resnet20_cost(channels: int, size: tuple[int, int], classes: int) -> tuple[int, int]:
    """``(MACs, params)`` of :class:`ResNet20` on ``channels x size`` images, counted by hand:
    every 3x3 conv ``C_in * C_out * 9`` MACs per output pixel (no bias), two parameters per
    BN channel, the head ``64 * classes`` MACs; the shortcuts cost nothing."""
    pixels = math.prod(size)
    c = RESNET20_WIDTHS[0]
    macs = channels * c * 9 * pixels
    params = channels * c * 9 + 2 * c
    for i, width in enumerate(RESNET20_WIDTHS):
        for j in range(RESNET20_BLOCKS):
            if i and not j:  # the stride-2 conv: ceil(n / 2) per axis
                size = (-(-size[0] // 2), -(-size[1] // 2))
                pixels = math.prod(size)
            weights = c * width * 9 + width * width * 9
            macs += weights * pixels
            params += weights + 2 * 2 * width
            c = width
    return macs + c * classes, params + c * classes + classes


def _resnet20(space: SearchSpace) -> tuple[Architecture | None, Callable[[], nn.Module], int, int]:
    if space.kind != "image":
        raise _NotExpressible(f"image spaces only; space {space.name!r} takes {space.kind}s")
    h, w = space.size
    macs, params = resnet20_cost(space.channels, (h, w), space.classes)
    return None, lambda: ResNet20(space.channels, space.classes), macs, params


def _paper_cnn(space: SearchSpace) -> tuple[Architecture | None, Callable[[], nn.Module], int, int]:
    if min(paper_cnn_size(space.size)) < 1:
        raise _NotExpressible(f"input {space.size} is too small for three stride-2 convolutions")
    macs, params = paper_cnn_cost(space.channels, space.size, space.classes)
    return None, lambda: PaperCNN(space.channels, space.size, space.classes), macs, params


def _paper_gru(space: SearchSpace) -> tuple[Architecture | None, Callable[[], nn.Module], int, int]:
    if space.kind != "sequence":
        raise _NotExpressible(f"sequence spaces only; space {space.name!r} takes {space.kind}s")
    (length,) = space.size
    macs, params = paper_gru_cost(space.channels, length, space.classes)
    return None, lambda: PaperGRU(space.channels, length, space.classes), macs, params


# --------------------------------------------------------------------------- toolkit designs


def _middle(values: Sequence[Any], *, ordered: bool = True) -> Any:
    """The middle value (lower middle of an even list); numbers sorted first."""
    items = sorted(values) if ordered else list(values)
    return items[(len(items) - 1) // 2]


def _stage(
    space: SearchSpace,
    i: int,
    spec: StageSpec,
    op: str,
    attention: str | None,
    frames: str | None = None,
) -> StageChoice:
    """The design's choice for stage ``i``: operator ``op``, typical values elsewhere;
    ``frames`` (video): ``"one"`` a conv within each frame (the smallest ``tkernel``),
    ``"all"`` across frames (the largest), ``None`` the middle one."""
    if op not in spec.operator:
        raise _NotExpressible(
            f"stage {i} does not offer operator {op!r}; it offers {allowed(spec.operator)}"
        )
    uses = op_uses(op)
    values: dict[str, Any] = {}
    if "kernel" in uses:
        values["kernel"] = _middle(spec.kernel)
    variant = None
    if "attention" in uses:
        if attention is not None:
            if attention not in spec.attention:
                raise _NotExpressible(
                    f"stage {i} does not offer {attention!r} attention; "
                    f"it offers {allowed(spec.attention)}"
                )
            variant = attention
        elif "global" in spec.attention:
            variant = "global"
        else:
            variant = next((v for v in spec.attention if v != "channel"), spec.attention[0])
        values["attention"] = variant
    if "heads" in reads(op, variant):
        values["heads"] = _middle(spec.heads)
    if "tkernel" in uses:
        pick = {"one": min, "all": max}.get(frames, _middle)
        values["tkernel"] = pick(spec.tkernel)
        if frames == "all" and values["tkernel"] == 1:
            raise _NotExpressible(f"stage {i} offers no temporal kernel above 1 (tkernel)")
    if "mlp_ratio" in uses:
        ratio = space.mlp_ratio if space.mlp_ratio in spec.mlp_ratio else _middle(spec.mlp_ratio)
        values["mlp_ratio"] = float(ratio)
    depths = [d for d in spec.depth if d]
    if not depths:
        raise _NotExpressible(f"stage {i} allows depth 0 only")
    return StageChoice(
        op,
        _middle(spec.width),
        _middle(depths),
        downsample=_middle(spec.downsample, ordered=False),
        **values,
    )


def _design(
    operators: Callable[[int], list[str]],
    attention: str | None = None,
    frames: str | None = None,
    video: bool = False,
) -> Callable[[SearchSpace], tuple[Architecture | None, Callable[[], nn.Module], int, int]]:
    """A resolver of a design: ``operators(n)`` names the operator of each of n stages;
    ``attention`` the variant, ``frames`` the temporal kernel (:func:`_stage`); ``video``: for
    video spaces only."""

    def resolve(
        space: SearchSpace,
    ) -> tuple[Architecture | None, Callable[[], nn.Module], int, int]:
        if video and space.kind != "video":
            raise _NotExpressible(f"video spaces only; space {space.name!r} takes {space.kind}s")
        ops = operators(len(space.stages))
        stages = [
            _stage(space, i, spec, op, attention, frames)
            for i, (spec, op) in enumerate(zip(space.stages, ops))
        ]
        try:
            arch = space.validate(Architecture(space.name, tuple(stages)))
            cost = arch_cost(arch, space)
        except FusionNasError as exc:
            raise _NotExpressible(one_line(exc)) from None
        return arch, lambda: build_model(arch, space), cost.macs, cost.params

    return resolve


def _hvt_operators(n: int) -> list[str]:
    if n < 2:
        raise _NotExpressible("needs at least two stages (conv first, attention after)")
    conv = math.ceil(n / 2)
    return ["conv"] * conv + ["attention"] * (n - conv)


@dataclass(frozen=True)
class _Definition:
    description: str
    resolve: Callable[[SearchSpace], tuple[Architecture | None, Callable[[], nn.Module], int, int]]


BASELINES: dict[str, _Definition] = {
    "paper-cnn": _Definition(
        "MNIST-1D paper CNN: 3 stride-2 convs of 25 channels, ReLU, linear head", _paper_cnn
    ),
    "paper-gru": _Definition(
        "MNIST-1D paper GRU: bidirectional, hidden 6, all steps' outputs to a linear head",
        _paper_gru,
    ),
    "resnet20": _Definition(
        "ResNet-20 (He et al. 2016, CIFAR): 3 stages of 3 basic blocks at 16/32/64 channels, "
        "option-A shortcuts",
        _resnet20,
    ),
    "all-conv": _Definition("conv blocks in every stage", _design(lambda n: ["conv"] * n)),
    "all-attention": _Definition(
        "attention blocks in every stage", _design(lambda n: ["attention"] * n)
    ),
    "can": _Definition(
        "CAN: parallel conv and channel attention (squeeze-excitation) in every stage",
        _design(lambda n: ["parallel"] * n, attention="channel"),
    ),
    "gated": _Definition(
        "gated conv/attention blend in every stage", _design(lambda n: ["gated"] * n)
    ),
    "hvt": _Definition(
        "HVT: conv stages first, attention stages after (first half conv)",
        _design(_hvt_operators),
    ),
    # the article's video rows (Kinetics-400: 3-D CNN, space-time transformer, hybrid) and
    # the control that proves a video dataset needs time
    "video-3dcnn": _Definition(
        "pure 3-D CNN: conv blocks across frames (the largest tkernel) in every stage",
        _design(lambda n: ["conv"] * n, frames="all", video=True),
    ),
    "video-transformer": _Definition(
        "pure space-time transformer: joint space-time (global) attention in every stage",
        _design(lambda n: ["attention"] * n, attention="global", video=True),
    ),
    "video-hybrid": _Definition(
        "the article's hybrid: conv within each frame in the first stages, attention across "
        "frames (temporal) after (first half conv)",
        _design(_hvt_operators, attention="temporal", frames="one", video=True),
    ),
    "video-parallel": _Definition(
        "conv within each frame in parallel with attention across frames (temporal) in every stage",
        _design(lambda n: ["parallel"] * n, attention="temporal", frames="one", video=True),
    ),
    "frame-average": _Definition(
        "2-D control: conv within each frame only (tkernel 1), frames averaged by the head",
        _design(lambda n: ["conv"] * n, frames="one", video=True),
    ),
}
"""Every baseline by name, in the order they are listed and trained."""


ZOO_PREFIX = "zoo:"  # baseline names of a space's zoo members: zoo:<member>


def zoo_baselines(space: SearchSpace) -> list[Baseline]:
    """The zoo members of ``space`` (its ``[zoo] members``, scaled to its input) as
    baselines named ``zoo:<member>``, in the order the space lists them."""
    out = []
    for name in space.zoo_members:
        arch = space.member_arch(name)
        cost = arch_cost(arch, space)
        member = space.member_space(name)
        description = f"zoo network {name}, scaled: {member.description}"
        out.append(
            Baseline(
                f"{ZOO_PREFIX}{name}",
                description,
                arch,
                cost.macs,
                cost.params,
                lambda arch=arch: build_model(arch, space),
            )
        )
    return out


def select_zoo(space: SearchSpace, only: Sequence[str] | None = None) -> list[Baseline]:
    """The zoo baselines to train for ``space`` (``only``: these members, with or without the
    ``zoo:`` prefix). Raises :class:`BaselineError` for a space without members or a name that
    is not one of them."""
    found = {b.name: b for b in zoo_baselines(space)}
    if not found:
        raise BaselineError(
            f"space {space.name!r} lists no zoo members; allowed: a space with "
            "[zoo] members = [...] (fusion_nas/zoo/)"
        )
    if not only:
        return list(found.values())
    chosen = []
    for name in dict.fromkeys(only):
        key = name if name.startswith(ZOO_PREFIX) else f"{ZOO_PREFIX}{name}"
        if key not in found:
            raise BaselineError(
                f"{name!r} is not a zoo member of space {space.name!r}; allowed: "
                f"{allowed(n[len(ZOO_PREFIX) :] for n in found)}"
            )
        chosen.append(found[key])
    return chosen


def _resolve(name: str, space: SearchSpace) -> Baseline | Unavailable:
    definition = BASELINES[name]
    try:
        arch, builder, macs, params = definition.resolve(space)
    except _NotExpressible as exc:
        return Unavailable(name, definition.description, str(exc))
    return Baseline(name, definition.description, arch, int(macs), int(params), builder)


def baselines_for(space: SearchSpace) -> list[Baseline | Unavailable]:
    """Every baseline of :data:`BASELINES` for ``space``: resolved, or unavailable with why."""
    return [_resolve(name, space) for name in BASELINES]


def select(
    space: SearchSpace, only: Sequence[str] | None = None
) -> tuple[list[Baseline], list[Unavailable]]:
    """The baselines to train for ``space`` (``only``: these names) and those left out.

    Raises :class:`BaselineError` for a name that is not a baseline, or one asked for by name
    that the space cannot express.
    """
    if only:
        unknown = [n for n in only if n not in BASELINES]
        if unknown:
            raise BaselineError(f"unknown baseline {unknown[0]!r}; allowed: {allowed(BASELINES)}")
        names = list(dict.fromkeys(only))
    else:
        names = list(BASELINES)
    resolved = [_resolve(name, space) for name in names]
    missing = [b for b in resolved if isinstance(b, Unavailable)]
    if only and missing:
        b = missing[0]
        offered = [x.name for x in baselines_for(space) if isinstance(x, Baseline)]
        raise BaselineError(
            f"baseline {b.name!r} is not available for space {space.name!r}: {b.reason}; "
            f"available: {allowed(offered)}"
        )
    return [b for b in resolved if isinstance(b, Baseline)], missing


# --------------------------------------------------------------------------- training


def collection_record(
    space: SearchSpace, dataset: str, data_dir: str | None = None
) -> BaselineSetRecord:
    """The record of the collection that holds ``space``'s baselines on ``dataset``."""
    return BaselineSetRecord(
        space_name=space.name,
        space_toml=space.source,
        dataset=dataset,
        kind=space.kind,
        channels=space.channels,
        size=tuple(space.size),
        classes=space.classes,
        data_dir=data_dir,
        version=__version__,
    )


def train_baseline(
    baseline: Baseline,
    protocol: TrainingProtocol,
    *,
    epochs: int = RETRAIN_EPOCHS,
    on_epoch: Callable[[str, int], None] | None = None,
) -> BaselineRecord:
    """Proxy-train ``baseline`` (validation accuracy), then retrain it and test it once.

    ``on_epoch(phase, epoch)`` is called after every epoch, ``phase`` ``"proxy"`` or
    ``"final"``. The thread count in use is recorded: on a CPU the result depends on it.
    """
    threads = torch.get_num_threads()

    def report(phase: str) -> Callable[[int, float | None], None] | None:
        if on_epoch is None:
            return None
        return lambda epoch, _acc: on_epoch(phase, epoch)

    schedule = protocol.schedule(epochs)  # a bad schedule fails before any training
    _, proxy = protocol.proxy_score(baseline.build, on_epoch=report("proxy"))
    _, final = protocol.retrain(baseline.build, epochs, on_epoch=report("final"))
    arch = baseline.arch
    return BaselineRecord(
        name=baseline.name,
        description=baseline.description,
        arch=arch.to_dict() if arch is not None else None,
        arch_desc=baseline.describe(),
        macs=baseline.macs,
        params=baseline.params,
        val_acc=proxy.val_acc,
        test_acc=final.test_acc,
        epochs=epochs,
        proxy=protocol.proxy.to_dict(),
        seed=protocol.seed,
        threads=threads,
        device=device_name(protocol.device),
        seconds=round(proxy.seconds + final.seconds, 2),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        arch_id=arch.arch_id if arch is not None else None,
        curve=list(proxy.curve),
        proxy_seconds=round(proxy.seconds, 2),
        train_samples=final.train_samples,
        test_samples=final.test_samples,
        lr=schedule.lr,
        batch_size=schedule.batch_size,
        weight_decay=schedule.weight_decay,
    )


@dataclass
class BaselineRun:
    """What :func:`train_baselines` trained: the stored records and the failures, in order."""

    records: list[BaselineRecord]
    failed: list[tuple[str, str]]  # (name, one-line reason): not stored
    study: str = ""  # the collection the records are stored in ("" when none was stored)


def train_baselines(
    chosen: Sequence[Baseline],
    protocol: TrainingProtocol,
    store: Store,
    *,
    epochs: int = RETRAIN_EPOCHS,
    on_epoch: Callable[[int, Baseline, str, int], None] | None = None,
    on_result: Callable[[int, Baseline, BaselineRecord | None, str | None], None] | None = None,
) -> BaselineRun:
    """Train every baseline of ``chosen`` in turn (:func:`train_baseline`) and store each.

    Each record is stored in ``store``'s collection of the protocol's space and dataset as soon
    as it is trained (an earlier entry of the same name is replaced), so an interrupted run
    keeps what finished. A baseline whose training fails (:class:`TrialFailed`, a non-finite
    loss) is reported and not stored; the others go on. ``on_epoch(i, baseline, phase, epoch)``
    is called after every epoch of the ``i``-th baseline (``phase`` ``"proxy"`` or
    ``"final"``), ``on_result(i, baseline, record, reason)`` once it ended: the stored record,
    or ``None`` and the reason it failed.
    """
    collection = collection_record(protocol.space, protocol.dataset, protocol.data_dir)
    run = BaselineRun([], [])
    for i, b in enumerate(chosen):

        def tick(phase: str, epoch: int, b: Baseline = b, i: int = i) -> None:
            if on_epoch is not None:
                on_epoch(i, b, phase, epoch)

        try:
            rec = train_baseline(b, protocol, epochs=epochs, on_epoch=tick)
        except TrialFailed as exc:  # a NaN loss: report it, keep the earlier entry
            run.failed.append((b.name, one_line(exc)))
            if on_result is not None:
                on_result(i, b, None, run.failed[-1][1])
            continue
        run.study = store.save_baseline(collection, rec)
        run.records.append(rec)
        if on_result is not None:
            on_result(i, b, rec, None)
    return run
