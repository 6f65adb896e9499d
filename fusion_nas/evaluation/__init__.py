"""Evaluators (architecture in, outcome out) and the pools that run them.

- :mod:`~fusion_nas.evaluation.base`: :class:`EvalTask`, :class:`Outcome`, the
  :class:`Evaluator` protocol, :class:`EvalContext` and :class:`StopTraining`;
- :mod:`~fusion_nas.evaluation.trainer`: :class:`TrainingEvaluator`, the built-in proxy
  training, on a built-in dataset or the user's own ``DataSplits``;
- :mod:`~fusion_nas.evaluation.function`: :class:`FunctionEvaluator`, the user's own
  ``train_fn(model, data, device, report)``;
- :mod:`~fusion_nas.evaluation.table`: :class:`TableEvaluator`, results looked up in a tabular
  benchmark;
- :mod:`~fusion_nas.evaluation.pools`: :class:`InlinePool`, :class:`ProcessPool` and
  :func:`make_pool`, which run any evaluator for the search loop.
"""

from fusion_nas.evaluation.base import EvalContext, EvalTask, Evaluator, Outcome, StopTraining
from fusion_nas.evaluation.function import FunctionEvaluator
from fusion_nas.evaluation.pools import InlinePool, Pool, ProcessPool, make_pool
from fusion_nas.evaluation.table import TableEvaluator, TablePool
from fusion_nas.evaluation.trainer import TrainingEvaluator, evaluate

__all__ = [
    "EvalContext",
    "EvalTask",
    "Evaluator",
    "FunctionEvaluator",
    "InlinePool",
    "Outcome",
    "Pool",
    "ProcessPool",
    "StopTraining",
    "TableEvaluator",
    "TablePool",
    "TrainingEvaluator",
    "evaluate",
    "make_pool",
]
