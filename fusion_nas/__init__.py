"""fusion-nas: neural architecture search over conv/self-attention fusion strategies.

The public API is re-exported here lazily: ``import fusion_nas`` loads neither torch nor
Optuna; each name imports its subpackage the first time it is used.

Layers, lowest first (``.importlinter`` enforces the order): ``model`` (the network, spaces,
architectures, cost), ``training`` (data, devices, the training loop), ``deploy`` (export,
latency, int8, MAC cross-checks), ``store`` (records, the results store, queries),
``evaluation`` (evaluators and worker pools), ``search`` (the ask/tell loop, strategies,
fidelity, pre-screen, supernet), ``analysis`` (figures, explain, baselines, retraining), and
the two faces ``cli`` and ``web``.
"""

from fusion_nas._lazy import lazy_exports
from fusion_nas._version import __version__

_EXPORTS = {
    "Architecture": ".model.arch",
    "StageChoice": ".model.arch",
    "Cost": ".model.cost",
    "arch_cost": ".model.cost",
    "count_cost": ".model.cost",
    "FusionNasError": ".errors",
    "export_code": ".deploy.export",
    "FusionNet": ".model.build",
    "build_model": ".model.build",
    "SearchConfig": ".search.config",
    "run_search": ".search.session",
    "SearchSpace": ".model.space",
    "builtin_spaces": ".model.space",
    "load_space": ".model.space",
    "parse_space": ".model.space",
    "Store": ".store.store",
    "ProxyConfig": ".training.loop",
    "DataSplits": ".training.data",
    "Evaluator": ".evaluation.base",
    "EvalContext": ".evaluation.base",
    "StopTraining": ".evaluation.base",
    "TrainingEvaluator": ".evaluation.trainer",
    "FunctionEvaluator": ".evaluation.function",
    "TableEvaluator": ".evaluation.table",
    "make_pool": ".evaluation.pools",
    "suggest_architecture": ".search.strategies.optuna_strategies",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["__version__", *sorted(_EXPORTS)]
