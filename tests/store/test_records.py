"""Typed records: statuses, search and retrain records round-trip through a real Optuna store."""

from __future__ import annotations

import optuna
import pytest

from fusion_nas.store import records
from fusion_nas.store.queries import trials_frame
from fusion_nas.store.records import (
    RetrainRecord,
    SearchRecord,
    TrialRecord,
    TrialStatus,
    read_retrains,
    search_record,
    trial_status,
    write_retrain,
)
from fusion_nas.store.store import Store
from tests.helpers.records import add_trial, new_study, search_rec


@pytest.fixture()
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path}/store.db")


def test_every_status_round_trips_through_the_store(store: Store) -> None:
    study = new_study(store, "s")
    order = list(TrialStatus)  # complete, failed, infeasible, interrupted, stopped, running
    for i, status in enumerate(order):
        add_trial(store, study, status, acc=0.1 * (i + 1), macs=100 * (i + 1), seed=i)
    got = store.records("s")
    assert [r.status for r in got] == order
    assert all(isinstance(r.status, TrialStatus) for r in got)
    by_status = {r.status: r for r in got}
    assert by_status[TrialStatus.INTERRUPTED].fail_reason == "interrupted by the user"
    assert by_status[TrialStatus.FAILED].fail_reason == "loss became NaN"
    assert by_status[TrialStatus.COMPLETE].val_acc == pytest.approx(0.1)
    assert by_status[TrialStatus.COMPLETE].curve == [pytest.approx(0.05), pytest.approx(0.1)]
    assert by_status[TrialStatus.INFEASIBLE].val_acc is None
    stopped = by_status[TrialStatus.STOPPED]  # a PRUNED trial with its rung accuracies
    assert stopped.val_acc is None and stopped.rungs == [(1, pytest.approx(0.5))]
    assert stopped.fail_reason == "stopped after 1 of 3 epochs"
    # Optuna's own states behind the statuses: interrupted is a FAIL with its own status.
    frozen = study.get_trials(deepcopy=False)
    assert frozen[3].state == optuna.trial.TrialState.FAIL
    assert [trial_status(t) for t in frozen] == order
    # The table holds plain strings that parse back to the same statuses.
    df = trials_frame(got)
    assert list(df.status) == [s.value for s in order]
    assert [TrialStatus(s) for s in df.status] == order
    assert all(type(s) is str for s in df.status)


def test_finished_statuses_and_their_strings() -> None:
    assert {s.value for s in TrialStatus} == {
        "complete",
        "failed",
        "infeasible",
        "interrupted",
        "stopped",
        "running",
    }
    assert {s for s in TrialStatus if s.finished} == {
        TrialStatus.COMPLETE,
        TrialStatus.FAILED,
        TrialStatus.INFEASIBLE,
        TrialStatus.STOPPED,
    }
    assert str(TrialStatus.INTERRUPTED) == "interrupted"
    assert TrialStatus("interrupted") is TrialStatus.INTERRUPTED


def test_a_failed_trial_without_a_reason_gets_one(store: Store) -> None:
    study = new_study(store, "bare")
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    (rec,) = store.records("bare")
    assert rec.status == TrialStatus.FAILED and rec.fail_reason == "trial ended in state FAIL"


def test_search_record_round_trip_and_foreign_studies(store: Store) -> None:
    rec = search_rec(max_flops=10_000, strategy_options={"population": 4})
    assert SearchRecord.from_attr(rec.to_attr()) == rec
    assert SearchRecord.from_attr({**rec.to_attr(), "from_the_future": 1}) == rec
    new_study(store, "mine", max_flops=10_000, strategy_options={"population": 4})
    stored = store.search_record("mine")
    assert isinstance(stored, SearchRecord)
    assert stored.max_flops == 10_000 and stored.strategy_options == {"population": 4}
    assert stored.objectives == records.OBJECTIVES
    optuna.create_study(study_name="foreign", storage=store.storage)
    assert search_record({}) is None and search_record({"other": 1}) is None
    assert store.search_names() == ["mine"] and not store.has_search("foreign")


@pytest.mark.parametrize(
    "damage",
    [{"n_trials": "ten"}, {"seed": None}, {"dataset": 3}, {"proxy": []}, {"n_trials": True}],
    ids=["text-trials", "no-seed", "number-dataset", "list-proxy", "bool-trials"],
)
def test_a_damaged_search_record_is_left_out_not_fatal(store: Store, damage: dict) -> None:
    new_study(store, "good")
    bad = optuna.create_study(study_name="bad", storage=store.storage)
    bad.set_user_attr(records.SEARCH_KEY, {**search_rec().to_attr(), **damage})
    assert search_record(bad.user_attrs) is None
    assert store.search_names() == ["good"]  # listed without the damaged one
    assert [row["name"] for row in store.summaries()] == ["good"]
    missing = {k: v for k, v in search_rec().to_attr().items() if k != "space_toml"}
    assert search_record({records.SEARCH_KEY: missing}) is None


def test_retrain_records_round_trip(store: Store) -> None:
    study = new_study(store, "rt")
    rec = RetrainRecord(
        search="rt",
        trial=2,
        arch_id="abc",
        arch={"space": "digits", "stages": []},
        arch_desc="conv(k3)@8",
        macs=1000,
        params=200,
        proxy_val_acc=0.5,
        epochs=3,
        train_samples=10,
        test_samples=5,
        test_acc=0.6,
        seconds=1.5,
        created="2026-01-01T00:00:00+00:00",
        files={"code": "model.py"},
    )
    write_retrain(study, rec)
    write_retrain(study, RetrainRecord(**{**rec.to_attr(), "trial": 0, "test_acc": 0.4}))
    attrs = store.load_study("rt").user_attrs
    got = read_retrains(attrs)
    assert list(got) == [0, 2] and got[2] == rec and got[0].test_acc == 0.4
    assert records.RETRAIN_PREFIX + "2" in attrs
    # The search record is not a retrain record, and a retrain record is not a search.
    assert search_record(attrs) == store.search_record("rt")


def test_trial_record_reads_a_frozen_trial_directly() -> None:
    frozen = optuna.trial.create_trial(
        values=[0.7, 500],
        user_attrs={"status": "complete", "val_acc": 0.7, "macs": 500, "params": 9},
    )
    rec = TrialRecord.from_trial(frozen)
    assert rec.status is TrialStatus.COMPLETE and rec.val_acc == 0.7 and rec.macs == 500
    row = rec.as_row()
    assert row["status"] == "complete" and set(row) == set(records.TRIAL_FIELDS)
