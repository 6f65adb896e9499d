"""The Optuna behaviour that fusion_nas.store.optuna_adapter relies on, pinned.

Each test names a private field (or a public behaviour reached through one) that the search
uses; an Optuna upgrade that changes it fails here first.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import TrialState

from fusion_nas.store import optuna_adapter as oa
from fusion_nas.store import records
from fusion_nas.store.store import Store


def _rdb(tmp_path: Path, **kwargs) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():  # heartbeats are experimental
        warnings.simplefilter("ignore")
        return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}", **kwargs)


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():  # "heartbeats are supposed to be used with optimize"
        warnings.simplefilter("ignore")
        return study.ask()


def test_the_study_keeps_an_in_memory_storage_as_passed() -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    assert oa.storage_of(study) is storage
    assert oa.rdb_of(oa.storage_of(study)) is None
    assert not oa.heartbeats_enabled(oa.storage_of(study))


def test_an_rdb_storage_is_wrapped_in_a_cache_whose_backend_is_it(tmp_path: Path) -> None:
    rdb = _rdb(tmp_path, heartbeat_interval=5, grace_period=15)
    study = optuna.create_study(storage=rdb)
    storage = oa.storage_of(study)
    assert isinstance(storage, optuna.storages._CachedStorage)  # not the RDB storage itself
    assert storage._backend is rdb
    assert oa.rdb_of(storage) is rdb and oa.rdb_of(rdb) is rdb
    # what the heartbeat thread and the stale check read: through the cache, and on the RDB
    assert oa.heartbeats_enabled(storage)
    assert storage.get_heartbeat_interval() == 5
    assert rdb.grace_period == 15


def test_an_rdb_storage_without_heartbeats_keeps_none(tmp_path: Path) -> None:
    study = optuna.create_study(storage=_rdb(tmp_path))
    assert oa.rdb_of(oa.storage_of(study)) is not None
    assert not oa.heartbeats_enabled(oa.storage_of(study))


def test_the_stores_studies_sit_on_its_rdb_storage(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=store.storage, study_name="s")
    assert oa.rdb_of(oa.storage_of(study)) is store.storage
    assert oa.heartbeats_enabled(oa.storage_of(study))


def test_an_asked_trials_id_is_its_storage_id(tmp_path: Path) -> None:
    study = optuna.create_study(storage=_rdb(tmp_path, heartbeat_interval=5))
    _ask(study)
    trial = _ask(study)
    frozen = study.get_trials(deepcopy=False)[-1]
    assert oa.trial_id(trial) == frozen._trial_id
    storage = oa.storage_of(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    assert oa.trial_id(trial) == storage.get_trial_id_from_study_id_trial_number(
        study_id, trial.number
    )
    assert oa.frozen_trial(study, trial).number == trial.number
    oa.storage_of(study).record_heartbeat(oa.trial_id(trial))  # what the heartbeat thread calls


def test_a_lost_trial_is_retried_with_the_keys_records_reads(tmp_path: Path) -> None:
    with warnings.catch_warnings():  # the callback is experimental
        warnings.simplefilter("ignore")
        retry_once = RetryFailedTrialCallback(max_retry=1)
    rdb = _rdb(
        tmp_path, heartbeat_interval=1, grace_period=1, heartbeat_stale_trial_callback=retry_once
    )
    study = optuna.create_study(storage=rdb)
    lost = _ask(study)
    oa.storage_of(study).record_heartbeat(oa.trial_id(lost))
    time.sleep(2.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    first, retry = study.get_trials(deepcopy=False)
    assert first.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert records.retry_of(retry) == lost.number
    assert records.retry_history(retry) == [lost.number]
    asked = _ask(study)  # the retry is what the next ask hands out
    assert asked.number == retry.number
    assert records.retry_of(oa.frozen_trial(study, asked)) == lost.number
    assert records.retry_of(oa.asked_trial(asked)) == lost.number  # as the ask read it


def test_attributes_and_constraints_are_written_in_one_commit(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=store.storage, study_name="s")
    trial = _ask(study)
    commits = []
    sqlalchemy.event.listen(oa.rdb_engine(store.storage), "commit", lambda c: commits.append(1))
    oa.write_attrs(trial, {"a": 1, "b": [2]}, {"macs_over_budget": -1.0})
    assert len(commits) == 1
    stored = oa.frozen_trial(study, trial)
    assert stored.user_attrs == {"a": 1, "b": [2]} == trial.user_attrs
    assert stored.constraints == {"macs_over_budget": -1.0}  # as Trial.set_constraint stores it
    commits.clear()  # reads commit too
    oa.set_attrs(store.storage, oa.trial_id(trial), {"c": "x", "d": None})
    assert len(commits) == 1 and oa.frozen_trial(study, trial).user_attrs["c"] == "x"
    assert oa.count_trials(store.storage, store.storage.get_study_id_from_name("s")) == 1


def test_attributes_are_replaced_a_heartbeat_is_written_and_a_finished_trial_refuses(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=store.storage, study_name="s")
    trial = _ask(study)
    tid = oa.trial_id(trial)
    commits = []
    sqlalchemy.event.listen(oa.rdb_engine(store.storage), "commit", lambda c: commits.append(1))
    oa.write_attrs(trial, {"a": 1, "b": [2]}, {"k": 1.0}, heartbeat=True)
    oa.write_attrs(trial, {"a": 3, "c": "x"}, {"k": -1.0}, heartbeat=True)  # upserts
    assert len(commits) == 2
    stored = oa.frozen_trial(study, trial)
    assert stored.user_attrs == {"a": 3, "b": [2], "c": "x"} == trial.user_attrs
    assert stored.constraints == {"k": -1.0}
    with oa.rdb_engine(store.storage).connect() as conn:
        beats = conn.execute(sqlalchemy.text("SELECT trial_id FROM trial_heartbeats")).all()
    assert [b[0] for b in beats] == [tid]  # one row a trial, as Optuna's record_heartbeat keeps
    assert store.storage._get_stale_trial_ids(oa.study_id(study)) == []  # it is fresh
    study.tell(trial, 0.5)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        oa.write_attrs(trial, {"a": 4})
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        oa.set_attrs(store.storage, tid, {"a": 4})
    assert oa.frozen_trial(study, trial).user_attrs["a"] == 3  # nothing half-written


def test_trial_states_reads_the_trials_after_an_id_and_the_named_ones(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=store.storage, study_name="s")
    other = optuna.create_study(storage=store.storage, study_name="o")
    _ask(other)  # another study's trial is never listed
    asked = [_ask(study) for _ in range(4)]
    study.tell(asked[0], 1.0)
    study.tell(asked[2], state=TrialState.FAIL)
    storage, sid = oa.storage_of(study), oa.study_id(study)
    ids = [oa.trial_id(t) for t in asked]
    rows = oa.trial_states(storage, sid, after=ids[2], ids=[ids[0], ids[1]])
    assert rows == [
        (0, ids[0], TrialState.COMPLETE),
        (1, ids[1], TrialState.RUNNING),
        (3, ids[3], TrialState.RUNNING),
    ]
    assert [r[0] for r in oa.trial_states(storage, sid, after=-1)] == [0, 1, 2, 3]
    assert oa.trial_states(optuna.storages.InMemoryStorage(), 0, after=-1) is None


def test_attributes_go_one_by_one_into_an_in_memory_storage() -> None:
    study = optuna.create_study()
    trial = study.ask()
    oa.write_attrs(trial, {"a": 1}, {"k": 2.0})
    (frozen,) = study.get_trials()
    assert frozen.user_attrs == {"a": 1} and frozen.constraints == {"k": 2.0}
    assert oa.count_trials(oa.storage_of(study), 0) == 1
