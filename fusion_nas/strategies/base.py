"""The strategy interface: a strategy proposes architectures and learns from their results."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import optuna

from fusion_nas.space import SearchSpace

if TYPE_CHECKING:
    from fusion_nas.search import SearchSession


class Strategy(ABC):
    """A search strategy. Three methods: check the space, give a sampler, run trials."""

    name: str = ""

    def check(self, space: SearchSpace) -> None:
        """Refuse a space the strategy cannot search (before anything is written)."""
        return None  # every space is fine unless a strategy says otherwise

    def sampler(self, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler | None:
        """The Optuna sampler of the search's study (``None``: the strategy samples itself)."""
        return None

    @abstractmethod
    def run(self, session: SearchSession, n_trials: int) -> None:
        """Run ``n_trials`` more trials through ``session`` (which evaluates and records)."""
