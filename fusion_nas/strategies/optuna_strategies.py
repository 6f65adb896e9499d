"""Optuna strategies: NSGA-II (default), multi-objective TPE, random and grid search.

Every strategy optimises two objectives, validation accuracy (up) and MACs (down). The MACs
and params budgets are Optuna constraints (``Trial.set_constraint``): an over-budget
architecture is recorded as infeasible without training, and NSGA-II and TPE rank it below
every feasible one.
Each stage's choices are suggested as categorical parameters ``s{i}_{field}``; fields the
chosen operator ignores are still suggested (a fixed search space lets NSGA-II cross over and
TPE model all stages jointly) and then dropped, so equal networks share one id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna

from fusion_nas.arch import Architecture, StageChoice
from fusion_nas.errors import StrategyError
from fusion_nas.space import SearchSpace
from fusion_nas.strategies.base import Strategy

if TYPE_CHECKING:
    from fusion_nas.search import SearchSession

GRID_LIMIT = 10_000
_FIELDS = ("operator", "kernel", "heads", "attention", "width", "depth")


def suggest_architecture(trial: optuna.Trial, space: SearchSpace) -> Architecture:
    """Ask ``trial`` for one value of every stage field and build the architecture."""
    stages = []
    for i, spec in enumerate(space.stages):
        values = {
            f: trial.suggest_categorical(f"s{i}_{f}", list(getattr(spec, f))) for f in _FIELDS
        }
        stages.append(StageChoice(**values))
    return Architecture(space.name, tuple(stages))


class OptunaStrategy(Strategy):
    """Ask/tell loop shared by the Optuna samplers; ``workers`` trials run at once."""

    def __init__(self, name: str, population: int = 12, seed_trials: int = 10) -> None:
        self.name = name
        self.population = population
        self.seed_trials = seed_trials
        self._grid: list[Architecture] | None = None  # enumerated once for optuna:grid

    def sampler(self, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
        """The Optuna sampler behind this strategy."""
        kind = self.name.split(":", 1)[1]
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=self.population, seed=seed)
        if kind == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                multivariate=True,
                n_startup_trials=self.seed_trials,
            )
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.GridSampler(
            {"arch": list(range(space.num_architectures()))}, seed=seed
        )

    def check(self, space: SearchSpace) -> None:
        """Grid search needs a space small enough to enumerate."""
        n = space.num_architectures()
        if self.name == "optuna:grid" and n > GRID_LIMIT:
            raise StrategyError(
                f"optuna:grid cannot enumerate space {space.name!r}: {n:,} architectures, "
                f"more than {GRID_LIMIT:,}; use optuna:random, optuna:nsga2 or a smaller space"
            )

    def propose(self, trial: optuna.Trial, space: SearchSpace) -> Architecture:
        """The architecture the sampler chose for ``trial``."""
        if self.name == "optuna:grid":
            if self._grid is None:
                self._grid = space.enumerate(GRID_LIMIT)
            index = trial.suggest_categorical("arch", list(range(len(self._grid))))
            return self._grid[index]
        return suggest_architecture(trial, space)

    def run(self, session: SearchSession, n_trials: int) -> None:
        """Ask, evaluate (up to ``workers`` at once) and tell until ``n_trials`` finished."""
        study, pool = session.study, session.pool
        asked = finished = 0
        while finished < n_trials:
            while pool.free and asked < n_trials:
                trial = study.ask()
                asked += 1
                arch = self.propose(trial, session.space)
                if not session.start(trial, arch):
                    finished += 1  # recorded at once: over budget or already evaluated
            for trial, outcome in pool.collect():
                session.finish(trial, outcome)
                finished += 1
