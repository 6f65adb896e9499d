"""The weight-sharing supernet (one-shot, SPOS-style) as a model: every choice of a space.

``SuperNet(space)`` holds, per stage, one block per distinct choice of the space (depths
share their first blocks, transitions are shared per width change), built from the very block
classes of :mod:`fusion_nas.model.nets`; ``forward(x, arch)`` runs the path of ``arch`` and
``subnet(arch)`` is ``build_model(arch, space)`` with the path's weights copied in.
:class:`SinglePath` is the supernet as a model whose every training ``forward`` samples a path,
so it trains through the one training loop. Training and the supernet search live in
:mod:`fusion_nas.search.supernet`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from fusion_nas.errors import FusionNasError
from fusion_nas.model.arch import Architecture
from fusion_nas.model.nets import (
    OPS,
    BlockCfg,
    FusionNet,
    batchnorm_nd,
    conv_nd,
    entry_size,
    make_act,
    transition,
)
from fusion_nas.model.space import SearchSpace

MAX_PARAMS = 20_000_000  # supernet parameters (x16 bytes to train: 320 MiB)
MAX_MODULES = 5_000  # distinct blocks and transitions of one supernet


class SupernetError(FusionNasError):
    """A supernet cannot be built or searched with these settings."""


# --------------------------------------------------------------------------- plan


def _check_supported(space: SearchSpace) -> None:
    """The supernet shares a conv stem, LayerNorm heads and per-stage transitions: refuse, in
    one line, a space whose stem, head or ``"block"`` downsampling it cannot share, and video
    (its stem is a 2-D/1-D conv)."""
    if space.kind == "video":
        raise SupernetError(
            f"space {space.name!r} takes video; a supernet takes sequence and image spaces, "
            "allowed: 'sequence', 'image' (search video spaces trial by trial)"
        )
    if space.stem.kind != "conv":
        raise SupernetError(
            f"space {space.name!r}: a supernet needs the 'conv' stem, not {space.stem.kind!r}"
        )
    if (space.head.kind, space.head.width, space.head.distill) != ("ln", 0, False):
        raise SupernetError(
            f"space {space.name!r}: a supernet needs the plain 'ln' head (no width, no distill)"
        )
    for i, spec in enumerate(space.stages):
        if "block" in spec.downsample:
            raise SupernetError(
                f"space {space.name!r}: stage {i} downsamples in its first block, which a "
                "supernet cannot share between widths; allowed: 'none', 'pool', 'conv', 'patch'"
            )


TransitionKey = tuple[int, int, int, str]  # (stage, in width, out width, downsample)
BlockKey = tuple[int, int, BlockCfg, tuple[int, ...]]  # (stage, position, config, size)


@dataclass(frozen=True)
class Plan:
    """The modules a supernet holds, in a fixed order (nothing allocated)."""

    transitions: tuple[TransitionKey, ...]
    blocks: tuple[BlockKey, ...]
    heads: tuple[int, ...]  # final widths


def plan_supernet(space: SearchSpace, max_modules: int = MAX_MODULES) -> Plan:
    """Every transition, block and head some architecture of ``space`` uses.

    The (width, size) pairs a stage can be entered with are carried stage by stage (a skipped
    stage passes its input on), so the plan holds exactly the reachable modules. More than
    ``max_modules`` blocks and transitions raise :class:`SupernetError`.
    """
    _check_supported(space)
    trans: dict[TransitionKey, None] = {}
    blocks: dict[BlockKey, None] = {}
    states = {(space.stem.width, space.stem_size())}  # (width, size) entering the stage
    for i, spec in enumerate(space.stages):
        after: set[tuple[int, tuple[int, ...]]] = set()
        for choice in spec.iter_options():
            if choice.depth == 0:
                continue
            st = space.stage_cfg(i, choice)
            for width, size in states:
                inner = entry_size(size, st.downsample)
                trans[(i, width, st.block.width, st.downsample)] = None
                for j in range(st.depth):
                    blocks[(i, j, st.block, inner)] = None
                after.add((st.block.width, inner))
                if len(trans) + len(blocks) > max_modules:
                    raise SupernetError(
                        f"space {space.name!r} needs more than {max_modules:,} distinct blocks "
                        f"and transitions for a supernet (stage {i} and on); allowed: at most "
                        f"{max_modules:,} (list fewer choices per stage)"
                    )
        if 0 in spec.depth:
            after |= states
        states = after
    heads = tuple(sorted({w for w, _ in states}))
    return Plan(tuple(trans), tuple(blocks), heads)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@contextmanager
def _shapes_only() -> Iterator[None]:
    """Build modules on the ``meta`` device with ``nn.init``'s in-place initialisers as no-ops.

    Initialising meta tensors goes through torch's reference decompositions (milliseconds per
    call); counting needs shapes only. The initialisers are swapped process-wide for the
    duration (the supernet is built in the main thread of a command or script).
    """
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
        with torch.device("meta"):
            yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


def supernet_params(space: SearchSpace, plan: Plan, stop_above: float = math.inf) -> int:
    """Parameters of the supernet of ``plan``, counted on the ``meta`` device (no allocation).

    Each distinct (block config, size) is built once; the count stops as soon as it passes
    ``stop_above`` (a refused supernet is not counted to the end).
    """
    dim, s = space.dim, space.stem
    with _shapes_only():
        total = _count(conv_nd(dim)(space.channels, s.width, s.kernel)) + 2 * s.width  # + BN
        total += sum(2 * w + (w + 1) * space.classes for w in plan.heads)  # LayerNorm + Linear
        for _, a, b, ds in plan.transitions:
            total += _count(transition(dim, a, b, ds))
        counted: dict[tuple[BlockCfg, tuple[int, ...]], int] = {}
        for _, _, cfg, size in plan.blocks:
            if (cfg, size) not in counted:
                counted[(cfg, size)] = _count(OPS[cfg.operator](cfg, size))
            total += counted[(cfg, size)]
            if total > stop_above:
                break
    return total


# --------------------------------------------------------------------------- the supernet


class SuperNet(nn.Module):
    """One network holding every choice of ``space``; ``forward(x, arch)`` runs ``arch``'s path.

    Refuses (:class:`SupernetError`, one line) a space whose supernet holds more than
    ``max_params`` parameters, counted on the ``meta`` device before anything is allocated.
    """

    def __init__(
        self,
        space: SearchSpace,
        max_params: int = MAX_PARAMS,
        max_modules: int = MAX_MODULES,
    ) -> None:
        super().__init__()
        self.space, dim = space, space.dim
        self.plan = plan_supernet(space, max_modules)
        params = supernet_params(space, self.plan, stop_above=max_params)
        if params > max_params:
            raise SupernetError(
                f"the supernet of space {space.name!r} would hold more than {max_params:,} "
                f"parameters ({len(self.plan.blocks) + len(self.plan.transitions):,} modules); "
                f"allowed: at most {max_params:,} (list fewer choices, or raise the limit)"
            )
        self.n_params = params
        # module keys -> names in the ModuleDicts (their keys cannot hold dots or configs)
        self._trans_name = {k: f"s{k[0]}_{k[1]}to{k[2]}_{k[3]}" for k in self.plan.transitions}
        self._block_name = {k: f"s{k[0]}_b{k[1]}_{n}" for n, k in enumerate(self.plan.blocks)}
        built = self._build_all(dim)
        self.stem, self.transitions, self.blocks, self.heads = (
            built.stem,
            built.transitions,
            built.blocks,
            built.heads,
        )
        self._paths: dict[str, tuple[list[tuple[str, list[str]]], str]] = {}

    def _build_all(self, dim: int) -> nn.Module:
        """Stem, transitions, blocks and heads of the plan, in the plan's order."""
        s, space = self.space.stem, self.space
        holder = nn.Module()
        conv = conv_nd(dim)(
            space.channels, s.width, s.kernel, stride=s.stride, padding=s.kernel // 2
        )
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        holder.stem = nn.Sequential(
            conv, batchnorm_nd(dim)(s.width), make_act(s.act)
        )  # as ConvStem
        holder.transitions = nn.ModuleDict(
            {name: transition(dim, *key[1:]) for key, name in self._trans_name.items()}
        )
        holder.blocks = nn.ModuleDict(
            {
                name: OPS[cfg.operator](cfg, size)
                for (_, _, cfg, size), name in self._block_name.items()
            }
        )
        heads = {}
        for w in self.plan.heads:
            head = nn.Linear(w, space.classes)
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
            heads[f"w{w}"] = nn.ModuleDict({"norm": nn.LayerNorm(w), "head": head})
        holder.heads = nn.ModuleDict(heads)
        return holder

    def path(self, arch: Architecture) -> tuple[list[tuple[str, list[str]]], str]:
        """``arch``'s modules: per built stage (transition name, block names), and the head's.

        ``arch`` is checked against the space (:class:`~fusion_nas.errors.ArchitectureError`).
        """
        if arch.arch_id in self._paths:
            return self._paths[arch.arch_id]
        cfg = self.space.net_cfg(arch)  # the configs build_model uses
        built = [i for i, c in enumerate(arch.stages) if c.depth]  # space stage of each NetCfg one
        stages, width = [], cfg.stem_width
        for i, st, size in zip(built, cfg.stages, cfg.stage_sizes(), strict=True):
            tname = self._trans_name[(i, width, st.block.width, st.downsample)]
            names = [self._block_name[(i, j, st.block, size)] for j in range(st.depth)]
            stages.append((tname, names))
            width = st.block.width
        self._paths[arch.arch_id] = (stages, f"w{width}")
        return self._paths[arch.arch_id]

    def forward(self, x: torch.Tensor, arch: Architecture) -> torch.Tensor:
        """(B, C_in, *S) -> logits (B, classes) along ``arch``'s path."""
        stages, head = self.path(arch)
        x = self.stem(x)  # (B, W_0, *S_0)
        for tname, names in stages:
            x = self.transitions[tname](x)
            for name in names:
                x = self.blocks[name](x)  # (B, W_i, *S_i)
        x = x.mean(dim=tuple(range(2, x.dim())))  # (B, W)
        h = self.heads[head]
        return h["head"](h["norm"](x))

    def path_state(self, arch: Architecture) -> dict[str, torch.Tensor]:
        """The state dict of ``build_model(arch)`` taken from the supernet (copies)."""
        stages, head = self.path(arch)
        parts: list[tuple[str, nn.Module]] = [("stem", self.stem)]
        for n, (tname, names) in enumerate(stages):
            parts.append((f"stages.{n}.0", self.transitions[tname]))
            parts += [(f"stages.{n}.{j + 1}", self.blocks[b]) for j, b in enumerate(names)]
        parts += [("head.norm", self.heads[head]["norm"]), ("head.fc", self.heads[head]["head"])]
        return {
            f"{prefix}.{k}": v.detach().clone()
            for prefix, module in parts
            for k, v in module.state_dict().items()
        }

    def subnet(self, arch: Architecture) -> FusionNet:
        """``build_model(arch, space)`` with the supernet's weights (strict load, copies).

        Built on the ``meta`` device and filled by assignment: no random initialisation runs,
        and the sub-network lives where the supernet does.
        """
        from fusion_nas.model.build import build_model

        with _shapes_only():
            model = build_model(arch, self.space)
        model.load_state_dict(self.path_state(arch), strict=True, assign=True)
        return model


class SinglePath(nn.Module):
    """SPOS training view of a supernet: every training ``forward`` runs a freshly drawn path.

    Each call in train mode draws one architecture with :meth:`SearchSpace.sample` from its own
    ``random.Random(seed)`` (uniform per stage) and runs the supernet along it; the draw is kept
    in :attr:`arch`. In eval mode the path of :attr:`arch` runs again. Its parameters are the
    supernet's, in the supernet's order, so an optimiser over either is the same.
    """

    def __init__(self, supernet: SuperNet, seed: int = 0) -> None:
        super().__init__()
        self.supernet = supernet
        self.rng = random.Random(seed)
        self.arch: Architecture | None = None  # the path of the last training step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S) -> logits (B, classes) along a newly sampled path (train mode)."""
        if self.training or self.arch is None:
            self.arch = self.supernet.space.sample(self.rng)  # one uniform path per step
        return self.supernet(x, self.arch)
