"""Inside a trained fusion network: which branch each fused block uses, where the cost goes,
where the network looks, and what its attention branches attend to. Plain data, no drawing
(:mod:`fusion_nas.analysis.explain_figures` draws it).

:func:`explain_model` reads a model and labelled VALIDATION data; :func:`explain_trial` takes a
stored search's handle and one of its trials, gets the trial's trained weights through
:func:`fusion_nas.analysis.retrain.trial_weights` (a ``state_dict`` file, the weights of
``fusion-nas retrain``, or a deterministic re-run of the trial's proxy training, as ``export
--weights`` does) and its validation split. The test split is never read; this module never
reads the store itself.

What is measured, per block of every stage (``stage``: index in the architecture, skipped
stages included; ``block``: 0..depth-1):

- ``parallel`` (``x + a * conv(x) + b * attn(x)``): the learned per-channel weights ``a`` and
  ``b`` (fixed after training: mean and spread over channels), and the conv share of the fused
  update, ``|a * conv(x)| / (|a * conv(x)| + |b * attn(x)|)`` over the validation set;
- ``gated`` (``x + s * (g * conv(x) + (1 - g) * attn(x))``): the gate ``g`` depends on the
  input, so it is collected with forward hooks on every validation sample (mean over channels
  per sample; mean and spread over samples, per channel and per class), the scale ``s``, and the
  conv share as above;
- ``split`` (``x + fuse(cat(conv(x_c), attn(x_a)))``): the conv branch's share of the
  channels ``conv_channels`` (fixed), the branch output norms ``conv_norm`` and ``attn_norm``
  (L2 over channels and positions; mean and spread over samples), and the conv share;
- per class: the class means and ``eta2``, the share of the sample-to-sample variance that the
  class explains (one-way ANOVA); ``differs`` when it reaches :data:`CLASS_ETA2`;
- cost: exact MACs (batch of one) and parameters of the stem, every stage and the head, and per
  stage of its parts (transition, conv, attention, MLP, gate), counted by
  :func:`fusion_nas.model.cost.count_cost` on shapes only;
- video (``kind = "video"``, maps ``(T, H, W)``): per fused block ``temporal``, the branch
  that reaches across frames (``attention``, ``conv``, ``both`` or ``none``: see
  :func:`reaches_frames`) and ``temporal_share``, the share of the fused update that comes from
  it (from the conv share: the attention's is ``1 - conv_share``), per class as the others;
- saliency: Grad-CAM on one stage's output map (the last by default) for the predicted class,
  upsampled to the input (trilinear over ``(T, H, W)`` on video); for sequences also the
  input-gradient saliency;
- attention: for ``global`` and ``window`` mixers the softmax token-token map (a window mixer's
  maps placed in the full token matrix, zero across windows); for ``linear`` the implicit map
  ``phi(q) . phi(k)`` normalised per query (the model never forms it, but its output is exactly
  this map times V); for ``channel`` (squeeze-excitation) the per-channel weights, as there is
  no token map; for ``xca`` (cross-covariance) the attention each channel receives from the
  channels of its head. Means over heads and the saliency samples. On video: ``temporal``
  mixers (and the ``.time`` part of ``divided``) give the ``(T, T)`` frame-to-frame map
  (``what = "frames"``, mean over positions too); ``spatial`` mixers (and ``.space``) the
  ``(H*W, H*W)`` map within a frame (mean over frames too); mixers over the whole clip
  (``global``, ``window``, ``grid``, ``linear``) their token map as above plus the
  frame-to-frame map derived from it (the attention a query puts on each frame, summed over
  that frame's positions, mean over the query frame's positions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from fusion_nas.errors import FusionNasError, allowed
from fusion_nas.model import nets
from fusion_nas.model.cost import count_cost, count_params

if TYPE_CHECKING:
    from fusion_nas.model.arch import Architecture
    from fusion_nas.store.handles import StoredSearch, StoredTrial

__all__ = [
    "CLASS_ETA2",
    "DEFAULT_SAMPLES",
    "MAX_TOKENS",
    "AttentionMap",
    "BlockFusion",
    "ExplainError",
    "Explanation",
    "Saliency",
    "StageCost",
    "Stat",
    "explain_model",
    "explain_trial",
    "grad_cam",
    "stage_costs",
    "reaches_frames",
    "stage_numbers",
]

CLASS_ETA2 = 0.1  # "differs per class": the class explains >= 10% of the variance
MAX_TOKENS = 256  # larger token maps keep only the attention each token receives
DEFAULT_SAMPLES = 4  # saliency and attention samples
MAX_VAL = 2048  # validation samples the fusion statistics read (the first ones)
_BATCH = 256
_PARTS = {"mixer": "conv", "conv": "conv", "attn": "attention", "mlp": "mlp", "gate": "gate"}
_PARTS |= {"convs": "conv", "xca": "attention", "fuse": "fusion"}  # sdta and split blocks
_TEMPORAL = ("none", "attention", "conv", "both")  # BlockFusion.temporal, by (conv, attention)


class ExplainError(FusionNasError):
    """A trial or model cannot be explained (no weights, bad weights file, bad option)."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Stat:
    """One value over a set: mean, standard deviation, min and max."""

    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, values: torch.Tensor) -> Stat:
        """The statistics of every element of ``values``."""
        v = values.detach().double().flatten()
        std = float(v.std(unbiased=False)) if v.numel() > 1 else 0.0
        return cls(float(v.mean()), std, float(v.min()), float(v.max()))


@dataclass(frozen=True)
class BlockFusion:
    """The fusion of one ``parallel``, ``gated`` or ``split`` block (see the module docstring).

    ``weights``: name -> statistic over channels (``a``, ``b``) or over validation samples
    (``g``, ``conv_share``; ``s`` over channels); ``channels``: name -> per-channel values (the
    mean over samples for ``g``); ``per_class``: name -> class means (index = class), for the
    input-dependent values only; ``eta2``: name -> share of variance explained by the class.
    ``temporal`` (video only, else ``""``): the branch that reaches across frames,
    ``attention``, ``conv``, ``both`` or ``none`` (:func:`reaches_frames`); the share of the
    fused update it makes is ``temporal_share`` in ``weights`` and ``per_class``.
    """

    stage: int
    block: int
    operator: str
    attention: str
    weights: dict[str, Stat]
    channels: dict[str, list[float]]
    per_class: dict[str, list[float | None]] = field(default_factory=dict)
    eta2: dict[str, float] = field(default_factory=dict)
    temporal: str = ""

    @property
    def label(self) -> str:
        """``s0.b1 parallel(global)``."""
        return f"s{self.stage}.b{self.block} {self.operator}({self.attention})"

    def differs(self, name: str) -> bool:
        """Whether ``name`` differs per class (``eta2 >= CLASS_ETA2``)."""
        return self.eta2.get(name, 0.0) >= CLASS_ETA2


@dataclass(frozen=True)
class StageCost:
    """MACs (batch of one) and parameters of one part of the network.

    ``name``: ``stem``, ``stage N`` or ``head``; ``parts``: part -> ``(macs, params)``.
    """

    name: str
    operator: str
    macs: int
    params: int
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Saliency:
    """Where the network looks, for a few validation samples.

    ``inputs``: the samples, ``(K, C, *S)`` as nested lists; ``maps``: Grad-CAM in ``[0, 1]``
    at input resolution, ``(K, *S)``; ``input_grad``: ``|d score / d x|`` summed over channels,
    normalised, ``(K, *S)`` (sequences only, else ``None``); ``labels`` / ``predicted``: true
    and predicted class per sample; ``stage``: the stage whose map Grad-CAM reads.
    """

    kind: str
    stage: int
    inputs: list
    maps: list
    labels: list[int]
    predicted: list[int]
    input_grad: list | None = None


@dataclass(frozen=True)
class AttentionMap:
    """One attention mixer's map (see the module docstring for what each variant shows).

    ``what``: ``tokens`` (``matrix`` is (N, N) query x key, or ``None`` above
    :data:`MAX_TOKENS`), ``frames`` (video: ``matrix`` is (T, T) query frame x key frame,
    ``size`` is ``(T,)``), or ``channels`` (``received`` holds the per-channel weights);
    ``received``: attention each token receives (mean over queries), laid out as the map
    ``size`` (channels: one weight per channel); ``note``: what is shown, in words.
    """

    stage: int
    block: int
    operator: str
    variant: str
    heads: int
    size: tuple[int, ...]
    what: str
    note: str
    received: list
    matrix: list | None = None

    @property
    def label(self) -> str:
        """``s1.b0 attention(window)``."""
        return f"s{self.stage}.b{self.block} {self.operator}({self.variant})"


@dataclass(frozen=True)
class Explanation:
    """Everything :func:`explain_model` measured; ``to_dict()`` is JSON-able."""

    kind: str
    classes: int
    val_samples: int
    fusion: list[BlockFusion]
    costs: list[StageCost]
    saliency: Saliency | None
    attention: list[AttentionMap]
    accuracy: float | None = None  # on the validation samples read
    source: str = ""  # where the weights came from
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dataclasses as dicts)."""
        return asdict(self)


# --------------------------------------------------------------------------- structure


def stage_numbers(arch: Architecture) -> list[int]:
    """The number of every built stage: its position in the architecture string.

    A skipped stage (``skip``) builds nothing but keeps its number, so the stage after a
    skipped stage 1 is stage 2 in every view (``s2.b0``, "Grad-CAM on stage 2").
    """
    return [i for i, choice in enumerate(arch.stages) if choice.depth]


def _live(model: nets.FusionNet, numbers: Sequence[int] | None) -> list[int]:
    """The number of each of ``model.stages``: ``numbers``, else positions in ``model.cfg``."""
    built = [i for i, st in enumerate(model.cfg.stages) if st.depth]
    if numbers is None:
        return built
    numbers = [int(n) for n in numbers]
    if len(numbers) != len(built):
        raise ExplainError(
            f"{len(numbers)} stage numbers given for a network of {len(built)} built stages"
        )
    return numbers


def _blocks(
    model: nets.FusionNet, numbers: Sequence[int] | None = None
) -> list[tuple[int, int, nn.Module]]:
    """``(stage, block, module)`` of every block; ``stage`` counts skipped stages too."""
    out = []
    for seq, stage in zip(model.stages, _live(model, numbers)):
        for b, module in enumerate(list(seq)[1:]):  # seq[0] is the transition
            out.append((stage, b, module))
    return out


def _stage_module(
    model: nets.FusionNet, stage: int | None, numbers: Sequence[int] | None = None
) -> tuple[int, nn.Module]:
    """``(stage number, module)`` of ``stage`` (``None``: the last stage that is not skipped)."""
    live = _live(model, numbers)
    if stage is None:
        stage = live[-1]
    if stage not in live:
        raise ExplainError(f"stage {stage!r} has no blocks; allowed: {allowed(live)}")
    return stage, model.stages[live.index(stage)]


# --------------------------------------------------------------------------- cost


def stage_costs(model: nets.FusionNet, numbers: Sequence[int] | None = None) -> list[StageCost]:
    """Exact MACs (batch of one) and parameters of the stem, every stage and the head.

    ``numbers``: the number of each built stage (:func:`stage_numbers`); default its position
    in ``model.cfg``.

    Runs a copy of the network on the ``meta`` device (shapes only); each part is counted by
    :func:`fusion_nas.model.cost.count_cost` on the input it received. The rows add up to the
    network's total.
    """
    cfg = model.cfg
    with torch.device("meta"):
        net = nets.FusionNet(cfg)
        example = torch.empty(1, cfg.in_channels, *cfg.size)
    inputs: dict[nn.Module, tuple] = {}
    handles = []
    watched = [net.stem, *net.stages]
    for seq in net.stages:
        watched += [child for block in list(seq)[1:] for child in block.children()]
        watched.append(seq[0])

    def keep(mod: nn.Module, args: tuple) -> None:
        inputs.setdefault(mod, args)  # the first call's input (every module runs once)

    for m in watched:
        handles.append(m.register_forward_pre_hook(keep))
    try:
        total = count_cost(net, example)
    finally:
        for h in handles:
            h.remove()

    def cost(m: nn.Module) -> tuple[int, int]:
        return count_cost(m, inputs[m]).macs, count_params(m)

    rows = [StageCost("stem", "conv", *cost(net.stem))]
    built = [i for i, st in enumerate(cfg.stages) if st.depth]
    for seq, i, number in zip(net.stages, built, _live(model, numbers)):
        macs, params = cost(seq)
        parts: dict[str, list[int]] = {}
        if any(cost(seq[0])):  # an identity transition costs nothing: no row
            parts["transition"] = list(cost(seq[0]))
        for block in list(seq)[1:]:
            for name, child in block.named_children():
                part = _PARTS.get(name, "other")
                m, p = cost(child)
                acc = parts.setdefault(part, [0, 0])
                acc[0], acc[1] = acc[0] + m, acc[1] + p
        # fusion weights (a, b, s) are parameters of the block itself
        counted = [sum(v[0] for v in parts.values()), sum(v[1] for v in parts.values())]
        if macs != counted[0] or params != counted[1]:
            parts["fusion"] = [macs - counted[0], params - counted[1]]
        rows.append(
            StageCost(
                f"stage {number}",
                cfg.stages[i].block.operator,
                macs,
                params,
                {k: (int(v[0]), int(v[1])) for k, v in parts.items()},
            )
        )
    head_macs = total.macs - sum(r.macs for r in rows)
    rows.append(StageCost("head", "linear", head_macs, count_params(net.head)))
    return rows


# --------------------------------------------------------------------------- fusion


def _mixer_reaches_frames(mixer: nn.Module) -> bool:
    """Whether an attention mixer on video mixes information across frames at a position.

    ``temporal``, ``divided``, ``global``, ``linear``: yes; ``window`` and ``grid``: when
    their window spans more than one frame; ``spatial`` and ``channel``: no, except through a
    ``cpe`` position encoding (a 3x3x3 depthwise conv on video, so it reaches the neighbouring
    frames). ``channel`` pools over the clip for its channel weights, which this does not count.
    """
    if getattr(mixer, "cpe", None) is not None:
        return True
    if isinstance(mixer, nets.FrameAttention):
        return mixer.across_frames
    if isinstance(mixer, nets.WindowAttention):  # grid too: a window of win[0] frames
        return mixer.win[0] > 1
    if isinstance(mixer, nets.ChannelAttention):
        return False
    return isinstance(mixer, (nets.DividedAttention, nets.GlobalAttention, nets.LinearAttention))


def reaches_frames(block: nn.Module) -> str:
    """Which branch of a fused video block reaches across frames: ``attention`` (a mixer of
    :func:`_mixer_reaches_frames`), ``conv`` (a temporal kernel ``tkernel > 1``), ``both`` or
    ``none``."""
    conv = block.conv.conv.kernel_size[0] > 1  # ConvMixer on video: (tkernel, k, k)
    return _TEMPORAL[conv * 2 + _mixer_reaches_frames(block.attn)]


def _temporal_share(temporal: str, conv_share: torch.Tensor) -> torch.Tensor:
    """Share of the fused update from the branch(es) that reach across frames, per sample."""
    if temporal == "conv":
        return conv_share
    if temporal == "attention":
        return 1.0 - conv_share
    return torch.full_like(conv_share, 1.0 if temporal == "both" else 0.0)


def _eta2(values: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[list, float]:
    """Class means of ``values`` (N,) and the share of their variance the class explains."""
    v = values.double()
    means: list[float | None] = []
    between = 0.0
    for c in range(classes):
        sel = v[labels == c]
        means.append(float(sel.mean()) if len(sel) else None)
        if len(sel):
            between += len(sel) * float((sel.mean() - v.mean()) ** 2)
    total = float(((v - v.mean()) ** 2).sum())
    return means, (between / total if total > 1e-12 else 0.0)


class _FusionProbe:
    """Forward hooks on the fused blocks: per sample, the gate and the branch magnitudes."""

    def __init__(self, blocks: list[tuple[int, int, nn.Module]]) -> None:
        self.fused = [
            (s, b, m)
            for s, b, m in blocks
            if isinstance(m, (nets.ParallelBlock, nets.GatedBlock, nets.SplitBlock))
        ]
        self.data: dict[int, dict[str, list[torch.Tensor]]] = {}
        self.handles = []
        for k, (_, _, m) in enumerate(self.fused):
            self.data[k] = {"g": [], "conv": [], "attn": []}
            self.handles.append(m.conv.register_forward_hook(self._keep(k, "conv")))
            self.handles.append(m.attn.register_forward_hook(self._keep(k, "attn")))
            if isinstance(m, nets.GatedBlock):
                self.handles.append(m.gate.register_forward_hook(self._keep(k, "g")))

    def _keep(self, k: int, key: str) -> Callable:
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            self.data[k][key].append(out.detach())

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def results(self, labels: torch.Tensor, classes: int) -> list[BlockFusion]:
        out = []
        for k, (stage, block, m) in enumerate(self.fused):
            d = self.data[k]
            conv, attn = torch.cat(d["conv"]), torch.cat(d["attn"])  # (N, C, *S) each
            red = tuple(range(2, conv.dim()))
            conv_mag = conv.abs().mean(dim=red)  # (N, C): mean |branch| per sample and channel
            attn_mag = attn.abs().mean(dim=red)
            weights: dict[str, Stat] = {}
            channels: dict[str, list[float]] = {}
            samples: dict[str, torch.Tensor] = {}
            if isinstance(m, nets.ParallelBlock):
                a, b = m.conv_weight.detach(), m.attn_weight.detach()  # (C,)
                weights["a"], weights["b"] = Stat.of(a), Stat.of(b)
                channels["a"], channels["b"] = a.tolist(), b.tolist()
                conv_part = (a.abs() * conv_mag).sum(1)  # (N,)
                attn_part = (b.abs() * attn_mag).sum(1)
            elif isinstance(m, nets.SplitBlock):  # the branches see different channels
                share = torch.tensor([m.share / (conv.shape[1] + attn.shape[1])])
                weights["conv_channels"] = Stat.of(share)
                # norms over samples, not per class: the class view shows fractions only
                weights["conv_norm"] = Stat.of(conv.flatten(1).norm(dim=1))  # (N,)
                weights["attn_norm"] = Stat.of(attn.flatten(1).norm(dim=1))
                conv_part, attn_part = conv_mag.sum(1), attn_mag.sum(1)
            else:
                g = torch.sigmoid(torch.cat(d["g"]))  # (N, C): gate logits -> gate
                s = m.scale.detach()
                samples["g"] = g.mean(1)
                weights["g"], weights["s"] = Stat.of(samples["g"]), Stat.of(s)
                channels["g"], channels["s"] = g.mean(0).tolist(), s.tolist()
                conv_part = (s.abs() * g * conv_mag).sum(1)
                attn_part = (s.abs() * (1 - g) * attn_mag).sum(1)
            samples["conv_share"] = conv_part / (conv_part + attn_part).clamp_min(1e-12)
            weights["conv_share"] = Stat.of(samples["conv_share"])
            temporal = reaches_frames(m) if conv.dim() == 5 else ""  # (N, C, T, H, W): video
            if temporal:
                samples["temporal_share"] = _temporal_share(temporal, samples["conv_share"])
                weights["temporal_share"] = Stat.of(samples["temporal_share"])
            per_class, eta2 = {}, {}
            for name, values in samples.items():
                per_class[name], eta2[name] = _eta2(values, labels, classes)
            out.append(
                BlockFusion(
                    stage,
                    block,
                    getattr(m, "op_name", type(m).__name__),
                    m.attn.variant,
                    weights,
                    channels,
                    per_class,
                    eta2,
                    temporal,
                )
            )
        return out


# --------------------------------------------------------------------------- saliency


def grad_cam(
    model: nets.FusionNet,
    x: torch.Tensor,
    stage: int | None = None,
    target: torch.Tensor | None = None,
    numbers: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Grad-CAM of ``x`` (B, C, *S) on the output map of ``stage`` (default: the last).

    ``target``: the class per sample (default: the predicted one); ``numbers``: the stage
    numbers (:func:`stage_numbers`). Returns the maps (B, *S) upsampled to the input and
    scaled to [0, 1] per sample, the logits, and the stage read.
    """
    stage, module = _stage_module(model, stage, numbers)
    kept: dict[str, torch.Tensor] = {}

    def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        out.retain_grad()
        kept["map"] = out

    handle = module.register_forward_hook(hook)
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x.detach().clone())
            cls = logits.argmax(1) if target is None else target
            logits.gather(1, cls[:, None]).sum().backward()
    finally:
        handle.remove()
        model.train(was)
        model.zero_grad(set_to_none=True)
    fmap, grad = kept["map"].detach(), kept["map"].grad  # (B, C, *s)
    alpha = grad.mean(dim=tuple(range(2, grad.dim())), keepdim=True)  # (B, C, 1..): channel weight
    cam = F.relu((alpha * fmap).sum(1, keepdim=True))  # (B, 1, *s)
    mode = {3: "linear", 4: "bilinear", 5: "trilinear"}[cam.dim()]  # video: over (T, H, W)
    cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode=mode, align_corners=False)[:, 0]
    return _unit(cam), logits.detach(), stage


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """Each map (B, *S) scaled to [0, 1] (an all-zero map stays zero)."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(maps)


def _input_grad(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``|d logit_target / d x|`` summed over channels, (B, *S), scaled to [0, 1]."""
    xg = x.detach().clone().requires_grad_(True)
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            model(xg).gather(1, target[:, None]).sum().backward()
    finally:
        model.train(was)
        model.zero_grad(set_to_none=True)
    return _unit(xg.grad.abs().sum(1))


# --------------------------------------------------------------------------- attention


def _round(t: torch.Tensor, digits: int = 4) -> list:
    return torch.round(t.double(), decimals=digits).tolist()


def _window_index(mixer: nets.WindowAttention) -> torch.Tensor:
    """(nW, T): the token index of every window position (-1 where the map is padded)."""
    size = mixer.size
    idx = torch.full((1, *mixer.padded, 1), -1, dtype=torch.long)
    idx[(slice(None), *(slice(0, s) for s in size), slice(None))] = torch.arange(
        math.prod(size)
    ).view(1, *size, 1)
    return nets.partition(mixer.arrange(idx), mixer.win).squeeze(-1)  # grid: interleaved


def _token_map(mixer: nn.Module, qkv: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The (B, h, N, N) attention of a token mixer from its qkv projection (B, N, 3C)."""
    q, k, _ = (nets.split_heads(t, mixer.heads) for t in qkv.chunk(3, dim=-1))  # (B, h, N, hd)
    B, h, N, hd = q.shape
    if isinstance(mixer, nets.LinearAttention):
        q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
        w = q @ k.transpose(-2, -1)  # (B, h, N, N): phi(q_i) . phi(k_j) > 0
        note = "implicit map phi(q)·phi(k), normalised per query (never formed by the model)"
        return w / w.sum(-1, keepdim=True), note
    rel = getattr(mixer, "rel", None)  # pos="bias": (h, n, n) added to the logits
    bias = rel.matrix().detach() if rel is not None else None
    if isinstance(mixer, nets.WindowAttention):
        index = _window_index(mixer)  # (nW, T)
        full = torch.zeros(B, h, N, N, dtype=q.dtype)
        for win in index:
            real = win >= 0
            sel = win[real]
            logits = q[:, :, sel] @ k[:, :, sel].transpose(-2, -1) / math.sqrt(hd)
            if bias is not None:  # the window's bias between its real tokens
                logits = logits + bias[:, real][:, :, real]
            full[:, :, sel[:, None], sel[None, :]] = torch.softmax(logits, -1)
        note = f"softmax attention inside windows of {mixer.win} tokens; zero across windows"
        return full, note
    logits = q @ k.transpose(-2, -1) / math.sqrt(hd)
    p = torch.softmax(logits if bias is None else logits + bias, -1)
    return p, "softmax attention, every token to every token"


def _group_map(mixer: nets.FrameAttention, qkv: torch.Tensor) -> torch.Tensor:
    """The (B', h, n, n) softmax attention inside each group of a temporal or spatial mixer
    (B' = B * groups: positions of T frames, or frames of H*W positions)."""
    grouped = mixer.groups(qkv)  # (B', n, 3C)
    q, k, _ = (nets.split_heads(t, mixer.heads) for t in grouped.chunk(3, dim=-1))
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B', h, n, n)
    if mixer.rel is not None:
        logits = logits + mixer.rel.matrix().detach()
    return logits.softmax(-1)


def _frames_of(mean: torch.Tensor, frames: int) -> torch.Tensor:
    """(N, N) token map of a clip of ``frames`` frames -> (T, T): the attention a query puts on
    each key frame (summed over its positions), mean over the query frame's positions."""
    n = mean.shape[0] // frames  # positions per frame; tokens run t * (H * W) + p
    return mean.view(frames, n, frames, n).sum(-1).mean(1)


class _AttentionProbe:
    """Hooks on the attention mixers: the qkv projection of token mixers, the excitation of
    channel (squeeze-excitation) mixers."""

    def __init__(self, blocks: list[tuple[int, int, nn.Module]]) -> None:
        self.mixers = []  # (stage, block, block module, mixer, part of a divided mixer)
        for s, b, m in blocks:
            mixer = getattr(m, "attn", None)
            if isinstance(mixer, nets.DividedAttention):  # its two mixers, one map each
                self.mixers += [(s, b, m, mixer.time, "time"), (s, b, m, mixer.space, "space")]
            elif mixer is not None:
                self.mixers.append((s, b, m, mixer, ""))
        self.kept: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(self.mixers))}
        self.handles = []
        for k, (_, _, _, mixer, _) in enumerate(self.mixers):
            target = mixer.qkv if hasattr(mixer, "qkv") else getattr(mixer, "fc2", None)
            if target is not None:
                self.handles.append(target.register_forward_hook(self._keep(k)))

    def _keep(self, k: int) -> Callable:
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            self.kept[k].append(out.detach())

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def results(self) -> list[AttentionMap]:
        out = []
        for k, (stage, block, m, mixer, part) in enumerate(self.mixers):
            if not self.kept[k]:
                continue
            data = torch.cat(self.kept[k])
            op = getattr(m, "op_name", type(m).__name__)
            variant = getattr(mixer, "variant", type(mixer).__name__)
            if part:
                variant = f"divided.{part}"
            if isinstance(mixer, nets.XcaAttention):  # a (hd, hd) map per head, no token map
                B, N, _ = data.shape
                qc, kc, _ = data.reshape(B, N, 3, mixer.heads, -1).permute(2, 0, 3, 4, 1)
                a = F.normalize(qc, dim=-1) @ F.normalize(kc, dim=-1).transpose(-2, -1)
                a = (a * mixer.temperature.detach()).softmax(-1).mean(0)  # (h, hd, hd)
                w = a.mean(1).flatten()  # (C,): what each channel receives within its head
                note = "cross-covariance attention each channel receives in its head (mean "
                note += "over queries, samples); no token map"
                h, size = mixer.heads, (w.numel(),)
                out.append(
                    AttentionMap(stage, block, op, variant, h, size, "channels", note, _round(w))
                )
                continue
            if not hasattr(mixer, "qkv"):  # squeeze-excitation: (B, C) excitation logits
                w = torch.sigmoid(data).mean(0)
                note = "squeeze-excitation weight per channel (mean over samples); no token map"
                out.append(
                    AttentionMap(
                        stage, block, op, variant, 1, (w.numel(),), "channels", note, _round(w)
                    )
                )
                continue
            if isinstance(mixer, nets.FrameAttention):
                out.append(self._frame_map(stage, block, op, variant, mixer, data))
                continue
            probs, note = _token_map(mixer, data)  # (B, h, N, N)
            mean = probs.mean(dim=(0, 1))  # (N, N): over samples and heads
            received = mean.mean(0).view(*mixer.size)  # attention each key receives
            matrix = _round(mean) if mean.shape[0] <= MAX_TOKENS else None
            if matrix is None:
                note += f"; {mean.shape[0]} tokens: only the attention each token receives"
            note += f"; mean over {mixer.heads} head(s) and {probs.shape[0]} sample(s)"
            out.append(
                AttentionMap(
                    stage,
                    block,
                    op,
                    variant,
                    mixer.heads,
                    tuple(mixer.size),
                    "tokens",
                    note,
                    _round(received),
                    matrix,
                )
            )
            if len(mixer.size) == 3:  # a mixer over the whole clip: its frame-to-frame map too
                frames = _frames_of(mean, mixer.size[0])  # (T, T)
                note = "softmax attention a query frame puts on each frame (summed over the key "
                note += "frame's positions, mean over the query's positions), derived from the "
                note += f"token map; mean over {mixer.heads} head(s) and {probs.shape[0]} sample(s)"
                out.append(self._frames(stage, block, op, variant, mixer.heads, frames, note))
        return out

    @staticmethod
    def _frames(
        stage: int, block: int, op: str, variant: str, heads: int, frames: torch.Tensor, note: str
    ) -> AttentionMap:
        """A "frames" map: (T, T) query frame x key frame, and what each frame receives."""
        T = frames.shape[0]
        received = _round(frames.mean(0))  # (T,): mean over query frames
        return AttentionMap(
            stage, block, op, variant, heads, (T,), "frames", note, received, _round(frames)
        )

    def _frame_map(
        self,
        stage: int,
        block: int,
        op: str,
        variant: str,
        mixer: nets.FrameAttention,
        data: torch.Tensor,
    ) -> AttentionMap:
        """The map of a temporal (frames) or spatial (tokens of one frame) mixer."""
        probs = _group_map(mixer, data)  # (B * groups, h, n, n)
        mean = probs.mean(dim=(0, 1))  # (n, n): over samples, groups and heads
        samples = data.shape[0]
        T, H, W = mixer.size
        if mixer.across_frames:
            note = "softmax attention across the frames at each position (mean over the "
            note += f"{H * W} positions, {mixer.heads} head(s) and {samples} sample(s))"
            return self._frames(stage, block, op, variant, mixer.heads, mean, note)
        note = "softmax attention within each frame (mean over the "
        note += f"{T} frames, {mixer.heads} head(s) and {samples} sample(s))"
        matrix = _round(mean) if mean.shape[0] <= MAX_TOKENS else None
        if matrix is None:
            note += f"; {mean.shape[0]} tokens: only the attention each token receives"
        received = _round(mean.mean(0).view(H, W))
        return AttentionMap(
            stage, block, op, variant, mixer.heads, (H, W), "tokens", note, received, matrix
        )


# --------------------------------------------------------------------------- whole model


def explain_model(
    model: nets.FusionNet,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    samples: int = DEFAULT_SAMPLES,
    stage: int | None = None,
    source: str = "",
    meta: dict[str, Any] | None = None,
    numbers: Sequence[int] | None = None,
) -> Explanation:
    """Explain a trained ``model`` on validation data ``x`` (N, C, *S), ``y`` (N,).

    The fusion statistics read every given sample (pass at most a few thousand); saliency and
    attention maps the first ``samples``. ``stage`` picks the stage Grad-CAM reads (default the
    last one with blocks). ``numbers`` numbers the built stages as the architecture string
    does (:func:`stage_numbers`; default: positions in ``model.cfg``), in every result and in
    ``stage``. The model's train/eval mode is kept.
    """
    if not isinstance(model, nets.FusionNet):
        raise ExplainError(f"explain needs a FusionNet, got {type(model).__name__}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ExplainError(f"--samples must be an integer >= 1, got {samples!r}")
    if len(x) == 0:
        raise ExplainError("no validation samples to explain the network on")
    cfg = model.cfg
    stage, _ = _stage_module(model, stage, numbers)  # checked before any work
    blocks = _blocks(model, numbers)
    was = model.training
    model.eval()
    probe = _FusionProbe(blocks)
    correct = 0
    try:
        with torch.no_grad():
            for i in range(0, len(x), _BATCH):
                logits = model(x[i : i + _BATCH])
                correct += int((logits.argmax(1) == y[i : i + _BATCH]).sum())
    finally:
        probe.close()
    fusion = probe.results(y, cfg.classes)

    k = min(samples, len(x))
    xs, ys = x[:k], y[:k]
    attention = _AttentionProbe(blocks)
    try:
        with torch.no_grad():
            model(xs)
    finally:
        attention.close()
    cam, logits, stage = grad_cam(model, xs, stage, numbers=numbers)
    pred = logits.argmax(1)
    kind = nets.INPUTS[len(cfg.size)]  # sequence, image or video
    saliency = Saliency(
        kind=kind,
        stage=stage,
        inputs=_round(xs),
        maps=_round(cam),
        labels=ys.tolist(),
        predicted=pred.tolist(),
        input_grad=_round(_input_grad(model, xs, pred)) if kind == "sequence" else None,
    )
    model.train(was)
    return Explanation(
        kind=kind,
        classes=cfg.classes,
        val_samples=len(x),
        fusion=fusion,
        costs=stage_costs(model, numbers),
        saliency=saliency,
        attention=attention.results(),
        accuracy=correct / len(x),
        source=source,
        meta=dict(meta or {}),
    )


# --------------------------------------------------------------------------- trials


def explain_trial(
    search: StoredSearch,
    trial: StoredTrial,
    *,
    weights: Path | None = None,
    samples: int = DEFAULT_SAMPLES,
    stage: int | None = None,
    max_val: int = MAX_VAL,
    on_status: Callable[[str], None] | None = None,
) -> Explanation:
    """Explain ``trial`` of the stored ``search`` on its validation split.

    The weights come from :func:`fusion_nas.analysis.retrain.trial_weights` (a ``weights``
    file, the trial's retrain weights, or its proxy training re-run).
    """
    from fusion_nas.analysis.retrain import search_protocol, trial_weights
    from fusion_nas.model.build import build_model

    say = on_status or (lambda text: None)
    arch = trial.architecture()
    model = build_model(arch, search.space)
    numbers = stage_numbers(arch)  # skipped stages keep their number
    _stage_module(model, stage, numbers)  # a bad --stage fails before any training
    source = trial_weights(search, trial, model, weights=weights, on_status=say)
    val = search_protocol(search).proxy_splits().val  # never the test split
    from fusion_nas.training.data import take

    x, y = take(val, torch.arange(min(max_val, len(val))))
    say("Measuring the network on the validation split...")
    meta = {
        "search": search.name,
        "trial": trial.number,
        "arch_desc": trial.record.arch_desc,
        "val_acc": trial.record.val_acc,
        "dataset": search.record.dataset,
    }
    return explain_model(
        model, x, y, samples=samples, stage=stage, source=source, meta=meta, numbers=numbers
    )
