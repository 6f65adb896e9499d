"""Search strategies behind one small interface, looked up by name (``engine:method``)."""

from fusion_nas.strategies.base import Strategy
from fusion_nas.strategies.registry import STRATEGIES, make_strategy

__all__ = ["STRATEGIES", "Strategy", "make_strategy"]
