"""What a strategy is: it proposes architectures; the search runs the trials.

Two kinds, both small:

- a :class:`Proposer` wraps an Optuna sampler, the way Optuna's ``BaseSampler`` proposes while
  ``Study`` runs: the search asks a trial, calls :meth:`Proposer.propose`, trains, tells;
- a :class:`Driver` must run its own loop (NNI's experiment does): the search hands it a
  :class:`TrialRunner`, and every architecture the driver wants evaluated goes through
  :meth:`TrialRunner.evaluate`, so costs, budgets, de-duplication and records stay the search's.

Nothing here imports the search; the search imports this.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import optuna

from fusion_nas.model.arch import Architecture
from fusion_nas.model.space import SearchSpace
from fusion_nas.store.records import TrialRecord


class Strategy(ABC):
    """Common part of every strategy: a name, a space check and the study's sampler."""

    name: str = ""

    def check(self, space: SearchSpace) -> None:
        """Refuse a space the strategy cannot search (before anything is written)."""
        return None  # every space is fine unless a strategy says otherwise

    @abstractmethod
    def sampler(self, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
        """The sampler of the search's Optuna study."""


class Proposer(Strategy):
    """A strategy that proposes one architecture per trial the search asks for."""

    @abstractmethod
    def propose(self, trial: optuna.Trial, space: SearchSpace) -> Architecture:
        """The architecture the sampler chooses for ``trial`` (suggested through ``trial``)."""


class TrialRunner(Protocol):
    """What a :class:`Driver` gets from the search: evaluate an architecture, read the history."""

    name: str  # the search's name
    space: SearchSpace
    seed: int

    def evaluate(self, arch: Architecture) -> TrialRecord:
        """Record ``arch`` as a new trial, train it if needed (blocking) and return its record."""
        ...

    def history(self) -> list[TrialRecord]:
        """Every trial of the search so far (earlier runs included), oldest first."""
        ...


class Driver(Strategy):
    """A strategy that runs its own loop and evaluates through a :class:`TrialRunner`."""

    @abstractmethod
    def run(self, runner: TrialRunner, n_trials: int) -> None:
        """Evaluate up to ``n_trials`` architectures through ``runner``."""
