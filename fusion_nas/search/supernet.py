"""Weight-sharing supernet (one-shot, SPOS-style) over a search space, in plain torch.

NNI's one-shot strategies (``RandomOneShot``, DARTS) need the network written as NNI's own
``ModelSpace`` and train through Lightning; the project's network is plain torch
(:class:`~fusion_nas.model.nets.FusionNet` built from a :class:`~fusion_nas.model.nets.NetCfg`). So
the
supernet lives here, next to :mod:`fusion_nas.model.nets`, and is made of the very block classes a
network is made of: a sub-network is ``build_model(arch, space)`` with the supernet's weights
copied in (a strict load), so it computes exactly what the supernet's path computes.

    SuperNet(space)               every stage holds every choice of the space
      forward(x, arch)            the path of ``arch``: stem -> per built stage: transition,
                                  depth blocks -> mean over S -> LayerNorm -> Linear
      subnet(arch) -> FusionNet   build_model's network, weights copied from the path

What is shared (one module each, reused by every architecture that picks it):

- the stem (one per space);
- per space stage ``i`` and block position ``j``: one block per distinct ``(BlockCfg, spatial
  size)``; a depth-``d`` stage runs positions ``0..d-1``, so depths share their first blocks;
- per stage ``i``: one transition per ``(in width, out width, downsample)``;
- the head (LayerNorm + Linear) per final width.

Block configs come from :meth:`SearchSpace.net_cfg` / :meth:`SearchSpace.stage_cfg`, the ones
``build_model`` uses. The module set is planned and its parameters counted on the ``meta``
device before anything is allocated; a supernet over :data:`MAX_PARAMS` parameters or
:data:`MAX_MODULES` modules is refused in one line.

Training (:func:`train_supernet`) samples one architecture per step uniformly
(:meth:`SearchSpace.sample`) and trains its path: :class:`SinglePath` is the supernet as a model
whose every training ``forward`` draws a path, so it trains through the toolkit's one loop
(:func:`fusion_nas.training.loop.train_proxy`: AdamW and a warm-up + cosine schedule).
:func:`inherited_accuracy` scores a sub-network on the validation split after BatchNorm
recalibration; :func:`search_supernet` runs NSGA-II over (inherited accuracy, MACs) in an
in-memory Optuna study, proposes the front, and confirms its best ``M``
(:func:`fusion_nas.pareto.promotion_order`) by training them from scratch as a normal search in
the store, so ``results`` and ``serve`` show them.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from fusion_nas.errors import FusionNasError, TrialFailed
from fusion_nas.model.arch import Architecture
from fusion_nas.model.nets import OPS, BlockCfg, FusionNet, batchnorm_nd, conv_nd, transition
from fusion_nas.model.space import SearchSpace
from fusion_nas.training.loop import ProxyConfig, evaluate_accuracy, train_proxy

if TYPE_CHECKING:
    import pandas as pd

    from fusion_nas.store.store import Store
    from fusion_nas.training.data import DataSplits

MAX_PARAMS = 20_000_000  # supernet parameters (x16 bytes to train: 320 MiB)
MAX_MODULES = 5_000  # distinct blocks and transitions of one supernet
CALIB_BATCHES = 8  # training batches that recalibrate BatchNorm before an inherited score
CONFIRM_STRATEGY = "optuna:random"  # recorded strategy of a confirmation search (see README)


class SupernetError(FusionNasError):
    """A supernet cannot be built or searched with these settings."""


# --------------------------------------------------------------------------- plan


def _entry_size(size: tuple[int, ...], downsample: str) -> tuple[int, ...]:
    """Spatial size inside a stage entered at ``size`` (as :meth:`NetCfg.stage_sizes`)."""
    if downsample == "pool":
        return tuple(n // 2 for n in size)
    if downsample == "conv":
        return tuple((n + 1) // 2 for n in size)
    return size


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
                inner = _entry_size(size, st.downsample)
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
        holder.stem = nn.Sequential(conv, batchnorm_nd(dim)(s.width), nn.GELU())  # as FusionNet
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
        parts += [("norm", self.heads[head]["norm"]), ("head", self.heads[head]["head"])]
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


# --------------------------------------------------------------------------- training


@dataclass
class TrainedSupernet:
    """A trained supernet with the data it was trained on and what training cost."""

    supernet: SuperNet
    splits: DataSplits
    dataset: str
    proxy: ProxyConfig
    seed: int
    seconds: float = 0.0
    steps: int = 0
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch

    @property
    def epochs(self) -> int:
        """Epochs trained (each step trains one sampled path on one batch)."""
        return len(self.losses)

    @property
    def device(self) -> torch.device:
        """Where the supernet is."""
        return next(self.supernet.parameters()).device


def load_splits(
    space: SearchSpace, dataset: str, proxy: ProxyConfig, seed: int, data_dir: str | None
) -> DataSplits:
    """The dataset's splits shaped for ``space``, as a search with ``seed`` loads them."""
    from fusion_nas.training.data import dataset_for

    return dataset_for(
        dataset, space.source, data_dir, proxy.val_fraction, seed, proxy.train_subset
    )


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


def train_supernet(
    space: SearchSpace,
    dataset: str,
    proxy: ProxyConfig | None = None,
    *,
    seed: int = 0,
    data_dir: str | None = None,
    device: str = "cpu",
    max_params: int = MAX_PARAMS,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainedSupernet:
    """Build ``space``'s supernet and train it once with uniform single-path sampling (SPOS).

    Every step draws one architecture with :meth:`SearchSpace.sample` (uniform per stage,
    seeded by ``seed``) and trains its path on one batch of the TRAIN split (:class:`SinglePath`
    through :func:`~fusion_nas.training.loop.train_proxy`): AdamW and linear warm-up + cosine
    decay per step, with ``proxy``'s epochs, batch size, learning rate and weight decay. Paths
    not taken keep no gradient, so AdamW leaves their weights alone. ``on_step(step, total,
    loss)`` is called after every step. A non-finite loss raises
    :class:`~fusion_nas.errors.TrialFailed`.
    """
    from fusion_nas.training.devices import resolve_device

    proxy = proxy if proxy is not None else ProxyConfig()
    dev = torch.device(resolve_device(device))
    torch.manual_seed(seed)
    supernet = SuperNet(space, max_params=max_params).to(dev)  # refused before data is loaded
    splits = load_splits(space, dataset, proxy, seed, data_dir)
    trained = TrainedSupernet(supernet, splits, dataset, proxy, seed)
    model = SinglePath(supernet, seed)
    losses: list[float] = []  # this epoch's step losses

    def step(n: int, total: int, loss: float) -> None:
        trained.steps = n
        losses.append(loss)
        if on_step is not None:
            on_step(n, total, loss)

    def epoch_end(epoch: int, _acc: float | None) -> None:
        trained.losses.append(sum(losses) / max(1, len(losses)))
        losses.clear()

    try:
        result = train_proxy(
            model,
            splits.train,
            None,
            proxy,
            seed=seed,
            device=dev,
            on_step=step,
            on_epoch=epoch_end,
        )
    except TrialFailed as exc:
        path = model.arch.describe() if model.arch is not None else "no path"
        raise TrialFailed(f"supernet training: {exc} on {path}") from None
    trained.seconds = result.seconds
    return trained


# --------------------------------------------------------------------------- inherited scores


@torch.no_grad()
def recalibrate(
    model: nn.Module, data: TensorDataset, batches: int, batch_size: int, seed: int
) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them on ``batches`` batches.

    The batches are the first of a ``seed``-shuffled order of ``data``, forwarded in train mode
    with ``momentum=None`` (a plain average over the batches); the model ends in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    dev = next(model.parameters()).device
    x = data.tensors[0]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    model.train()
    for b in range(batches):
        index = order[b * batch_size : (b + 1) * batch_size]
        if len(index) == 0:
            break
        model(x[index].to(dev))
    model.eval()


def inherited_accuracy(
    trained: TrainedSupernet, arch: Architecture, calib_batches: int = CALIB_BATCHES
) -> float:
    """Validation accuracy of ``arch``'s sub-network with the supernet's weights.

    BatchNorm statistics are recalibrated on ``calib_batches`` training batches first
    (:func:`recalibrate`); the supernet itself is left unchanged.
    """
    model = trained.supernet.subnet(arch)
    recalibrate(model, trained.splits.train, calib_batches, trained.proxy.batch_size, trained.seed)
    return evaluate_accuracy(model, trained.splits.val)


# --------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class Candidate:
    """One architecture the Pareto search scored with inherited weights."""

    arch: Architecture
    inherited_acc: float
    macs: int
    params: int


@dataclass
class SupernetSearch:
    """What :func:`search_supernet` found: every scored network, the front, the confirmation."""

    candidates: list[Candidate]  # distinct networks, in the order first scored
    front: list[Candidate]  # non-dominated on (inherited accuracy, MACs), MACs ascending
    picks: list[Candidate]  # the top M by promotion order, trained from scratch
    evaluations: int
    seconds: float
    trials: pd.DataFrame | None = None  # the confirmation search's trials (store.trials)


def _driver(picks: list[Architecture]) -> Any:
    """A :class:`~fusion_nas.search.strategies.Driver` that trains ``picks`` through the search."""
    from fusion_nas.search.strategies.base import Driver, TrialRunner
    from fusion_nas.store.records import TrialStatus

    class Confirm(Driver):
        """Evaluates the picks the search does not hold yet (a resumed search skips the rest)."""

        name = "supernet"

        def sampler(self, space: SearchSpace, seed: int) -> Any:
            """Unused by a driver; the study needs one."""
            import optuna

            return optuna.samplers.RandomSampler(seed=seed)

        def run(self, runner: TrialRunner, n_trials: int) -> None:
            """Train every pick not already complete in the search."""
            held = {t.arch_id for t in runner.history() if t.status == TrialStatus.COMPLETE}
            for arch in picks[:n_trials]:
                if arch.arch_id not in held:
                    runner.evaluate(arch)

    return Confirm()


def search_supernet(
    trained: TrainedSupernet,
    evaluations: int,
    confirm: int = 0,
    *,
    name: str | None = None,
    store: Store | None = None,
    confirm_proxy: ProxyConfig | None = None,
    seed: int | None = None,
    population: int = 12,
    calib_batches: int = CALIB_BATCHES,
    device: str = "auto",
    data_dir: str | None = None,
    on_eval: Callable[[int, Candidate], None] | None = None,
    on_trial: Callable[[Any], None] | None = None,
) -> SupernetSearch:
    """NSGA-II over inherited accuracies, then train the front's top ``confirm`` from scratch.

    ``evaluations`` trials of an in-memory Optuna study (:class:`optuna.samplers.NSGAIISampler`,
    ``population`` per generation) propose architectures with
    :func:`~fusion_nas.search.strategies.optuna_strategies.suggest_architecture`; each is scored by
    (:func:`inherited_accuracy`, MACs of :func:`~fusion_nas.model.cost.arch_cost`), a repeat from
    the cache. The front of the distinct networks is the proposal; the first ``confirm`` of
    :func:`~fusion_nas.pareto.promotion_order` are trained from scratch as search ``name`` of
    ``store`` with ``confirm_proxy`` (default: the supernet's proxy settings), through the
    search loop (:mod:`fusion_nas.search.loop`), so ``fusion-nas results NAME`` shows them.
    ``on_eval(i, candidate)`` runs after each evaluation, ``on_trial(progress)`` after each
    confirmation trial.
    """
    import optuna

    from fusion_nas.model.cost import arch_cost
    from fusion_nas.pareto import front_indices, promotion_order
    from fusion_nas.search.strategies.optuna_strategies import suggest_architecture
    from fusion_nas.store.records import DIRECTIONS

    if evaluations < 1:
        raise SupernetError(f"--evaluations must be at least 1, got {evaluations}")
    if confirm < 0:
        raise SupernetError(f"--confirm must be 0 or more, got {confirm}")
    if population < 2:
        raise SupernetError(f"--population must be at least 2, got {population}")
    if confirm and not name:
        raise SupernetError("confirming the front needs a search name (--name)")
    space = trained.supernet.space
    seed = trained.seed if seed is None else seed
    start = time.perf_counter()
    scored: dict[str, Candidate] = {}

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        arch = suggest_architecture(trial, space)
        if arch.arch_id not in scored:
            cost = arch_cost(arch, space)
            acc = inherited_accuracy(trained, arch, calib_batches)
            scored[arch.arch_id] = Candidate(arch, acc, cost.macs, cost.params)
        cand = scored[arch.arch_id]
        if on_eval is not None:
            on_eval(trial.number + 1, cand)
        return cand.inherited_acc, float(cand.macs)

    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    study = optuna.create_study(directions=list(DIRECTIONS), sampler=sampler)
    study.optimize(objective, n_trials=evaluations)
    cands = list(scored.values())
    acc, macs = [c.inherited_acc for c in cands], [float(c.macs) for c in cands]
    front = [cands[i] for i in front_indices(acc, macs)]
    picks = [cands[i] for i in promotion_order(acc, macs)[:confirm]]
    result = SupernetSearch(cands, front, picks, evaluations, time.perf_counter() - start)
    if picks:
        assert name is not None
        result.trials = confirm_picks(
            trained,
            [c.arch for c in picks],
            name,
            store=store,
            proxy=confirm_proxy,
            seed=seed,
            device=device,
            data_dir=data_dir,
            on_trial=on_trial,
        )
    return result


def confirm_picks(
    trained: TrainedSupernet,
    picks: list[Architecture],
    name: str,
    *,
    store: Store | None = None,
    proxy: ProxyConfig | None = None,
    seed: int = 0,
    device: str = "auto",
    data_dir: str | None = None,
    on_trial: Callable[[Any], None] | None = None,
) -> pd.DataFrame:
    """Train ``picks`` from scratch as search ``name`` of ``store``; return its trials.

    The search is recorded with strategy :data:`CONFIRM_STRATEGY` and
    ``strategy_options["proposed_by"] == "supernet"``; running it again trains only the picks
    it does not hold yet.
    """
    from fusion_nas.search.config import SearchConfig
    from fusion_nas.search.session import open_search, prepare, run_trials
    from fusion_nas.store.store import Store

    config = SearchConfig(
        name=name,
        space=trained.supernet.space,
        dataset=trained.dataset,
        strategy=CONFIRM_STRATEGY,
        trials=len(picks),
        proxy=proxy if proxy is not None else trained.proxy,
        seed=seed,
        data_dir=data_dir,
        strategy_options={"proposed_by": "supernet"},
        device=device,
    )
    prepare(config)  # dataset and device checked before the store is touched
    store = store if store is not None else Store()
    driver = _driver(picks)
    study, _ = open_search(store, config, driver)
    run_trials(config, study, driver, len(picks), on_progress=on_trial)
    return store.trials(name)
