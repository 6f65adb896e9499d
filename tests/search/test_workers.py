"""The loop's incremental ledger agrees with counting every trial afresh.

Trials are made with ``optuna.trial.create_trial`` in the states and attributes a search
writes; after each batch the ledger (fed the whole list, as the loop feeds it from Optuna's
in-memory storage, or only the rows of trials new or still open, as it reads an RDB store) must
give the same tally, counts, best accuracy, front size and rung results as the functions that
read every trial.
"""

from __future__ import annotations

import random

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from fusion_nas.pareto import pareto_mask
from fusion_nas.search.fidelity import rung_points
from fusion_nas.search.workers import Ledger, tally
from fusion_nas.store.records import RETRY_HISTORY_KEY, RETRY_OF_KEY, TrialRecord, TrialStatus


def _trial(number: int, rng: random.Random) -> FrozenTrial:
    """A trial in a random state: complete (some infeasible), failed, stopped, interrupted,
    running or waiting, with a few repeated (macs, val_acc) points."""
    kind = rng.choice(["complete", "complete", "infeasible", "failed", "stopped", "cut", "run"])
    macs, acc = rng.choice([100, 200, 300, 400]), rng.choice([0.5, 0.6, 0.7, 0.8])
    attrs = {"arch_id": f"a{macs}-{acc}", "macs": macs, "params": 1}
    if kind in ("complete", "infeasible"):
        attrs.update(status=kind, val_acc=acc, rungs=[[1, acc - 0.1], [3, acc]])
        t = optuna.trial.create_trial(state=TrialState.COMPLETE, values=[acc, macs])
    elif kind == "stopped":
        attrs.update(status=kind, rungs=[[1, acc - 0.2]], fail_reason="stopped")
        t = optuna.trial.create_trial(state=TrialState.PRUNED)
    elif kind == "run":
        attrs.update(status="running", rungs=[[1, acc]])
        state = rng.choice([TrialState.RUNNING, TrialState.WAITING])
        t = optuna.trial.create_trial(state=state)
    else:
        attrs.update(status="interrupted" if kind == "cut" else "failed", fail_reason="x")
        t = optuna.trial.create_trial(state=TrialState.FAIL)
    t.user_attrs.update(attrs)
    t.number = number
    return t


def _feed(ledger: Ledger, trials: list[FrozenTrial], how: str) -> list[int]:
    """Give ``ledger`` the study's ``trials`` as the loop does; return the numbers loaded."""
    if how == "update":
        ledger.update(list(trials))
        return [t.number for t in trials]
    loaded: list[int] = []

    def load(number: int) -> FrozenTrial:
        loaded.append(number)
        return trials[number]

    rows = [
        (t.number, t.state) for t in trials if t.number >= ledger.seen or t.number in ledger.open
    ]
    ledger.take(rows, load)
    return loaded


@pytest.mark.parametrize("how", ["update", "take"])
def test_the_ledger_counts_as_a_fresh_read_does(how: str) -> None:
    rng = random.Random(0)
    trials: list[FrozenTrial] = []
    ledger = Ledger()
    for batch in range(30):
        for _ in range(rng.randint(0, 4)):
            trials.append(_trial(len(trials), rng))
        # Trials still open finish later (another worker's), one is lost and retried.
        for i, t in enumerate(trials):
            if t.state == TrialState.RUNNING and rng.random() < 0.3:
                done = _trial(t.number, rng)
                while done.state in (TrialState.RUNNING, TrialState.WAITING):
                    done = _trial(t.number, rng)
                trials[i] = done
        if batch == 10:
            lost = next(t for t in trials if t.state == TrialState.FAIL)
            retry = optuna.trial.create_trial(state=TrialState.WAITING)
            retry.number = len(trials)
            retry.system_attrs.update({RETRY_OF_KEY: lost.number, RETRY_HISTORY_KEY: [lost.number]})
            trials.append(retry)
        seen, still_open = ledger.seen, set(ledger.open)
        loaded = _feed(ledger, trials, how)
        if how == "take":  # only trials new since the last look, or open at it, are read
            assert all(n >= seen or n in still_open for n in loaded)
        assert ledger.tally() == tally(trials)
        for below in range(max(0, len(trials) - 5), len(trials) + 1):
            assert ledger.tally(below=below) == tally(trials, below=below)
        again = {n for t in trials for n in t.system_attrs.get(RETRY_HISTORY_KEY, [])}
        done = [TrialRecord.from_trial(t) for t in trials if t.number not in again]
        done = [r for r in done if r.status.finished]
        counts = ledger.counts()
        for status in TrialStatus:
            if status.finished:
                assert counts[status] == sum(r.status == status for r in done), status
        ok = [r for r in done if r.status == TrialStatus.COMPLETE]
        accs, macs = [r.val_acc for r in ok], [r.macs for r in ok]
        assert ledger.best_val_acc == max(accs, default=None)
        assert ledger.front_size == (int(pareto_mask(accs, macs).sum()) if ok else 0)
        for epochs in (1, 3):
            assert ledger.rung_points(epochs) == rung_points(trials, epochs)


@pytest.mark.parametrize("how", ["update", "take"])
def test_a_told_trial_counts_once_and_is_not_read_again(how: str) -> None:
    rng = random.Random(1)
    trials = [_trial(0, rng)]
    while trials[0].state != TrialState.COMPLETE:
        trials = [_trial(0, rng)]
    ledger = Ledger()
    ledger.told(TrialRecord.from_trial(trials[0]))  # told before the store is read
    loaded = _feed(ledger, trials, how)
    assert ledger.tally() == tally(trials) and len(ledger.records) == 1
    assert ledger.seen == 1
    if how == "take":
        assert loaded == []
