"""The one home of Optuna's private fields that fusion-nas relies on (pinned by a test).

Optuna gives no public way to reach a study's storage, an ask/tell trial's id or the RDB
storage behind its cache, yet a search that beats for its own trials needs all three.
``tests/store/test_optuna_adapter.py`` pins each behaviour used here, so an Optuna upgrade that
changes one fails there, not deep inside a search.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


# --------------------------------------------------------------------------- Optuna's tables
# Readers that must not load every trial ask Optuna's ``trials`` table directly (columns
# ``trial_id``, ``number``, ``study_id``, ``state``, ``datetime_complete``; ``state`` holds the
# ``TrialState`` name). The schema is Optuna's, so it lives here, pinned by a test.

_STATS_SQL = sqlalchemy.text(
    "SELECT study_id, state, COUNT(*), MAX(trial_id), MAX(number), MAX(datetime_complete) "
    "FROM trials GROUP BY study_id, state"
)


def rdb_engine(storage: optuna.storages.BaseStorage) -> sqlalchemy.engine.Engine | None:
    """The SQLAlchemy engine of the RDB storage behind ``storage``, else ``None``."""
    rdb = rdb_of(storage)
    return None if rdb is None else rdb.engine


def trial_stats(storage: optuna.storages.BaseStorage) -> dict[int, tuple[Any, ...]] | None:
    """Per study id: its trials' counts by state, largest id and number, last completion.

    One aggregate query over every study, however many trials they hold. The value changes
    whenever a trial is added or changes state (a finished Optuna trial never changes again),
    so it keys caches of what was read from a study. ``None`` without an RDB storage.
    """
    engine = rdb_engine(storage)
    if engine is None:
        return None
    rows: dict[int, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for study_id, state, count, max_id, max_number, last in conn.execute(_STATS_SQL):
            key = (str(state).rpartition(".")[2], int(count), max_id, max_number, str(last))
            rows.setdefault(int(study_id), []).append(key)
    return {study_id: tuple(sorted(keys)) for study_id, keys in rows.items()}


def trial_ids(
    storage: optuna.storages.BaseStorage, study_id: int, after: int, numbers: Iterable[int] = ()
) -> list[int] | None:
    """Storage ids of ``study_id``'s trials numbered above ``after`` or in ``numbers``.

    In trial-number order; one query. ``None`` without an RDB storage.
    """
    engine = rdb_engine(storage)
    if engine is None:
        return None
    extra = sorted({int(n) for n in numbers})
    sql = "SELECT trial_id FROM trials WHERE study_id = :study AND (number > :after"
    params: dict[str, Any] = {"study": int(study_id), "after": int(after)}
    if extra:
        sql += " OR number IN :numbers"
        params["numbers"] = extra
    query = sqlalchemy.text(sql + ") ORDER BY number")
    if extra:
        query = query.bindparams(sqlalchemy.bindparam("numbers", expanding=True))
    with engine.connect() as conn:
        return [int(row[0]) for row in conn.execute(query, params)]


_VALUES_SQL = sqlalchemy.text(
    "SELECT t.number, v.objective, v.value FROM trials t "
    "JOIN trial_values v ON v.trial_id = t.trial_id "
    "WHERE t.study_id = :study AND t.state = 'COMPLETE'"
)


def complete_values(
    storage: optuna.storages.BaseStorage, study_id: int
) -> dict[int, tuple[float | None, ...]] | None:
    """The objective values of ``study_id``'s COMPLETE trials, by trial number (one query).

    Two numbers a trial, not its attributes: what a Pareto test of one trial needs. ``None``
    without an RDB storage.
    """
    engine = rdb_engine(storage)
    if engine is None:
        return None
    found: dict[int, dict[int, float | None]] = {}
    with engine.connect() as conn:
        for number, objective, value in conn.execute(_VALUES_SQL, {"study": int(study_id)}):
            found.setdefault(int(number), {})[int(objective)] = value
    return {n: tuple(vals.get(i) for i in range(max(vals) + 1)) for n, vals in found.items()}


# Whether a COMPLETE trial other than ``number`` dominates (accuracy up, cost down) the point
# (acc, cost): the database scans the study's two-number rows and stops at the first; a value
# stored as +-inf or NaN is NULL there and dominates nothing, as in :func:`complete_values`.
_DOMINATED_SQL = sqlalchemy.text(
    "SELECT 1 FROM trials t "
    "JOIN trial_values a ON a.trial_id = t.trial_id AND a.objective = 0 "
    "JOIN trial_values c ON c.trial_id = t.trial_id AND c.objective = 1 "
    "WHERE t.study_id = :study AND t.state = 'COMPLETE' AND t.number <> :number "
    "AND a.value >= :acc AND c.value <= :cost AND (a.value > :acc OR c.value < :cost) "
    "LIMIT 1"
)


def dominated(
    storage: optuna.storages.BaseStorage, study_id: int, number: int, acc: float, cost: float
) -> bool | None:
    """Whether another COMPLETE trial of ``study_id`` dominates ``(acc, cost)`` (objectives 0
    and 1), answered by one query that returns at most one row; ``None`` without an RDB
    storage."""
    engine = rdb_engine(storage)
    if engine is None:
        return None
    params = {"study": int(study_id), "number": int(number), "acc": acc, "cost": cost}
    with engine.connect() as conn:
        return conn.execute(_DOMINATED_SQL, params).first() is not None


CONSTRAINT_PREFIX = "constraints:"  # Optuna's system attribute of Trial.set_constraint(key, ...)


def study_id(study: optuna.Study) -> int:
    """The storage id of ``study``."""
    return study._study_id


def _state(name: Any) -> optuna.trial.TrialState:
    """A ``trials.state`` column value (the ``TrialState`` name) as the ``TrialState``."""
    return optuna.trial.TrialState[str(name).rpartition(".")[2]]


# One statement per purpose, as text: SQLAlchemy caches each compiled, so a write costs a
# few executions and no statement building. ``ON CONFLICT`` is SQLite's (3.24+) and
# PostgreSQL's upsert; other databases get a DELETE and an INSERT (:func:`_upsert`).
_TRIAL_STATE_SQL = sqlalchemy.text("SELECT number, state FROM trials WHERE trial_id = :trial_id")
_UPSERT_SQL = {
    table: sqlalchemy.text(
        f"INSERT INTO {table} (trial_id, key, value_json) VALUES (:trial_id, :key, :value_json) "
        "ON CONFLICT (trial_id, key) DO UPDATE SET value_json = excluded.value_json"
    )
    for table in ("trial_user_attributes", "trial_system_attributes")
}
_FIRST_BEAT_SQL = sqlalchemy.text(
    "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (:trial_id, CURRENT_TIMESTAMP)"
)
_BEAT_SQL = sqlalchemy.text(
    _FIRST_BEAT_SQL.text + " ON CONFLICT (trial_id) DO UPDATE SET heartbeat = CURRENT_TIMESTAMP"
)
_UNBEAT_SQL = sqlalchemy.text("DELETE FROM trial_heartbeats WHERE trial_id = :trial_id")


def _has_upsert(conn: sqlalchemy.engine.Connection) -> bool:
    """Whether the database of ``conn`` takes ``INSERT ... ON CONFLICT``."""
    import sqlite3

    name = conn.dialect.name
    return name == "postgresql" or (name == "sqlite" and sqlite3.sqlite_version_info >= (3, 24))


def _upsert(
    conn: sqlalchemy.engine.Connection, kind: str, trial_id: int, items: Mapping[str, Any]
) -> None:
    """Set the ``kind`` (``trial_user_attributes``, ``trial_system_attributes``) attributes
    ``items`` of trial ``trial_id``, replacing stored values of the same keys: one statement,
    or a DELETE and an INSERT where the database has no upsert."""
    import json

    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in items.items()]
    if _has_upsert(conn):
        conn.execute(_UPSERT_SQL[kind], rows)
        return
    from optuna.storages._rdb import models

    model = (
        models.TrialUserAttributeModel
        if kind == "trial_user_attributes"
        else models.TrialSystemAttributeModel
    )
    table = model.__table__
    keys = list(items)
    conn.execute(
        sqlalchemy.delete(table).where(table.c.trial_id == trial_id, table.c.key.in_(keys))
    )
    conn.execute(sqlalchemy.insert(table), rows)


def _write_rdb(
    rdb: optuna.storages.RDBStorage,
    trial_id: int,
    user: Mapping[str, Any],
    system: Mapping[str, Any] | None = None,
    heartbeat: bool = False,
) -> None:
    """Upsert attributes (and a first heartbeat) of an unfinished trial: one transaction.

    A few statements, whatever the number of attributes: the trial's state (a finished trial
    raises ``UpdateFinishedTrialError``, as Optuna's setters do), then one multi-row upsert per
    attribute table (:func:`_upsert`) and, with ``heartbeat``, one for the trial's heartbeat
    (the database's now, as Optuna's ``record_heartbeat`` writes it). Optuna's own setters run
    three ORM queries and a commit per attribute.
    """
    with rdb.engine.begin() as conn:
        found = conn.execute(_TRIAL_STATE_SQL, {"trial_id": trial_id}).one_or_none()
        if found is None:
            raise KeyError(f"No trial with trial_id {trial_id} exists.")
        if _state(found.state).is_finished():  # Optuna's message (its check reads it again)
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"Trial#{found.number} has already finished and can not be updated."
            )
        if user:
            _upsert(conn, "trial_user_attributes", trial_id, user)
        if system:
            _upsert(conn, "trial_system_attributes", trial_id, system)
        if heartbeat:
            if not _has_upsert(conn):
                conn.execute(_UNBEAT_SQL, {"trial_id": trial_id})
            conn.execute(
                _BEAT_SQL if _has_upsert(conn) else _FIRST_BEAT_SQL, {"trial_id": trial_id}
            )


def write_attrs(
    trial: optuna.Trial,
    user: Mapping[str, Any],
    constraints: Mapping[str, float] | None = None,
    *,
    heartbeat: bool = False,
) -> None:
    """Set user attributes and constraints of an asked ``trial`` in ONE transaction.

    ``trial.set_user_attr`` and ``trial.set_constraint`` commit once per attribute; an RDB
    storage is written here with a few statements in one transaction (see
    :func:`_write_rdb`); with ``heartbeat`` the trial's first heartbeat goes in the same
    transaction. Other storages (Optuna's in-memory one, which keeps no heartbeats) are
    written attribute by attribute. The trial's cached copy is updated as Optuna's own setters
    update it.
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
        _write_rdb(rdb, tid, user, system, heartbeat=heartbeat)
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
    _write_rdb(rdb, trial_id, user)


def trial_states(
    storage: optuna.storages.BaseStorage, study_id: int, after: int, ids: Iterable[int] = ()
) -> list[tuple[int, int, optuna.trial.TrialState]] | None:
    """``(number, trial id, state)`` of ``study_id``'s trials whose storage id is above
    ``after`` or in ``ids``, by number: no attributes read, and a range of the primary key, so
    the query costs the same at 100 trials as at 10,000 (a study's trial ids grow with its
    trial numbers). ``None`` without an RDB storage.

    What a loop that keeps its own copy of a search needs to find the trials new or changed
    since its last look (a finished Optuna trial never changes again).
    """
    engine = rdb_engine(storage)
    if engine is None:
        return None
    extra = sorted({int(n) for n in ids})
    query = _STATES_SQL if extra else _NEW_STATES_SQL
    params: dict[str, Any] = {"study": int(study_id), "after": int(after)}
    if extra:
        params["ids"] = extra
    with engine.connect() as conn:
        return [(int(n), int(tid), _state(state)) for n, tid, state in conn.execute(query, params)]


_NEW_STATES_SQL = sqlalchemy.text(
    "SELECT number, trial_id, state FROM trials WHERE study_id = :study AND trial_id > :after "
    "ORDER BY number"
)
_STATES_SQL = sqlalchemy.text(
    "SELECT number, trial_id, state FROM trials WHERE study_id = :study "
    "AND (trial_id > :after OR trial_id IN :ids) ORDER BY number"
).bindparams(sqlalchemy.bindparam("ids", expanding=True))


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


# --------------------------------------------------------------------------- bulk readers
# Optuna's ``get_all_trials`` builds each trial through the ORM with its parameters,
# distributions and intermediate values: about 1 ms a trial of a search. Readers need none of
# those: :func:`read_trials` reads the trials table, their values and attributes in a few
# queries of plain rows, optionally only the attribute keys a summary needs.


def _local(moment: Any) -> Any:
    """A stored naive-UTC datetime as Optuna returns it (naive local time)."""
    import datetime as dt

    if moment is None:
        return None
    return moment.replace(tzinfo=dt.timezone.utc).astimezone().replace(tzinfo=None)


def read_trials(
    storage: optuna.storages.BaseStorage,
    study_id: int,
    *,
    after: int | None = None,
    numbers: Iterable[int] = (),
    user_keys: Iterable[str] | None = None,
    system_attrs: bool = True,
) -> list[FrozenTrial] | None:
    """Trials of ``study_id`` as ``FrozenTrial`` (state, values, times, attributes), by number.

    ``after``: only trials numbered above it, plus those in ``numbers`` (``None``: every
    trial). ``user_keys``: only these user attributes (``None``: all). ``system_attrs``:
    read them, or leave them empty. Parameters, distributions and intermediate values are
    left empty: no fusion-nas reader uses them. Four queries, however many trials;
    ``None`` without an RDB storage.
    """
    import json

    engine = rdb_engine(storage)
    if engine is None:
        return None
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    chosen = sqlalchemy.and_(trials.c.study_id == int(study_id))
    if after is not None:
        wanted = trials.c.number > int(after)
        extra = sorted({int(n) for n in numbers})
        if extra:
            wanted = sqlalchemy.or_(wanted, trials.c.number.in_(extra))
        chosen = sqlalchemy.and_(chosen, wanted)
    ids = sqlalchemy.select(trials.c.trial_id).where(chosen).scalar_subquery()
    values_t = models.TrialValueModel.__table__
    user_t = models.TrialUserAttributeModel.__table__
    system_t = models.TrialSystemAttributeModel.__table__
    to_value = models.TrialValueModel.stored_repr_to_value
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.select(
                trials.c.trial_id,
                trials.c.number,
                trials.c.state,
                trials.c.datetime_start,
                trials.c.datetime_complete,
            )
            .where(chosen)
            .order_by(trials.c.number)
        ).all()
        values: dict[int, dict[int, float]] = {}
        query = sqlalchemy.select(
            values_t.c.trial_id, values_t.c.objective, values_t.c.value, values_t.c.value_type
        ).where(values_t.c.trial_id.in_(ids))
        for tid, objective, value, kind in conn.execute(query):
            values.setdefault(tid, {})[objective] = to_value(value, kind)
        user: dict[int, dict[str, Any]] = {}
        query = sqlalchemy.select(user_t.c.trial_id, user_t.c.key, user_t.c.value_json).where(
            user_t.c.trial_id.in_(ids)
        )
        if user_keys is not None:
            query = query.where(user_t.c.key.in_(sorted(set(user_keys))))
        for tid, key, text in conn.execute(query):
            user.setdefault(tid, {})[key] = json.loads(text)
        system: dict[int, dict[str, Any]] = {}
        if system_attrs:
            query = sqlalchemy.select(
                system_t.c.trial_id, system_t.c.key, system_t.c.value_json
            ).where(system_t.c.trial_id.in_(ids))
            for tid, key, text in conn.execute(query):
                system.setdefault(tid, {})[key] = json.loads(text)
    out = []
    for tid, number, state, start, complete in rows:
        vals = values.get(tid)
        out.append(
            FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=[vals.get(i, 0.0) for i in range(max(vals) + 1)] if vals else None,
                datetime_start=_local(start),
                datetime_complete=_local(complete),
                params={},
                distributions={},
                user_attrs=user.get(tid, {}),
                system_attrs=system.get(tid, {}),
                intermediate_values={},
                trial_id=tid,
            )
        )
    return out
