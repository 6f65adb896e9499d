"""Optuna strategies: NSGA-II (default), multi-objective TPE, random and grid search.

Each is a :class:`~fusion_nas.search.strategies.base.Proposer`: a sampler plus the mapping from a
trial's suggestions to an architecture. The search asks, proposes, trains and tells, one trial
after another (``--workers K``: up to K at once), so the sampler sees every finished trial.

Every strategy optimises two objectives, validation accuracy (up) and MACs (down). The MACs
and params budgets are Optuna constraints (``Trial.set_constraint``, written by the search): an
over-budget architecture is recorded as infeasible without training, and NSGA-II and TPE rank
it below every feasible one.
Each stage's choices are suggested as categorical parameters ``s{i}_{field}``; fields the
chosen operator ignores are still suggested (a fixed search space lets NSGA-II cross over and
TPE model all stages jointly) and then dropped, so equal networks share one id.
"""

from __future__ import annotations

import optuna

from fusion_nas.errors import StrategyError
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.space import SearchSpace
from fusion_nas.search.strategies.base import Proposer

__all__ = ["NSGA2", "TPE", "GridSearch", "RandomSearch", "arch_params", "suggest_architecture"]

GRID_LIMIT = 10_000
_FIELDS = ("operator", "kernel", "heads", "attention", "width", "depth")
# suggested only where a stage offers a choice (else the space fixes them)
_OPTIONAL_FIELDS = ("mlp_ratio", "downsample", "act", "norm", "expand", "pos", "tkernel")


def suggest_architecture(trial: optuna.Trial, space: SearchSpace) -> Architecture:
    """Ask ``trial`` for one value of every stage field and build the architecture.

    Public (``fusion_nas.suggest_architecture``): it puts a fusion space inside a study of the
    user's own, with ``build_model(arch, space)`` and ``arch_cost(arch, space)``::

        space = fusion_nas.load_space("mnist1d")

        def objective(trial):
            arch = fusion_nas.suggest_architecture(trial, space)
            macs = fusion_nas.arch_cost(arch, space).macs
            trial.set_constraint("macs_over_budget", macs - 2_000_000)  # <= 0: feasible
            model = fusion_nas.build_model(arch, space)
            return train_and_score(model), macs

        study = optuna.create_study(
            directions=["maximize", "minimize"], sampler=optuna.samplers.NSGAIISampler()
        )
        study.optimize(objective, n_trials=20)

    Every field is suggested as the categorical parameter ``s{i}_{field}`` of stage ``i``
    (fields the chosen operator ignores too, so the search space stays fixed and the sampler
    can model all stages jointly); the returned architecture drops them, so equal networks
    share one ``arch_id``. ``mlp_ratio``, ``downsample``, ``act``, ``norm``, ``expand``, ``pos``
    and ``tkernel`` are asked only where the stage lists more than one value (elsewhere the
    space fixes them), so searches of spaces without those choices keep their parameters. Raises
    :class:`~fusion_nas.errors.ArchitectureError` if the choices are not an architecture of
    ``space``.
    """
    stages = []
    for i, spec in enumerate(space.stages):
        values = {
            f: trial.suggest_categorical(f"s{i}_{f}", list(getattr(spec, f))) for f in _FIELDS
        }
        for f in _OPTIONAL_FIELDS:
            if len(getattr(spec, f)) > 1:
                values[f] = trial.suggest_categorical(f"s{i}_{f}", list(getattr(spec, f)))
        stages.append(StageChoice(**values))
    return space.validate(Architecture(space.name, tuple(stages)))


def arch_params(arch: Architecture, space: SearchSpace) -> dict[str, object]:
    """The trial parameters :func:`suggest_architecture` turns into ``arch`` (for
    ``Study.enqueue_trial``); fields ``arch`` leaves unset are left to the sampler."""
    params: dict[str, object] = {}
    for i, (spec, stage) in enumerate(zip(space.stages, arch.stages, strict=True)):
        for f in _FIELDS + _OPTIONAL_FIELDS:
            choices = list(getattr(spec, f))
            value = getattr(stage, f, None)
            if f in _OPTIONAL_FIELDS and len(choices) < 2:
                continue  # never suggested: the space fixes it
            if value is not None and value in choices:
                params[f"s{i}_{f}"] = value
    return params


class NSGA2(Proposer):
    """NSGA-II over the stage fields; ``population`` trials per generation."""

    name = "optuna:nsga2"

    def __init__(self, population: int = 12) -> None:
        if population < 2:
            raise StrategyError(f"--population must be at least 2 for NSGA-II, got {population}")
        self.population = population

    def sampler(self, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
        """NSGA-II with the search's seed."""
        return optuna.samplers.NSGAIISampler(population_size=self.population, seed=seed)

    def propose(self, trial: optuna.Trial, space: SearchSpace) -> Architecture:
        """One suggestion per stage field."""
        return suggest_architecture(trial, space)


class TPE(Proposer):
    """Multivariate multi-objective TPE; ``seed_trials`` random trials come first."""

    name = "optuna:tpe"

    def __init__(self, seed_trials: int = 10) -> None:
        if seed_trials < 1:
            raise StrategyError(f"seed_trials must be at least 1, got {seed_trials}")
        self.seed_trials = seed_trials

    def sampler(self, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
        """Multivariate TPE with the search's seed."""
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, n_startup_trials=self.seed_trials
        )

    def propose(self, trial: optuna.Trial, space: SearchSpace) -> Architecture:
        """One suggestion per stage field."""
        return suggest_architecture(trial, space)


class RandomSearch(Proposer):
    """Every stage field drawn uniformly (independent of earlier results)."""

    name = "optuna:random"

    def sampler(self, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
        """Optuna's random sampler with the search's seed."""
        return optuna.samplers.RandomSampler(seed=seed)

    def propose(self, trial: optuna.Trial, space: SearchSpace) -> Architecture:
        """One suggestion per stage field."""
        return suggest_architecture(trial, space)


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its stop call.

    Once every grid point was tried, Optuna's version calls ``study.stop()``, which raises
    outside ``Study.optimize``; the search stops at its trial count instead (a repeat past the
    end of the grid is recorded as ``same as #N``, not trained again).
    """

    def after_trial(self, study, trial, state, values) -> None:  # noqa: D102
        return None


class GridSearch(Proposer):
    """Every architecture of the stage product once, in a seeded shuffled order (a space's zoo
    members are not in the grid: they are queued by ``--start-from``)."""

    name = "optuna:grid"

    def __init__(self) -> None:
        self._grid: list[Architecture] | None = None  # enumerated once per search

    def check(self, space: SearchSpace) -> None:
        """Grid search needs a space small enough to enumerate."""
        n = space.product_size()
        if n > GRID_LIMIT:
            raise StrategyError(
                f"optuna:grid cannot enumerate space {space.name!r}: {n:,} architectures, "
                f"more than {GRID_LIMIT:,}; use optuna:random, optuna:nsga2 or a smaller space"
            )

    def sampler(self, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
        """Optuna's grid sampler over the index of each architecture."""
        return _GridSampler({"arch": list(range(space.product_size()))}, seed=seed)

    def propose(self, trial: optuna.Trial, space: SearchSpace) -> Architecture:
        """The architecture at the index the grid sampler chose."""
        if self._grid is None:
            self._grid = space.enumerate(GRID_LIMIT, members=False)
        index = trial.suggest_categorical("arch", list(range(len(self._grid))))
        return self._grid[index]
