"""The search: config, the ask/tell loop, workers, strategies, fidelity, pre-screen."""

from fusion_nas._lazy import lazy_exports

_EXPORTS = {
    "SearchConfig": ".config",
    "TableSpec": ".config",
    "run_search": ".session",
    "run_trials": ".session",
    "prepare": ".session",
    "open_search": ".session",
    "Progress": ".loop",
    "Terminated": ".signals",
    "terminate_as_interrupt": ".signals",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
