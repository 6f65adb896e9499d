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
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from fusion_nas.search.fidelity import RungPoint, rung_points
from fusion_nas.store import optuna_adapter, records
from fusion_nas.store.records import TrialRecord, TrialStatus

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

    def add(self, trial_id: int, *, beaten: bool = False) -> None:
        """Beat for ``trial_id`` now (unless ``beaten``: its first beat is written) and from
        here on."""
        if not self.enabled:
            return
        if not beaten:
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


class Ledger:
    """A search's trials as this worker last read them, brought up to date incrementally.

    :meth:`take` takes the trials new or still open since the last look, as ``(number,
    state)`` rows of one small query, and reads only those it has no record of (the loop, on
    an RDB store); :meth:`update` takes the study's trials, all of them by number (Optuna's
    in-memory storage, or a first look at a resumed search). A finished trial never changes,
    so its record is built once, when it is first seen finished; only trials never seen
    before and trials still open (running or waiting, a few: one per worker) are looked at
    again.
    From that it keeps what the loop asks after every trial: the store-wide tally, the counts
    and front of the progress line, and every network's results at each rung.
    """

    def __init__(self) -> None:
        self.records: dict[int, TrialRecord] = {}  # number -> record of a finished trial
        self.open: dict[int, FrozenTrial] = {}  # number -> trial still running or waiting
        self.retried: set[int] = set()  # lost trials that a retry runs again (they don't count)
        self._next = 0  # every trial numbered below it has been seen
        self._counts: Counter[TrialStatus] = Counter()  # finished records by status
        self.best_val_acc: float | None = None
        # The Pareto front of the complete trials as distinct (macs, val_acc) points, by MACs
        # ascending (accuracy then strictly ascending): what pareto_mask counts.
        self._front: list[tuple[float, float]] = []
        self._rungs: dict[int, list[RungPoint]] = {}  # epochs -> finished trials' results

    @property
    def seen(self) -> int:
        """Every trial numbered below this has been seen (finished, or in :attr:`open`)."""
        return self._next

    def update(self, trials: Sequence[FrozenTrial]) -> list[TrialRecord]:
        """Take in the study's ``trials``; return the records of trials finished since the
        last update, by number."""
        dense = not trials or trials[-1].number == len(trials) - 1  # position == number
        by_number = trials if dense else {t.number: t for t in trials}
        last = len(trials) if dense else max(by_number, default=-1) + 1  # type: ignore[arg-type]
        look = sorted({*self.open, *range(self._next, last)})
        new = []
        for number in look:
            t = by_number[number] if dense else by_number.get(number)  # type: ignore[union-attr]
            if t is not None:
                new.extend(self._look(t))
        self._next = max(self._next, last)
        return new

    def take(
        self, rows: Iterable[tuple[int, TrialState]], load: Callable[[int], FrozenTrial]
    ) -> list[TrialRecord]:
        """Take in the trials new or still open since the last look, as ``(number, state)``
        rows (:func:`~fusion_nas.store.optuna_adapter.trial_states` of the trials numbered
        from :attr:`seen` on and of :attr:`open`); ``load(number)`` reads one trial, and is
        called only for a trial not yet recorded finished. Returns the records of trials
        finished since the last look, by number (as :meth:`update`)."""
        new = []
        for number, state in rows:
            if state.is_finished() and number in self.records:  # told by this worker
                self.open.pop(number, None)
            else:
                new.extend(self._look(load(number)))
            self._next = max(self._next, number + 1)
        return new

    def _look(self, t: FrozenTrial) -> list[TrialRecord]:
        """Take in one trial new or still open; its record if it has newly finished."""
        self.retried.update(records.retry_history(t))
        if not t.state.is_finished():
            self.open[t.number] = t
            return []
        self.open.pop(t.number, None)
        if t.number in self.records:  # told by this worker: recorded already
            return []
        record = TrialRecord.from_trial(t)
        self._add(record)
        return [record]

    def told(self, record: TrialRecord) -> None:
        """Take in a trial this worker has just told (its record, from the tell)."""
        if record.number not in self.records:
            self.open.pop(record.number, None)
            self._add(record)

    def _add(self, record: TrialRecord) -> None:
        self.records[record.number] = record
        self._counts[record.status] += 1
        if record.status == TrialStatus.COMPLETE and record.val_acc is not None:
            acc = float(record.val_acc)
            if self.best_val_acc is None or acc > self.best_val_acc:
                self.best_val_acc = acc
            if record.macs is not None:
                self._on_front(float(record.macs), acc)
        if record.duplicate_of is None and isinstance(record.macs, int | float):
            seen: set[int] = set()
            for epochs, acc in record.rungs:  # the first result at each rung counts
                if epochs not in seen:
                    seen.add(epochs)
                    point = RungPoint(record.number, float(acc), float(record.macs))
                    self._rungs.setdefault(epochs, []).append(point)

    def _on_front(self, macs: float, acc: float) -> None:
        """Add a complete trial's point to the front unless a front point is at least as
        good on both (an equal point counts once, as in pareto_mask)."""
        if any(m <= macs and a >= acc for m, a in self._front):
            return
        self._front = [(m, a) for m, a in self._front if not (m >= macs and a <= acc)]
        self._front.append((macs, acc))
        self._front.sort()

    def counts(self) -> Counter[TrialStatus]:
        """Finished trials by status, lost trials that were retried left out."""
        out = Counter(self._counts)
        for number in self.retried:
            if number in self.records:
                out[self.records[number].status] -= 1
        return out

    @property
    def front_size(self) -> int:
        """How many complete trials' points are on the front (equal points once)."""
        return len(self._front)

    def tally(self, below: int | None = None) -> Tally:
        """The store-wide :func:`tally` of the trials seen (below ``below``, if given)."""
        counts = self.counts()
        finished = sum(n for status, n in counts.items() if status.finished)
        running = sum(t.state == TrialState.RUNNING for t in self.open.values())
        waiting = sum(t.state == TrialState.WAITING for t in self.open.values())
        if below is not None:  # take away the trials from ``below`` on (a few: the newest)
            for number in range(below, self._next):
                if number in self.open:
                    running -= self.open[number].state == TrialState.RUNNING
                    waiting -= self.open[number].state == TrialState.WAITING
                elif number in self.records and number not in self.retried:
                    finished -= self.records[number].status.finished
        return Tally(finished, running, waiting)

    def rung_points(self, epochs: int) -> list[RungPoint]:
        """Every trial's result at the rung of ``epochs`` (as :func:`fidelity.rung_points`)."""
        points = self._rungs.get(epochs, []) + rung_points(self.open.values(), epochs)
        return sorted(points, key=lambda p: p.number)
