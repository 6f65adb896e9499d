"""Search strategies: they propose architectures; :mod:`fusion_nas.search.loop` runs the trials."""

from fusion_nas.search.strategies.base import Driver, Proposer, Strategy, TrialRunner
from fusion_nas.search.strategies.registry import (
    STRATEGIES,
    StrategySpec,
    make_strategy,
    register_strategy,
    strategy_names,
)

__all__ = [
    "STRATEGIES",
    "Driver",
    "Proposer",
    "Strategy",
    "StrategySpec",
    "TrialRunner",
    "make_strategy",
    "register_strategy",
    "strategy_names",
]
