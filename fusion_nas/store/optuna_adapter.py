"""The one home of Optuna's private fields that fusion-nas relies on (pinned by a test).

Optuna gives no public way to reach a study's storage, an ask/tell trial's id or the RDB
storage behind its cache, yet a search that beats for its own trials needs all three.
``tests/store/test_optuna_adapter.py`` pins each behaviour used here, so an Optuna upgrade that
changes one fails there, not deep inside a search.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def asked_trial(trial: optuna.Trial) -> FrozenTrial:
    """An asked ``trial`` as the ask read it from the storage (system attributes included,
    e.g. a retry's), and as written since through this process: no storage read."""
    return trial._cached_frozen_trial


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


CONSTRAINT_PREFIX = "constraints:"  # Optuna's system attribute of Trial.set_constraint(key, ...)


def write_attrs(
    trial: optuna.Trial,
    user: Mapping[str, Any],
    constraints: Mapping[str, float] | None = None,
) -> None:
    """Set user attributes and constraints of an asked ``trial`` in ONE transaction.

    ``trial.set_user_attr`` and ``trial.set_constraint`` commit once per attribute; an RDB
    storage is written here through its own per-attribute upsert, in one session. Other
    storages (Optuna's in-memory one) are written attribute by attribute. The trial's cached
    copy is updated as Optuna's own setters update it.
    """
    system = {f"{CONSTRAINT_PREFIX}{k}": float(v) for k, v in (constraints or {}).items()}
    storage, tid = trial.storage, trial._trial_id
    rdb = rdb_of(storage)
    if rdb is None:
        for key, value in user.items():
            storage.set_trial_user_attr(tid, key, value)
        for key, value in system.items():
            storage.set_trial_system_attr(tid, key, value)
    else:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(rdb.scoped_session, True) as session:
            for key, value in user.items():
                rdb._set_trial_attr_without_commit(
                    session, models.TrialUserAttributeModel, tid, key, value
                )
            for key, value in system.items():
                rdb._set_trial_attr_without_commit(
                    session, models.TrialSystemAttributeModel, tid, key, value
                )
    cached = trial._cached_frozen_trial
    cached.user_attrs.update(user)
    cached.system_attrs.update(system)


def set_attrs(storage: optuna.storages.BaseStorage, trial_id: int, user: Mapping[str, Any]) -> None:
    """Set user attributes of the stored trial ``trial_id`` in one transaction (RDB)."""
    rdb = rdb_of(storage)
    if rdb is None:
        for key, value in user.items():
            storage.set_trial_user_attr(trial_id, key, value)
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session, True) as session:
        for key, value in user.items():
            rdb._set_trial_attr_without_commit(
                session, models.TrialUserAttributeModel, trial_id, key, value
            )


def count_trials(storage: optuna.storages.BaseStorage, study_id: int) -> int:
    """How many trials study ``study_id`` has: one COUNT query on an RDB storage (Optuna's
    ``get_n_trials`` loads every trial to count them)."""
    rdb = rdb_of(storage)
    if rdb is None:
        return storage.get_n_trials(study_id)
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session) as session:
        query = session.query(sqlalchemy.func.count(models.TrialModel.trial_id))
        return int(query.filter(models.TrialModel.study_id == study_id).scalar())
