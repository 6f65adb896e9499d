"""Training and searching the weight-sharing supernet (:mod:`fusion_nas.model.supernet`).

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

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from fusion_nas.errors import TrialFailed
from fusion_nas.model.arch import Architecture
from fusion_nas.model.space import SearchSpace
from fusion_nas.model.supernet import (
    MAX_PARAMS,
    SinglePath,
    SuperNet,
    SupernetError,
)
from fusion_nas.training.loop import ProxyConfig, evaluate_accuracy, train_proxy

if TYPE_CHECKING:
    import pandas as pd

    from fusion_nas.store.store import Store
    from fusion_nas.training.data import DataSplits

CALIB_BATCHES = 8  # training batches that recalibrate BatchNorm before an inherited score
CONFIRM_STRATEGY = "optuna:random"  # recorded strategy of a confirmation search (see README)


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
def recalibrate(model: nn.Module, data: Dataset, batches: int, batch_size: int, seed: int) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them on ``batches`` batches.

    The batches are the first of a ``seed``-shuffled order of ``data``, forwarded in train mode
    with ``momentum=None`` (a plain average over the batches); the model ends in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    from fusion_nas.training.data import take

    dev = next(model.parameters()).device
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    model.train()
    for b in range(batches):
        index = order[b * batch_size : (b + 1) * batch_size]
        if len(index) == 0:
            break
        model(take(data, index)[0].to(dev))
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

    class Confirm(Driver):
        """Evaluates the picks the search does not hold yet (a resumed search skips the rest)."""

        name = "supernet"

        def sampler(self, space: SearchSpace, seed: int) -> Any:
            """Unused by a driver; the study needs one."""
            import optuna

            return optuna.samplers.RandomSampler(seed=seed)

        def run(self, runner: TrialRunner, n_trials: int) -> None:
            """Train the picks the search has no trial of, never more trials in all than
            ``n_trials``: a trial already there counts, whatever its status (one cut short by
            a killed process included), so a resume never goes beyond ``--confirm``."""
            history = runner.history()
            held = {t.arch_id for t in history}
            # Every trial there counts: ended ones, and a queued retry of a lost one (an
            # evaluate runs that retry first, then a trial of its own).
            room = n_trials - len(history)
            for arch in picks[:n_trials]:
                if room <= 0:
                    break
                if arch.arch_id not in held:
                    runner.evaluate(arch)
                    room -= 1

    return Confirm()


def cap_evaluations(evaluations: int, space: SearchSpace) -> int:
    """``--evaluations`` as run: at most the number of networks of ``space``."""
    return max(1, min(evaluations, space.product_size()))


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
    evaluations = cap_evaluations(evaluations, space)
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
