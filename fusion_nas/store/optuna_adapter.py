"""The one home of Optuna's private fields that fusion-nas relies on (pinned by a test).

Optuna gives no public way to reach a study's storage, an ask/tell trial's id or the RDB
storage behind its cache, yet a search that beats for its own trials needs all three.
``tests/store/test_optuna_adapter.py`` pins each behaviour used here, so an Optuna upgrade that
changes one fails there, not deep inside a search.
"""

from __future__ import annotations

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` reads and writes (Optuna's cache around an RDB storage)."""
    return study._storage


def trial_id(trial: optuna.Trial) -> int:
    """The storage id of an asked trial (not its number within the study)."""
    return trial._trial_id


def frozen_trial(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """The stored state of an asked ``trial``, system attributes included."""
    return storage_of(study).get_trial(trial_id(trial))


def rdb_of(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
    """The RDB storage behind ``storage`` (Optuna wraps it in a cache), else ``None``."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def heartbeats_enabled(storage: optuna.storages.BaseStorage) -> bool:
    """Whether ``storage`` keeps heartbeats (an RDB store; not Optuna's in-memory storage)."""
    rdb = rdb_of(storage)
    return rdb is not None and bool(rdb.get_heartbeat_interval())


def engine_of(storage: optuna.storages.BaseStorage) -> sqlalchemy.engine.Engine:
    """The SQLAlchemy engine of the RDB storage behind ``storage`` (to count its commits)."""
    rdb = rdb_of(storage)
    if rdb is None:
        raise TypeError(f"{type(storage).__name__} has no database engine")
    return rdb.engine
