"""The results store: typed records, the Optuna RDB store, and the query layer."""

from fusion_nas._lazy import lazy_exports

_EXPORTS = {
    "Store": ".store",
    "StoredSearch": ".handles",
    "StoredTrial": ".handles",
    "redact_url": ".store",
    "resolve_url": ".store",
    "quiet_optuna": ".store",
    "TrialStatus": ".records",
    "TrialRecord": ".records",
    "SearchRecord": ".records",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
