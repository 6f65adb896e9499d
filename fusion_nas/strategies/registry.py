"""Strategy names and construction."""

from __future__ import annotations

from typing import Any

from fusion_nas.errors import StrategyError, allowed
from fusion_nas.strategies.base import Strategy

OPTUNA_STRATEGIES = ("optuna:nsga2", "optuna:tpe", "optuna:random", "optuna:grid")
NNI_STRATEGIES = ("nni:random", "nni:grid", "nni:evolution", "nni:tpe")
STRATEGIES = OPTUNA_STRATEGIES + NNI_STRATEGIES


def make_strategy(name: str, **options: Any) -> Strategy:
    """The strategy called ``name`` (see :data:`STRATEGIES`) with its options."""
    if name in OPTUNA_STRATEGIES:
        from fusion_nas.strategies.optuna_strategies import OptunaStrategy

        return OptunaStrategy(
            name, **{k: v for k, v in options.items() if k in ("population", "seed_trials")}
        )
    if name in NNI_STRATEGIES:
        from fusion_nas.strategies.nni_strategies import NniStrategy

        known = ("population", "sample_size", "seed_trials")
        return NniStrategy(name, **{k: v for k, v in options.items() if k in known})
    raise StrategyError(f"unknown strategy {name!r}; allowed: {allowed(STRATEGIES)}")
