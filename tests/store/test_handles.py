"""The stored-search handle: record, parsed space and settings, typed trials, one refusal."""

from __future__ import annotations

import optuna
import pytest

from fusion_nas.errors import StoreError
from fusion_nas.model.arch import Architecture
from fusion_nas.model.space import SearchSpace
from fusion_nas.store.handles import StoredSearch, StoredTrial
from fusion_nas.store.records import RetrainRecord, TrialStatus, write_retrain
from fusion_nas.store.store import Store, space_input
from tests.store.test_records import add_trial, new_study


@pytest.fixture()
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path}/store.db")


def test_the_handle_holds_the_record_and_parses_the_space_once(store: Store) -> None:
    new_study(store, "s")
    search = store.search("s")
    assert isinstance(search, StoredSearch) and search.name == "s" and search.store is store
    assert search.record == store.search_record("s")
    assert isinstance(search.space, SearchSpace) and search.space is search.space  # cached
    assert search.space.source == search.record.space_toml
    assert search.proxy.to_dict() == {**search.proxy.to_dict(), **search.record.proxy}
    assert space_input(search.space) == space_input(search.record.space_toml)
    with pytest.raises(StoreError, match="no search named 'zz'"):
        store.search("zz")


def test_trials_are_typed_with_their_architecture(store: Store) -> None:
    study = new_study(store, "s")
    add_trial(store, study, TrialStatus.COMPLETE, acc=0.6, macs=500)
    add_trial(store, study, TrialStatus.FAILED, seed=1)
    search = store.search("s")
    trials = search.trials()
    assert [t.number for t in trials] == [0, 1] and all(isinstance(t, StoredTrial) for t in trials)
    assert trials[0].complete and trials[1].status == TrialStatus.FAILED
    assert isinstance(trials[0].arch, Architecture)
    assert trials[0].architecture().to_dict() == trials[0].record.arch
    assert search.trial(1).record == trials[1].record
    assert search.frame().equals(store.trials("s"))
    assert search.pick(pick="best").number == 0 and search.pick(trial=1).number == 1
    with pytest.raises(StoreError, match=r"trial 7 does not exist in search 's'; trials: 0\.\.1"):
        search.trial(7)


def test_a_trial_without_an_architecture_is_refused_in_one_place(store: Store) -> None:
    study = new_study(store, "s")
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={}))
    trial = store.search("s").trial(0)
    assert trial.arch is None
    with pytest.raises(StoreError, match="trial 0 of 's' has no architecture recorded"):
        trial.architecture()


def test_retrain_results_are_read_through_the_handle(store: Store) -> None:
    study = new_study(store, "s")
    add_trial(store, study, TrialStatus.COMPLETE)
    search = store.search("s")
    assert search.retrains() == {}
    rec = RetrainRecord(
        search="s", trial=0, arch_id="a", arch={}, arch_desc="d", macs=1, params=2,
        proxy_val_acc=0.5, epochs=1, train_samples=1, test_samples=1, test_acc=0.4,
        seconds=0.1, created="now", files={},
    )  # fmt: skip
    write_retrain(study, rec)
    assert search.retrains() == {0: rec}
