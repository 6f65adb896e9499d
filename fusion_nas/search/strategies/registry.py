"""The one table of strategies: name (``engine:method``) -> factory, option names and help.

The CLI builds its ``--strategy`` choices and help from :data:`STRATEGIES`, and
:func:`make_strategy` builds a strategy from a name and the options the search stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fusion_nas.errors import StrategyError, allowed
from fusion_nas.search.strategies import nni_strategies, optuna_strategies
from fusion_nas.search.strategies.base import Strategy


@dataclass(frozen=True)
class StrategySpec:
    """One registered strategy."""

    name: str
    factory: Callable[..., Strategy]
    options: tuple[str, ...]  # keyword options the factory takes (as stored with a search)
    help: str


STRATEGIES: dict[str, StrategySpec] = {}


def register_strategy(
    name: str, factory: Callable[..., Strategy], options: tuple[str, ...] = (), help: str = ""
) -> None:
    """Add ``name`` to :data:`STRATEGIES` (a name is registered once)."""
    if name in STRATEGIES:
        raise StrategyError(f"strategy {name!r} is already registered")
    STRATEGIES[name] = StrategySpec(name, factory, tuple(options), help)


def strategy_names() -> list[str]:
    """Registered names, in registration order (the default is search.config.DEFAULT_STRATEGY)."""
    return list(STRATEGIES)


def make_strategy(name: str, **options: Any) -> Strategy:
    """The strategy called ``name`` built with the options it takes (others are ignored)."""
    spec = STRATEGIES.get(name)
    if spec is None:
        raise StrategyError(f"unknown strategy {name!r}; allowed: {allowed(STRATEGIES)}")
    return spec.factory(**{k: v for k, v in options.items() if k in spec.options})


def _nni(method: str) -> Callable[..., Strategy]:
    return lambda **options: nni_strategies.NniStrategy(method, **options)


register_strategy(
    "optuna:nsga2",
    optuna_strategies.NSGA2,
    ("population",),
    "NSGA-II, multi-objective evolution",
)
register_strategy(
    "optuna:tpe", optuna_strategies.TPE, ("seed_trials",), "multi-objective Bayesian TPE"
)
register_strategy("optuna:random", optuna_strategies.RandomSearch, (), "uniform random sampling")
register_strategy(
    "optuna:grid", optuna_strategies.GridSearch, (), "every network once, small spaces"
)
_LAMBDA = "; scalar val_acc - macs_weight * log10(MACs)"
register_strategy("nni:random", _nni("nni:random"), (), "NNI random search")
register_strategy("nni:grid", _nni("nni:grid"), (), "NNI grid search")
register_strategy(
    "nni:evolution",
    _nni("nni:evolution"),
    ("population", "sample_size", "macs_weight"),
    "NNI regularized evolution" + _LAMBDA,
)
register_strategy("nni:tpe", _nni("nni:tpe"), ("seed_trials", "macs_weight"), "NNI TPE" + _LAMBDA)
