"""The ask/tell loop of one search run (:class:`Search`): costs, budgets, duplicates, progress.

A :class:`Search` runs the trials of an opened search (:mod:`fusion_nas.search.session` opens it
and picks the pool):

- with a :class:`~fusion_nas.search.strategies.Proposer` (Optuna) it owns the loop. At most
  ``workers`` trials are open (asked, not yet told) at once, and every result that is ready is
  told before the next ask, so the sampler learns from each finished trial: with one worker
  the calls go ask#0 tell#0 ask#1 tell#1 ...;
- a :class:`~fusion_nas.search.strategies.Driver` (NNI) runs its own loop and calls
  :meth:`Search.evaluate` for each architecture (``Search`` is its
  :class:`~fusion_nas.search.strategies.TrialRunner`).

Either way a proposed architecture is costed without allocating it, then:

- over a budget: recorded as ``infeasible`` at once, never trained;
- already trained in this search (earlier runs included): recorded at once with the earlier
  result and ``duplicate_of`` (``note: same as #N``), not trained again;
- being trained right now by another open trial (``--workers`` > 1): held, without a worker,
  and recorded with its twin's result the moment the twin finishes (trained after all if the
  twin failed). A held trial counts as open, so the sampler never runs ahead of the K-trial
  window;
- otherwise trained by the pool and recorded when it finishes.

With ``fidelity="sh"`` (``--fidelity``) a network is trained rung by rung and goes on only
while it stays in the first ``1/eta`` of its rung on the Pareto order; the others end as
``stopped`` (see :mod:`fusion_nas.search.fidelity`). A network proposed again after it stopped is
recorded as stopped at once, with ``duplicate_of``.

The progress callback runs after every recorded trial. :meth:`Search.interrupt` ends only the
trials still open, as ``interrupted``; finished trials stay as they are.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from fusion_nas.errors import FusionNasError
from fusion_nas.evaluation.base import EvalTask, Outcome
from fusion_nas.evaluation.pools import Pool
from fusion_nas.model.arch import Architecture
from fusion_nas.model.cost import Cost, arch_cost
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.fidelity import RungPoint, decide
from fusion_nas.search.start import queued_member
from fusion_nas.search.strategies import Proposer
from fusion_nas.search.workers import (
    NOT_NEEDED,
    Beat,
    Ledger,
    Tally,
    fail_stale,
    worker_id,
)
from fusion_nas.store import optuna_adapter, records
from fusion_nas.store.records import TrialRecord, TrialStatus

TRAIN_BYTES_PER_PARAM = 16  # float32 weights, gradients and AdamW's two moments


def _memory_bytes() -> int:
    """Physical memory of this machine (a generous bound on what one trial may use)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not POSIX: no bound
        return 2**62


def _too_large(cost: Cost) -> str | None:
    """Why ``cost``'s network cannot train here (its parameters alone overflow memory), or None."""
    need, have = cost.params * TRAIN_BYTES_PER_PARAM, _memory_bytes()
    if need <= have:
        return None
    return (
        f"too large to train here, not trained: {cost.params:,} params need "
        f"{need / 2**30:,.1f} GiB for weights, gradients and optimizer state; "
        f"this machine has {have / 2**30:,.1f} GiB"
    )


LATENCY_RUNS = 10  # timed forward passes per batch size, after LATENCY_WARMUP untimed ones
LATENCY_WARMUP = 2
POLL_S = 1.0  # how often a worker with nothing to do looks at the store again
# A look at the store this recent (seconds) is used again instead of a new read, where a
# later check settles races anyway (the claim's check after the ask) or one ask's worth of
# staleness changes nothing (finding another worker's copy of a network).
FRESH_S = 0.1
# More new or changed trials than this at one look (a resumed search's first) are read with
# one read of the study's trials instead of one read each.
BULK_READ = 64


@dataclass
class Progress:
    """Where a running search stands (passed to the progress callback after every trial)."""

    done: int
    total: int
    failed: int
    infeasible: int
    best_val_acc: float | None
    front_size: int
    last_status: TrialStatus
    last_desc: str
    trial: TrialRecord | None = None  # the trial just recorded
    stopped: int = 0  # stopped early by successive halving


@dataclass
class _Open:
    """A trial asked and not yet told."""

    trial: optuna.Trial
    arch: Architecture | None = None  # None until proposed
    cost: Cost | None = None
    twin: int | None = None  # the open trial training the same network (this one waits)
    foreign: int | None = None  # the same, trained by another worker (number in the store)
    # Successive halving: the rung being trained, where training goes on, the rungs reached
    # ((epochs, val_acc)) and the seconds trained so far.
    rung: int = 0
    state: bytes | None = None
    rungs: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    stop_note: str | None = None  # set when successive halving stops it at a rung
    latency_ms: float | None = None  # median batch-1 eager latency, when measured


class Search:
    """One run of a search: the ask/tell loop, costs, budgets, de-duplication and progress.

    Implements :class:`~fusion_nas.search.strategies.TrialRunner` for strategies that drive their
    own
    loop. ``pool`` trains, or looks up (``free``, ``submit(key, task)``, ``collect(wait_s)``,
    ``threads``).
    """

    def __init__(
        self,
        config: SearchConfig,
        study: optuna.Study,
        pool: Pool,
        on_progress: Callable[[Progress], None] | None = None,
        costs: dict[str, Cost] | None = None,
    ) -> None:
        self.config, self.study, self.pool = config, study, pool
        self.name, self.space, self.seed = config.name, config.space, config.seed
        self.on_progress = on_progress
        # arch_id -> cost; a table brings its networks' costs (counted by arch_cost when made)
        self._costs: dict[str, Cost] = dict(costs or {})
        self._open: dict[int, _Open] = {}  # trial number -> open trial
        self._training: dict[str, int] = {}  # arch_id -> number of the trial training it
        self._seen: dict[str, TrialRecord] = {}  # arch_id -> first complete trial
        self._stopped: dict[str, TrialRecord] = {}  # arch_id -> first trial stopped early
        self._latencies: dict[str, dict[str, Any]] = {}  # arch_id -> backend -> record
        self._sh = config.halving
        # Every worker's trials as last read from the store, kept up to date incrementally.
        self._ledger = Ledger()
        self._synced = -math.inf  # monotonic time of the last look at the store
        self._told: dict[int, TrialRecord] = {}  # records of the trials told in this run
        # Other workers may share the study (an RDB store): their results are read from it.
        self._shared = optuna_adapter.rdb_of(optuna_adapter.storage_of(study)) is not None
        self._beat = Beat(study)
        self._study_id = optuna_adapter.study_id(study)
        self._last_id = -1  # the largest storage id of a trial read (ids grow with numbers)
        self._ids: dict[int, int] = {}  # number -> storage id of each trial still open
        self._worker = worker_id()
        self._stale_check = 0.0  # monotonic time of the last look for lost trials
        self._sync()

    # ------------------------------------------------------------------ TrialRunner

    def history(self) -> list[TrialRecord]:
        """Every trial of the search so far (earlier runs included), oldest first.

        From the ledger: only trials new or still open since the last look are read, and only
        the open ones (a few) get a record built afresh.
        """
        self._sync()
        found, opened = self._ledger.records, self._ledger.open
        out = []
        for number in range(self._ledger.seen):
            if number in found:
                out.append(found[number])
            elif number in opened:
                out.append(TrialRecord.from_trial(opened[number]))
        return out

    def evaluate(self, arch: Architecture) -> TrialRecord:
        """Record ``arch`` as a new trial, train it if needed (blocking); return its record.

        A queued retry of a lost trial that the ask hands out is run first, with its own
        architecture; then ``arch`` gets a trial of its own.
        """
        while True:
            trial = self._ask()
            retry = self._retry_arch(trial) or self._queued_arch(trial)
            self._start(trial, retry or arch)
            while trial.number in self._open:
                self._collect(1.0)
            if retry is None:
                return self._told[trial.number]

    # ------------------------------------------------------------------ the loop

    def run(self, proposer: Proposer, n_trials: int, total: int | None = None) -> None:
        """Run trials until the search has ``total`` finished ones, counted in the store.

        ``total`` defaults to the finished trials now plus ``n_trials``. Every worker on the
        study counts the same way (:func:`tally`), so together they stop at exactly ``total``;
        whatever is ready is told before each ask. A worker with nothing left to ask waits for
        the others' trials, and re-runs (once) any whose worker is lost.
        """
        target = total if total is not None else self._tally().finished + n_trials
        while True:
            self._collect(0.0)  # every result already in: tell it before the next ask
            if len(self._open) < self.config.workers:
                trial = self._claim(target)
                if trial is not None:
                    arch = self._retry_arch(trial) or self._queued_arch(trial)
                    self._start(trial, arch or proposer.propose(trial, self.space))
                    continue
            if self._open:
                self._collect(POLL_S)  # the window is full, or the rest is taken: wait
            elif self._tally().finished >= target:
                return
            else:  # other workers hold the last trials: wait for them (or for their loss)
                time.sleep(POLL_S)
                self._check_stale(force=False)

    def interrupt(self, reason: str) -> int:
        """End every open trial as interrupted (finished ones stay); return how many."""
        n = 0
        for number, entry in list(self._open.items()):
            try:
                records.write_result(entry.trial, TrialStatus.INTERRUPTED, fail_reason=reason)
                self.study.tell(entry.trial, state=TrialState.FAIL)
                n += 1
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
                pass  # it was told just before the interrupt: it keeps its result
            del self._open[number]
            self._beat.remove(optuna_adapter.trial_id(entry.trial))
        return n

    def close(self) -> None:
        """Stop the heartbeat thread (after the last tell or interrupt)."""
        self._beat.close()

    # ------------------------------------------------------------------ the store's count

    def _sync(self, unless_within: float | None = None) -> None:
        """Bring the ledger up to date with the store: other workers' trials and this run's
        (only trials new or still open since the last look are read into records).

        With ``unless_within``, a look that recent (seconds) is enough: the store is not read.
        """
        now = time.monotonic()
        if unless_within is not None and now - self._synced < unless_within:
            return
        storage = optuna_adapter.storage_of(self.study)
        open_ids = [self._ids[n] for n in self._ledger.open if n in self._ids]
        rows = optuna_adapter.trial_states(storage, self._study_id, self._last_id, open_ids)
        if rows is None or len(rows) > BULK_READ:
            # Optuna's in-memory storage (one process), or many trials to read at once (the
            # first look at a resumed search): the study's trials in one read
            new = self._ledger.update(self.study.get_trials(deepcopy=False))
        else:  # one small query; a trial is read only when it is new or another's open one
            ids = {number: trial_id for number, trial_id, _state in rows}
            states = {number: state for number, _tid, state in rows}

            def load(number: int) -> optuna.trial.FrozenTrial:
                mine = self._open.get(number)
                if mine is not None and ids[number] == optuna_adapter.trial_id(mine.trial):
                    frozen = optuna_adapter.asked_trial(mine.trial)  # as written: no read
                    if frozen.state == states[number]:
                        return frozen
                return storage.get_trial(ids[number])

            new = self._ledger.take(((n, st) for n, _tid, st in rows), load)
        for number, trial_id, _state in rows or ():
            self._last_id = max(self._last_id, trial_id)
            self._ids[number] = trial_id
        self._ids = {n: i for n, i in self._ids.items() if n in self._ledger.open}
        for record in new:
            self._note(record)
        self._synced = now

    def _tally(self, unless_within: float | None = None) -> Tally:
        self._sync(unless_within)
        return self._ledger.tally()

    def _check_stale(self, force: bool) -> None:
        """Fail and queue again trials of lost workers (at most once per heartbeat interval)."""
        if not self._beat.enabled:
            return
        now = time.monotonic()
        if force or now - self._stale_check >= (self._beat.interval or 0):
            self._stale_check = now
            fail_stale(self.study)

    def _claim(self, target: int) -> optuna.Trial | None:
        """Ask a trial if the search still needs one (a queued retry always); else ``None``.

        Two workers may ask at the same moment for the last place: the one whose trial number
        comes later finds ``target`` taken by lower numbers and drops its trial (recorded as
        interrupted, :data:`NOT_NEEDED`).
        """
        self._check_stale(force=False)
        # A look at the store within FRESH_S (the one after the last tell) will do here: after
        # the ask, the store is read again to settle a race for the last place.
        now = self._tally(unless_within=FRESH_S)
        if now.waiting == 0 and now.taken >= target:  # no retry queued, every place taken
            return None
        trial = self._ask()
        if self._shared:  # did trials numbered below this one take the last place first?
            self._sync()
            if self._ledger.tally(below=trial.number).taken >= target:
                self._drop(trial)
                return None
        return trial

    def _drop(self, trial: optuna.Trial) -> None:
        """End a trial that was asked but is not needed (it does not count)."""
        records.write_result(trial, TrialStatus.INTERRUPTED, fail_reason=NOT_NEEDED)
        self.study.tell(trial, state=TrialState.FAIL)
        del self._open[trial.number]
        self._beat.remove(optuna_adapter.trial_id(trial))

    def _retry_arch(self, trial: optuna.Trial) -> Architecture | None:
        """The architecture of the lost trial that ``trial`` runs again, if it is a retry."""
        frozen = optuna_adapter.asked_trial(trial)  # as read by the ask: no store read
        if records.retry_of(frozen) is None:
            return None
        arch = records.proposed_arch(frozen)
        if arch is None:
            return None  # lost before it was proposed: the strategy proposes afresh
        try:
            return Architecture.from_dict(arch)
        except (FusionNasError, KeyError, TypeError, ValueError):
            return None

    def _queued_arch(self, trial: optuna.Trial) -> Architecture | None:
        """The zoo member a ``--start-from`` trial runs (:mod:`fusion_nas.search.start`)."""
        return queued_member(self.space, optuna_adapter.asked_trial(trial))

    # ------------------------------------------------------------------ one trial

    def _ask(self) -> optuna.Trial:
        with warnings.catch_warnings():  # Optuna warns that heartbeats suit study.optimize:
            warnings.simplefilter("ignore", UserWarning)  # this loop beats for itself (Beat)
            trial = self.study.ask()
        self._open[trial.number] = _Open(trial)  # open from here on, even before it is costed
        # At once, not with the proposal: a running trial without a worker is taken for one
        # that no loop holds (fail_stale), and proposing may outlast the grace period. The
        # trial's first heartbeat goes in the same transaction.
        records.write_worker(trial, self._worker, heartbeat=self._beat.enabled)
        self._beat.add(optuna_adapter.trial_id(trial), beaten=True)
        return trial

    def _start(self, trial: optuna.Trial, arch: Architecture) -> None:
        """Cost ``arch``; record it at once, hold it for its twin, or hand it to the pool."""
        entry = self._open[trial.number]
        arch_id = arch.arch_id  # a hash of the architecture's JSON: computed once here
        cost = self._cost(arch, arch_id)
        entry.arch, entry.cost = arch, cost
        over_macs, over_params = self._violations(cost)
        records.write_proposal(  # one transaction
            trial,
            arch.to_dict(),
            arch_id,
            arch.describe(),
            cost.macs,
            cost.params,
            # NSGA-II/TPE rank a trial that violates a constraint (> 0) infeasible
            constraints={"macs_over_budget": over_macs, "params_over_budget": over_params},
        )
        over_latency = 0.0
        if self.config.measures_latency and _too_large(cost) is None:
            measured = self._latency(arch)
            entry.latency_ms = records.latency_ms(measured)
            budget = None
            if self.config.max_latency_ms is not None:
                over_latency = entry.latency_ms - self.config.max_latency_ms
                budget = {"latency_over_budget": over_latency}
            records.write_latency(trial, measured, budget)
        if max(over_macs, over_params, over_latency) > 0:
            reason = self._budget_reason(cost, entry.latency_ms)
            values = [0.0, self._second(entry)]
            self._tell(entry, TrialStatus.INFEASIBLE, values, fail_reason=reason)
        elif (reason := _too_large(cost)) is not None:
            self._tell(entry, TrialStatus.FAILED, None, fail_reason=reason)
        elif arch_id in self._seen:
            self._tell_duplicate(entry, self._seen[arch_id])
        elif arch_id in self._stopped:
            self._tell_duplicate(entry, self._stopped[arch_id])
        elif arch_id in self._training:
            entry.twin = self._training[arch_id]  # recorded when the twin finishes
        elif (other := self._elsewhere(arch_id, trial.number)) is not None:
            if isinstance(other, int):
                entry.foreign = other  # another worker trains it: wait for its result
            else:
                self._tell_duplicate(entry, other)
        else:
            self._submit(entry)

    def _elsewhere(self, arch_id: str, number: int) -> TrialRecord | int | None:
        """Another worker's trial of this network: the record of a complete or stopped one,
        or the number of one running with a lower number (so two workers that propose one
        network at once never wait for each other)."""
        if not self._shared:
            return None
        self._sync(FRESH_S)  # read just after the ask; complete and stopped trials land in
        # _seen and _stopped
        if arch_id in self._seen:
            return self._seen[arch_id]
        if arch_id in self._stopped:
            return self._stopped[arch_id]
        for other, t in sorted(self._ledger.open.items()):  # a few: one per worker
            if other == number or other in self._open or other > number:
                continue
            if t.state == TrialState.RUNNING and records.trial_arch_id(t) == arch_id:
                return other
        return None

    def _submit(self, entry: _Open) -> None:
        arch, c = entry.arch, self.config
        assert arch is not None
        self._training[arch.arch_id] = entry.trial.number
        halving = {}
        if self._sh is not None:  # train up to the rung; go on from the last one
            start = self._sh.rungs[entry.rung - 1] if entry.rung else 0
            halving = dict(
                stop_after=self._sh.rungs[entry.rung], resume=entry.state, start_epoch=start
            )
        task = EvalTask(
            arch_json=arch.to_json(),
            space_source=self.space.source,
            dataset=c.dataset,
            proxy=c.proxy,
            seed=c.seed,
            data_dir=c.data_dir,
            timeout=c.trial_timeout,
            **halving,
        )
        self.pool.submit(entry.trial.number, task)

    def _collect(self, wait_s: float) -> None:
        held = [e for e in self._open.values() if e.foreign is not None]
        if held:  # the trial a held one waits for may belong to a lost worker
            self._check_stale(force=False)
        if held and not self._training and wait_s > 0:  # only others' results are awaited
            time.sleep(min(wait_s, POLL_S))  # the pool would return at once: poll the store
            wait_s = 0.0
        for number, outcome in self.pool.collect(wait_s):
            self._finish(self._open[number], outcome)
        if held:
            self._collect_foreign(held)

    def _collect_foreign(self, held: list[_Open]) -> None:
        """Record the trials that wait for another worker's result, once it is in."""
        self._sync()
        for entry in held:
            record = self._ledger.records.get(entry.foreign)  # type: ignore[arg-type]
            if record is None:  # still running or waiting
                continue
            entry.foreign = None
            if record.status == TrialStatus.COMPLETE and record.val_acc is not None:
                self._seen.setdefault(record.arch_id or "", record)
                self._tell_duplicate(entry, record)
            elif record.status == TrialStatus.STOPPED:
                self._stopped.setdefault(record.arch_id or "", record)
                self._tell_duplicate(entry, record)
            else:  # the other worker failed or lost it: train it here
                assert entry.arch is not None
                if entry.arch.arch_id in self._training:
                    entry.twin = self._training[entry.arch.arch_id]
                else:
                    self._submit(entry)

    def _finish(self, entry: _Open, outcome: Outcome) -> None:
        """Record a trained trial, then the trials that waited for it."""
        assert entry.arch is not None and entry.cost is not None
        entry.seconds += outcome.seconds
        if self._sh is not None and outcome.status == TrialStatus.COMPLETE:
            if self._halve(entry, outcome):
                return  # promoted: it trains on to the next rung
        self._training.pop(entry.arch.arch_id, None)
        common = {
            "curve": list(outcome.curve),
            "train_seconds": round(entry.seconds, 3),
            "threads": self.pool.threads,  # accuracy depends on the thread count
            "device": outcome.device,  # and on the device (None: looked up, not trained)
            "peak_memory": outcome.peak_memory,  # bytes on the GPU (None off CUDA)
            "rungs": list(entry.rungs) if self._sh is not None else None,
        }
        if outcome.status == TrialStatus.COMPLETE and entry.stop_note is not None:
            record = self._tell(
                entry, TrialStatus.STOPPED, None, fail_reason=entry.stop_note, **common
            )
        elif outcome.status == TrialStatus.COMPLETE:
            values = [float(outcome.val_acc), self._second(entry)]
            acc = outcome.val_acc
            note = outcome.reason  # a looked-up trial says where its result comes from
            record = self._tell(
                entry, TrialStatus.COMPLETE, values, val_acc=acc, fail_reason=note, **common
            )
        else:
            reason = outcome.reason or "unknown failure"
            record = self._tell(entry, TrialStatus.FAILED, None, fail_reason=reason, **common)
        number = entry.trial.number
        for held in [e for e in self._open.values() if e.twin == number]:
            held.twin = None
            if record.status in (TrialStatus.COMPLETE, TrialStatus.STOPPED):
                self._tell_duplicate(held, record)
            elif held.arch.arch_id in self._training:  # another waiting twin trains it now
                held.twin = self._training[held.arch.arch_id]
            else:
                self._submit(held)  # the twin failed: try the network once more

    def _halve(self, entry: _Open, outcome: Outcome) -> bool:
        """Record the rung ``entry`` reached; hand it back to the pool if it goes on (True).

        False when it ends here: at the last rung (complete), or stopped (``stop_note`` set).
        """
        sh, number = self._sh, entry.trial.number
        assert sh is not None and entry.arch is not None and entry.cost is not None
        epochs = sh.rungs[entry.rung]
        entry.rungs.append((epochs, float(outcome.val_acc)))  # type: ignore[arg-type]
        # Written at once, so every worker's decisions at this rung count this result.
        records.write_rungs(entry.trial, entry.rungs)
        if entry.rung == len(sh.rungs) - 1:
            return False
        self._sync()
        points = [p for p in self._ledger.rung_points(epochs) if p.number != number]
        points.append(RungPoint(number, float(outcome.val_acc), float(entry.cost.macs)))
        decision = decide(points, number, sh)
        if not decision.promote:
            entry.stop_note = decision.note(epochs, sh.epochs)
            return False
        entry.rung, entry.state = entry.rung + 1, outcome.state
        self._submit(entry)
        return True

    def _tell_duplicate(self, entry: _Open, earlier: TrialRecord) -> None:
        """Record ``entry`` with the result of the earlier trial of its network: complete, or
        stopped early (it would stop again at the same rung)."""
        assert entry.cost is not None
        original = earlier.duplicate_of if earlier.duplicate_of is not None else earlier.number
        stopped = earlier.status == TrialStatus.STOPPED
        assert stopped or earlier.val_acc is not None
        self._tell(
            entry,
            TrialStatus.STOPPED if stopped else TrialStatus.COMPLETE,
            None if stopped else [float(earlier.val_acc), self._second(entry)],  # type: ignore[arg-type]
            val_acc=None if stopped else earlier.val_acc,
            curve=list(earlier.curve),
            rungs=list(earlier.rungs) or None,
            train_seconds=earlier.train_seconds,
            threads=earlier.threads,
            device=earlier.device,
            fail_reason=earlier.fail_reason if stopped else None,
            duplicate_of=original,
        )

    def _tell(
        self, entry: _Open, status: TrialStatus, values: list[float] | None, **fields: Any
    ) -> TrialRecord:
        """Write the result, tell the study, close the trial and report progress."""
        records.write_result(entry.trial, status, **fields)
        if status == TrialStatus.STOPPED:
            frozen = self.study.tell(entry.trial, state=TrialState.PRUNED)
        elif values is None:
            frozen = self.study.tell(entry.trial, state=TrialState.FAIL)
        else:
            frozen = self.study.tell(entry.trial, values)
        del self._open[entry.trial.number]  # after the tell: an interrupt here changes nothing
        self._beat.remove(optuna_adapter.trial_id(entry.trial))
        record = TrialRecord.from_trial(frozen)
        self._told[record.number] = record
        self._ledger.told(record)  # counted at once, even before the store is read again
        self._note(record)
        self._progress(record)
        return record

    # ------------------------------------------------------------------ costs and budgets

    def _cost(self, arch: Architecture, arch_id: str | None = None) -> Cost:
        """Exact MACs and params of ``arch`` (per sample), counted once, nothing allocated
        (``arch_id``: ``arch.arch_id``, when known)."""
        arch_id = arch.arch_id if arch_id is None else arch_id
        if arch_id not in self._costs:
            self._costs[arch_id] = arch_cost(arch, self.space)
        return self._costs[arch_id]

    def _second(self, entry: _Open) -> float:
        """The second objective of ``entry``: its MACs, or its measured latency."""
        assert entry.cost is not None
        if self.config.objective == "latency":
            assert entry.latency_ms is not None
            return float(entry.latency_ms)
        return float(entry.cost.macs)

    def _latency(self, arch: Architecture) -> dict[str, Any]:
        """Measure ``arch``'s latency once per search run (one thread): backend -> record."""
        if arch.arch_id not in self._latencies:
            from fusion_nas.deploy.latency import arch_latency

            backends = ("eager", "onnxruntime") if self.config.latency == "all" else ("eager",)
            self._latencies[arch.arch_id] = {
                b: arch_latency(
                    arch,
                    self.space,
                    seed=self.seed,
                    batch_sizes=(1, 64),
                    warmup=LATENCY_WARMUP,
                    runs=LATENCY_RUNS,
                    threads=1,
                    backend=b,
                ).to_dict()
                for b in backends
            }
        return self._latencies[arch.arch_id]

    def _violations(self, cost: Cost) -> tuple[float, float]:
        """Optuna constraint values: how far MACs and params exceed the budgets (<= 0: fine)."""
        c = self.config
        over_macs = cost.macs - c.max_flops if c.max_flops else 0.0
        over_params = cost.params - c.max_params if c.max_params else 0.0
        return (float(over_macs), float(over_params))

    def _budget_reason(self, cost: Cost, latency_ms: float | None = None) -> str:
        c, parts = self.config, []
        budget = c.max_latency_ms
        if budget is not None and latency_ms is not None and latency_ms > budget:
            parts.append(f"latency {latency_ms:.3g} ms > --max-latency-ms {budget:g}")
        if c.max_flops and cost.macs > c.max_flops:
            parts.append(f"MACs {cost.macs:,} > --max-flops {c.max_flops:,}")
        if c.max_params and cost.params > c.max_params:
            parts.append(f"params {cost.params:,} > --max-params {c.max_params:,}")
        return "over budget, not trained: " + "; ".join(parts)

    # ------------------------------------------------------------------ progress

    def _note(self, record: TrialRecord) -> None:
        """Remember the first complete and the first stopped trial of each network."""
        if record.status == TrialStatus.COMPLETE and record.arch_id is not None:
            self._seen.setdefault(record.arch_id, record)
        if record.status == TrialStatus.STOPPED and record.arch_id is not None:
            self._stopped.setdefault(record.arch_id, record)

    def _progress(self, record: TrialRecord) -> None:
        if self.on_progress is None:
            return
        self._sync()  # every worker's trials, as the store counts them
        counts = self._ledger.counts()
        self.on_progress(
            Progress(
                done=sum(n for status, n in counts.items() if status.finished),
                total=self.config.trials,
                failed=counts[TrialStatus.FAILED],
                infeasible=counts[TrialStatus.INFEASIBLE],
                best_val_acc=self._ledger.best_val_acc,
                front_size=self._ledger.front_size,
                last_status=record.status,
                last_desc=record.arch_desc or "",
                trial=record,
                stopped=counts[TrialStatus.STOPPED],
            )
        )
