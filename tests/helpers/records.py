"""Searches and trials written through the store and the records writers."""

from __future__ import annotations

import random

import optuna

from fusion_nas.model.space import load_space
from fusion_nas.store.records import (
    SearchRecord,
    TrialStatus,
    mark_interrupted,
    write_proposal,
    write_result,
)
from fusion_nas.store.store import Store


def search_rec(**kw) -> SearchRecord:
    space = load_space("digits")
    values = dict(
        space_name=space.name,
        space_toml=space.source,
        dataset="synthetic",
        proxy={"epochs": 1},
        strategy="optuna:random",
        seed=0,
        n_trials=5,
    )
    return SearchRecord(**{**values, **kw})


def add_trial(
    store: Store,
    study: optuna.Study,
    status: TrialStatus,
    acc: float = 0.5,
    macs: int = 1000,
    seed: int = 0,
) -> int:
    """One trial written through the records writers, ending in ``status``; its number."""
    space = load_space("digits")
    arch = space.sample(random.Random(seed))
    trial = study.ask()
    write_proposal(trial, arch.to_dict(), arch.arch_id, arch.describe(), macs, 2 * macs)
    if status == TrialStatus.COMPLETE:
        write_result(trial, status, val_acc=acc, curve=[acc / 2, acc], train_seconds=0.1)
        study.tell(trial, [acc, macs])
    elif status == TrialStatus.INFEASIBLE:
        write_result(trial, status, fail_reason="over budget, not trained")
        study.tell(trial, [0.0, macs])
    elif status == TrialStatus.FAILED:
        write_result(trial, status, fail_reason="loss became NaN")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    elif status == TrialStatus.INTERRUPTED:
        mark_interrupted(store.storage, study.study_name, trial.number, "interrupted by the user")
    elif status == TrialStatus.STOPPED:
        note = "stopped after 1 of 3 epochs"
        write_result(trial, status, curve=[acc], rungs=[(1, acc)], fail_reason=note)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return trial.number


def new_study(store: Store, name: str, **kw) -> optuna.Study:
    """A search created through the store, with a record from :func:`search_rec`."""
    return store.create_study(name, search_rec(**kw))
