"""Several workers on one study: who asked a trial, the store-wide tally, heartbeats, lost trials.

Every worker counts a search's trials the same way (:func:`tally`), so together they stop at
exactly the search's total; a worker that finds the total taken before its trial's number
drops that trial (:func:`taken_before`). A trial whose worker stops beating is failed and
queued once more (:func:`fail_stale`); its retry runs the lost trial's network again.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from fusion_nas.store import optuna_adapter, records

PROCESS_ENDED = "the process running this trial ended"
NOT_NEEDED = "not needed: other workers had already started the search's last trials"


def worker_id() -> str:
    """``host:pid`` of this process, stored on each trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Tally:
    """Where a search stands in the store, across every worker."""

    finished: int  # complete, failed or over budget (a lost trial that was retried: not)
    running: int  # being trained (or held) by some worker
    waiting: int  # retries queued for the next worker that asks

    @property
    def taken(self) -> int:
        """Trials that count towards the total or will: no worker asks beyond it."""
        return self.finished + self.running + self.waiting


def retried(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of the lost trials that a retry runs again (they no longer count)."""
    return {n for t in trials for n in records.retry_history(t)}


def tally(trials: Iterable[FrozenTrial], below: int | None = None) -> Tally:
    """Count a search's trials the way every worker does (see :class:`Tally`).

    With ``below``, only trials numbered below it are counted; a lost trial still does not
    count when its retry is numbered later.
    """
    trials = list(trials)
    again = retried(trials)  # over every trial: a retry comes after the trial it re-runs
    finished = running = waiting = 0
    for t in trials:
        if below is not None and t.number >= below:
            continue
        if t.state == TrialState.RUNNING:
            running += 1
        elif t.state == TrialState.WAITING:
            waiting += 1
        elif records.trial_status(t).finished and t.number not in again:
            finished += 1
    return Tally(finished, running, waiting)


def has_room(trials: Iterable[FrozenTrial], target: int) -> bool:
    """Whether a worker may ask another trial: a retry is queued, or ``target`` is not taken."""
    now = tally(trials)
    return now.waiting > 0 or now.taken < target


def taken_before(trials: Iterable[FrozenTrial], number: int, target: int) -> bool:
    """Whether trials numbered below ``number`` already take all ``target`` places (the
    trial ``number`` lost the race for the last place and is not needed)."""
    return tally(trials, below=number).taken >= target


def fail_stale(study: optuna.Study) -> None:
    """End the running trials of lost workers; queue each once more.

    A trial whose heartbeat is older than the grace period is failed by Optuna's own
    ``fail_stale_trials``, whose callback (the store's ``RetryFailedTrialCallback``) queues a
    retry. A running trial that never had a worker (asked outside the loop, or by a version
    without heartbeats) is marked interrupted once it is older than the grace period.
    """
    storage = optuna_adapter.storage_of(study)
    if not optuna_adapter.heartbeats_enabled(storage):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    rdb = optuna_adapter.rdb_of(storage)
    assert rdb is not None
    grace = rdb.grace_period or 2 * (rdb.get_heartbeat_interval() or 0)
    cutoff = dt.datetime.now() - dt.timedelta(seconds=grace)  # naive local, as Optuna writes
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if records.trial_worker(t) is not None or (t.datetime_start or cutoff) > cutoff:
            continue
        try:
            records.mark_interrupted(storage, study.study_name, t.number, PROCESS_ENDED)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            pass  # another worker ended it first


class Beat:
    """Records a heartbeat for every trial this run holds open, from a background thread.

    ``study.optimize`` runs such a thread for its trial; an ask/tell loop must do it itself.
    """

    def __init__(self, study: optuna.Study) -> None:
        self.storage = optuna_adapter.storage_of(study)
        self.enabled = optuna_adapter.heartbeats_enabled(self.storage)
        self.interval = self.storage.get_heartbeat_interval() if self.enabled else None
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        """Beat for ``trial_id`` now and from here on."""
        if not self.enabled:
            return
        self.storage.record_heartbeat(trial_id)
        with self._lock:
            self._ids.add(trial_id)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
            self._thread.start()

    def remove(self, trial_id: int) -> None:
        """Stop beating for ``trial_id`` (told or interrupted)."""
        with self._lock:
            self._ids.discard(trial_id)

    def _loop(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self._ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # a busy store: the next beat is within the grace period
                    continue

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
