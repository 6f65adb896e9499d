"""The search: config, the ask/tell loop, workers, strategies, fidelity, pre-screen."""

from fusion_nas._lazy import lazy_exports

_EXPORTS = {
    "SearchConfig": ".loop",
    "run_search": ".loop",
    "run_trials": ".loop",
    "prepare": ".loop",
    "open_search": ".loop",
    "Progress": ".loop",
    "Terminated": ".loop",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
