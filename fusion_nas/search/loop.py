"""The search: validate the input, open or resume the study, and run the ask/tell loop.

``run_search`` checks the space, dataset, strategy and budgets *before* it writes anything,
so bad input leaves the store untouched. Then a :class:`Search` runs the trials:

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

With ``evaluator="table:PATH"`` (``--evaluator``) the pool is a
:class:`~fusion_nas.evaluation.table.TablePool`: the same loop, but every result (and every cost)
is looked
up in a tabular benchmark, so hundreds of trials take seconds; the table is checked against the
space, dataset and proxy before anything is written.

The progress callback runs after every recorded trial. Ctrl-C (or any error) ends only the
trials still open, as ``interrupted``; finished trials stay as they are. A resumed search first
marks trials left running by an ended process as ``interrupted``; those do not count towards
the trial total, so the resumed search runs them again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import socket
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from fusion_nas import settings
from fusion_nas.errors import FusionNasError, StoreError, StrategyError, one_line
from fusion_nas.evaluation.table import TablePool, load_table, parse_evaluator
from fusion_nas.evaluation.trainer import (
    EvalTask,
    InlinePool,
    Outcome,
    Pool,
    ProcessPool,
    dataset_for,
)
from fusion_nas.model.arch import Architecture
from fusion_nas.model.cost import Cost, arch_cost
from fusion_nas.model.space import SearchSpace, parse_space
from fusion_nas.pareto import pareto_mask
from fusion_nas.search.fidelity import (
    RungPoint,
    SuccessiveHalving,
    decide,
    parse_fidelity,
    rung_points,
)
from fusion_nas.search.strategies import STRATEGIES, Driver, Proposer, Strategy, make_strategy
from fusion_nas.store import records
from fusion_nas.store.records import SearchRecord, TrialRecord, TrialStatus
from fusion_nas.store.store import Store, redact_url
from fusion_nas.training.devices import parse_device, worker_devices
from fusion_nas.training.loop import ProxyConfig

if TYPE_CHECKING:  # the pre-screen (zero-cost proxies) is imported only when used
    from fusion_nas.search.prescreen import Screened

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


# Settings that must match when a search is resumed: they decide what a trial's score means.
_FINGERPRINT = (
    "space",
    "dataset",
    "proxy",
    "strategy",
    "seed",
    "max_flops",
    "max_params",
    "evaluator",
    "fidelity",
    "objectives",
    "max_latency_ms",
)
OBJECTIVE_CHOICES = ("macs", "latency")
LATENCY_CHOICES = ("eager", "all", "off")
LATENCY_RUNS = 10  # timed forward passes per batch size, after LATENCY_WARMUP untimed ones
LATENCY_WARMUP = 2
USER_STOP = "stopped by the user (Ctrl-C)"
PROCESS_ENDED = "the process running this trial ended"
NOT_NEEDED = "not needed: other workers had already started the search's last trials"
POLL_S = 1.0  # how often a worker with nothing to do looks at the store again


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or ``docker stop``) turned into an interrupt of the search loop."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(self.signal_name)
        self.reason = f"stopped by {self.signal_name}"


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (as Ctrl-C does)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    return {n for t in trials for n in t.system_attrs.get(records.RETRY_HISTORY_KEY) or []}


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


def _rdb(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
    """The RDB storage behind a study's storage (Optuna wraps it in a cache), else ``None``."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def _heartbeats(storage: optuna.storages.BaseStorage) -> bool:
    """Whether ``storage`` keeps heartbeats (an RDB store; not Optuna's in-memory storage)."""
    rdb = _rdb(storage)
    return rdb is not None and bool(rdb.get_heartbeat_interval())


def fail_stale(study: optuna.Study) -> None:
    """End the running trials of lost workers; queue each once more.

    A trial whose heartbeat is older than the grace period is failed by Optuna's own
    ``fail_stale_trials``, whose callback (the store's ``RetryFailedTrialCallback``) queues a
    retry. A running trial that never had a worker (asked outside the loop, or by a version
    without heartbeats) is marked interrupted once it is older than the grace period.
    """
    storage = study._storage
    if not _heartbeats(storage):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    rdb = _rdb(storage)
    assert rdb is not None
    grace = rdb.grace_period or 2 * (rdb.get_heartbeat_interval() or 0)
    cutoff = dt.datetime.now() - dt.timedelta(seconds=grace)  # naive local, as Optuna writes
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "worker" in t.user_attrs or (t.datetime_start or cutoff) > cutoff:
            continue
        try:
            records.mark_interrupted(storage, study.study_name, t.number, PROCESS_ENDED)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            pass  # another worker ended it first


class _Beat:
    """Records a heartbeat for every trial this run holds open, from a background thread.

    ``study.optimize`` runs such a thread for its trial; an ask/tell loop must do it itself.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._storage = study._storage
        self.enabled = _heartbeats(self._storage)
        self.interval = self._storage.get_heartbeat_interval() if self.enabled else None
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        """Beat for ``trial_id`` now and from here on."""
        if not self.enabled:
            return
        self._storage.record_heartbeat(trial_id)
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
                    self._storage.record_heartbeat(trial_id)
                except Exception:  # a busy store: the next beat is within the grace period
                    continue

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search."""

    name: str
    space: SearchSpace
    dataset: str
    strategy: str = "optuna:nsga2"
    trials: int = 20
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    seed: int = 0
    max_flops: int | None = None
    max_params: int | None = None
    trial_timeout: float | None = None
    workers: int = 1
    data_dir: str | None = None
    strategy_options: dict[str, Any] = field(default_factory=dict)
    # "train" (proxy-train every trial) or "table:PATH[@SEED]" (look trials up in a table made
    # by benchmarks/tabular.py; see fusion_nas.evaluation.table). Stored with the path made
    # absolute.
    evaluator: str = "train"
    # Where trials train: "auto", "cpu", "cuda", "cuda:N" or "mps" (fusion_nas.training.devices).
    # Not in
    # the resume fingerprint: a search may go on on another machine's device.
    device: str = "auto"
    # "full" (every trial trains the whole proxy) or successive halving, "sh[:E1,E2,...][/ETA]"
    # (fusion_nas.search.fidelity); stored normalised, e.g. "sh:1,3,10/3".
    fidelity: str = "full"
    # "K:M": score K untrained candidates with the zero-cost proxy `prescreen_proxy` and queue
    # the best M (spread over the cost range) as the search's first trials
    # (fusion_nas.search.prescreen).
    prescreen: str | None = None
    prescreen_proxy: str = "naswot"
    # The second objective: "macs" (counted) or "latency" (median batch-1 milliseconds of the
    # model, measured on this machine in one thread: fusion_nas.deploy.latency), and its budget.
    objective: str = "macs"
    max_latency_ms: float | None = None
    # Which latencies every trial records: "eager" (torch, batch 1 and 64), "all" (also
    # onnxruntime, about 4 s more per network here), "off" (only when the objective or
    # the budget needs it). Table searches default to "off" (None: the evaluator decides).
    latency: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "evaluator", str(parse_evaluator(self.evaluator)))
        sh = parse_fidelity(self.fidelity, self.proxy.epochs)
        object.__setattr__(self, "fidelity", str(sh) if sh is not None else "full")
        object.__setattr__(self, "device", parse_device(self.device))
        if not self.name or not isinstance(self.name, str) or len(self.name) > 200:
            raise FusionNasError(f"search name {self.name!r} must be 1 to 200 characters")
        if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in self.name):  # Unicode category Cc
            raise FusionNasError(f"search name {self.name!r} has control characters (CR, NUL)")
        if self.trials < 1:
            raise FusionNasError(f"--trials must be at least 1, got {self.trials}")
        if self.workers < 1:
            raise FusionNasError(f"--workers must be at least 1, got {self.workers}")
        for flag, value in (("--max-flops", self.max_flops), ("--max-params", self.max_params)):
            if value is not None and value <= 0:
                raise FusionNasError(f"{flag} must be positive, got {value}")
        if self.trial_timeout is not None and self.trial_timeout <= 0:
            raise FusionNasError(f"--trial-timeout must be positive, got {self.trial_timeout}")
        if self.objective not in OBJECTIVE_CHOICES:
            raise FusionNasError(
                f"unknown --objective {self.objective!r}; allowed: {', '.join(OBJECTIVE_CHOICES)}"
            )
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            raise FusionNasError(f"--max-latency-ms must be positive, got {self.max_latency_ms}")
        if self.latency is None:
            default = "off" if self.evaluator.startswith("table:") else "eager"
            object.__setattr__(self, "latency", settings.default_latency() or default)
        if self.latency not in LATENCY_CHOICES:
            raise FusionNasError(
                f"unknown --latency {self.latency!r}; allowed: {', '.join(LATENCY_CHOICES)}"
            )
        if self.prescreen is not None:
            from fusion_nas.search.prescreen import parse_prescreen
            from fusion_nas.search.zero_cost import check_proxy

            k, m = parse_prescreen(self.prescreen)
            if m > self.trials:
                raise FusionNasError(
                    f"--prescreen {self.prescreen}: M={m} trials to queue, more than "
                    f"--trials {self.trials}; allowed: M <= --trials"
                )
            object.__setattr__(self, "prescreen", f"{k}:{m}")
            object.__setattr__(self, "prescreen_proxy", check_proxy(self.prescreen_proxy))

    def record(self) -> SearchRecord:
        """The search record stored with the study."""
        from fusion_nas._version import __version__

        return SearchRecord(
            space_name=self.space.name,
            space_toml=self.space.source,
            dataset=self.dataset,
            proxy=self.proxy.to_dict(),
            strategy=self.strategy,
            seed=self.seed,
            n_trials=self.trials,
            data_dir=self.data_dir,
            strategy_options=dict(self.strategy_options),
            max_flops=self.max_flops,
            max_params=self.max_params,
            trial_timeout=self.trial_timeout,
            workers=self.workers,
            version=__version__,
            evaluator=self.evaluator,
            fidelity=self.fidelity,
            prescreen=f"{self.prescreen}:{self.prescreen_proxy}" if self.prescreen else None,
            objectives=records.objectives_for(self.objective),
            max_latency_ms=self.max_latency_ms,
        )

    @property
    def measures_latency(self) -> bool:
        """Whether each trial's latency is measured (asked for, or needed)."""
        needed = self.objective == "latency" or self.max_latency_ms is not None
        return self.latency != "off" or needed

    @property
    def halving(self) -> SuccessiveHalving | None:
        """The successive-halving schedule, or ``None`` for full-fidelity trials."""
        return parse_fidelity(self.fidelity, self.proxy.epochs)


def _fingerprint(record: SearchRecord) -> dict[str, Any]:
    """What must match on resume; the space as parsed (formatting and description aside)."""
    space = parse_space(record.space_toml, source="<stored space>")
    fields = [f.name for f in dataclasses.fields(space) if f.name not in ("source", "description")]
    return {
        "space": {name: getattr(space, name) for name in fields},
        "dataset": record.dataset,
        "proxy": record.proxy,
        "strategy": record.strategy,
        "seed": record.seed,
        "max_flops": record.max_flops,
        "max_params": record.max_params,
        "evaluator": record.evaluator,
        "fidelity": record.fidelity,
        "objectives": list(record.objectives),
        "max_latency_ms": record.max_latency_ms,
    }


def _check_resume(name: str, old: SearchRecord, new: SearchRecord) -> None:
    """Refuse (one line) to resume ``name`` with settings that change what a score means."""
    before, now = _fingerprint(old), _fingerprint(new)
    for key in _FINGERPRINT:
        if before[key] != now[key]:
            shown = {
                "space": (old.space_name, new.space_name),
                "proxy": ("stored settings", "these settings"),
            }.get(key, (before[key], now[key]))
            raise StoreError(
                f"search {name!r} exists with a different {key} "
                f"({shown[0]!r}, now {shown[1]!r}); use the same settings to resume, "
                "or another --name"
            )


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
        self._finished: list[TrialRecord] = []  # finished trials, earlier runs included
        self._told: dict[int, TrialRecord] = {}  # records of the trials told in this run
        # Other workers may share the study (an RDB store): their results are read from it.
        self._shared = _rdb(study._storage) is not None
        self._beat = _Beat(study)
        self._worker = worker_id()
        self._stale_check = 0.0  # monotonic time of the last look for lost trials
        for t in study.get_trials(deepcopy=False):
            self._note(TrialRecord.from_trial(t))

    # ------------------------------------------------------------------ TrialRunner

    def history(self) -> list[TrialRecord]:
        """Every trial of the search so far (earlier runs included), oldest first."""
        return [TrialRecord.from_trial(t) for t in self.study.get_trials(deepcopy=False)]

    def evaluate(self, arch: Architecture) -> TrialRecord:
        """Record ``arch`` as a new trial, train it if needed (blocking); return its record.

        A queued retry of a lost trial that the ask hands out is run first, with its own
        architecture; then ``arch`` gets a trial of its own.
        """
        while True:
            trial = self._ask()
            retry = self._retry_arch(trial)
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
                    arch = self._retry_arch(trial)
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
            self._beat.remove(entry.trial._trial_id)
        return n

    def close(self) -> None:
        """Stop the heartbeat thread (after the last tell or interrupt)."""
        self._beat.close()

    # ------------------------------------------------------------------ the store's count

    def _trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def _tally(self) -> Tally:
        return tally(self._trials())

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
        now = self._tally()
        if now.waiting == 0 and now.taken >= target:
            return None
        trial = self._ask()
        if self._shared:
            before = tally(self._trials(), below=trial.number)
            if before.taken >= target:
                self._drop(trial)
                return None
        return trial

    def _drop(self, trial: optuna.Trial) -> None:
        """End a trial that was asked but is not needed (it does not count)."""
        records.write_result(trial, TrialStatus.INTERRUPTED, fail_reason=NOT_NEEDED)
        self.study.tell(trial, state=TrialState.FAIL)
        del self._open[trial.number]
        self._beat.remove(trial._trial_id)

    def _retry_arch(self, trial: optuna.Trial) -> Architecture | None:
        """The architecture of the lost trial that ``trial`` runs again, if it is a retry."""
        frozen = self.study._storage.get_trial(trial._trial_id)
        if frozen.system_attrs.get(records.RETRY_OF_KEY) is None:
            return None
        arch = frozen.user_attrs.get("arch")
        if not isinstance(arch, dict):
            return None  # lost before it was proposed: the strategy proposes afresh
        try:
            return Architecture.from_dict(arch)
        except (FusionNasError, KeyError, TypeError, ValueError):
            return None

    # ------------------------------------------------------------------ one trial

    def _ask(self) -> optuna.Trial:
        with warnings.catch_warnings():  # Optuna warns that heartbeats suit study.optimize:
            warnings.simplefilter("ignore", UserWarning)  # this loop beats for itself (_Beat)
            trial = self.study.ask()
        self._open[trial.number] = _Open(trial)  # open from here on, even before it is costed
        self._beat.add(trial._trial_id)
        trial.set_user_attr("worker", self._worker)
        return trial

    def _start(self, trial: optuna.Trial, arch: Architecture) -> None:
        """Cost ``arch``; record it at once, hold it for its twin, or hand it to the pool."""
        entry = self._open[trial.number]
        cost = self._cost(arch)
        entry.arch, entry.cost = arch, cost
        records.write_proposal(
            trial, arch.to_dict(), arch.arch_id, arch.describe(), cost.macs, cost.params
        )
        over_macs, over_params = self._violations(cost)
        trial.set_constraint("macs_over_budget", over_macs)  # NSGA-II/TPE rank it infeasible
        trial.set_constraint("params_over_budget", over_params)
        over_latency = 0.0
        if self.config.measures_latency and _too_large(cost) is None:
            entry.latency_ms = self._latency(trial, arch)
            if self.config.max_latency_ms is not None:
                over_latency = entry.latency_ms - self.config.max_latency_ms
                trial.set_constraint("latency_over_budget", over_latency)
        if max(over_macs, over_params, over_latency) > 0:
            reason = self._budget_reason(cost, entry.latency_ms)
            values = [0.0, self._second(entry)]
            self._tell(entry, TrialStatus.INFEASIBLE, values, fail_reason=reason)
        elif (reason := _too_large(cost)) is not None:
            self._tell(entry, TrialStatus.FAILED, None, fail_reason=reason)
        elif arch.arch_id in self._seen:
            self._tell_duplicate(entry, self._seen[arch.arch_id])
        elif arch.arch_id in self._stopped:
            self._tell_duplicate(entry, self._stopped[arch.arch_id])
        elif arch.arch_id in self._training:
            entry.twin = self._training[arch.arch_id]  # recorded when the twin finishes
        elif (other := self._elsewhere(arch.arch_id, trial.number)) is not None:
            if other.state == TrialState.RUNNING:
                entry.foreign = other.number  # another worker trains it: wait for its result
            else:
                self._tell_duplicate(entry, TrialRecord.from_trial(other))
        else:
            self._submit(entry)

    def _elsewhere(self, arch_id: str, number: int) -> FrozenTrial | None:
        """A trial of another worker with this network: complete, or running with a lower
        number (so two workers that propose one network at once never wait for each other)."""
        if not self._shared:
            return None
        running = None
        for t in self._trials():
            if (
                t.number == number
                or t.number in self._open
                or t.user_attrs.get("arch_id") != arch_id
            ):
                continue
            status = records.trial_status(t)
            if status == TrialStatus.COMPLETE and t.user_attrs.get("val_acc") is not None:
                self._seen.setdefault(arch_id, TrialRecord.from_trial(t))
                return t
            if status == TrialStatus.STOPPED:
                self._stopped.setdefault(arch_id, TrialRecord.from_trial(t))
                return t
            if t.state == TrialState.RUNNING and t.number < number and running is None:
                running = t
        return running

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
        by_number = {t.number: t for t in self._trials()}
        for entry in held:
            other = by_number.get(entry.foreign)  # type: ignore[arg-type]
            if other is None or other.state in (TrialState.RUNNING, TrialState.WAITING):
                continue
            entry.foreign = None
            record = TrialRecord.from_trial(other)
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
        entry.trial.set_user_attr("rungs", [[e, a] for e, a in entry.rungs])
        if entry.rung == len(sh.rungs) - 1:
            return False
        points = [p for p in rung_points(self._trials(), epochs) if p.number != number]
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
        self._beat.remove(entry.trial._trial_id)
        record = TrialRecord.from_trial(frozen)
        self._told[record.number] = record
        self._note(record)
        self._progress(record)
        return record

    # ------------------------------------------------------------------ costs and budgets

    def _cost(self, arch: Architecture) -> Cost:
        """Exact MACs and params of ``arch`` (per sample), counted once, nothing allocated."""
        if arch.arch_id not in self._costs:
            self._costs[arch.arch_id] = arch_cost(arch, self.space)
        return self._costs[arch.arch_id]

    def _second(self, entry: _Open) -> float:
        """The second objective of ``entry``: its MACs, or its measured latency."""
        assert entry.cost is not None
        if self.config.objective == "latency":
            assert entry.latency_ms is not None
            return float(entry.latency_ms)
        return float(entry.cost.macs)

    def _latency(self, trial: optuna.Trial, arch: Architecture) -> float:
        """Measure ``arch``'s latency once per search run (one thread), record it on ``trial``,
        and return its median batch-1 eager milliseconds."""
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
        measured = self._latencies[arch.arch_id]
        records.write_latency(trial, measured)
        return records.latency_ms(measured)

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
        if not record.status.finished:
            return
        self._finished.append(record)
        if record.status == TrialStatus.COMPLETE and record.arch_id is not None:
            self._seen.setdefault(record.arch_id, record)
        if record.status == TrialStatus.STOPPED and record.arch_id is not None:
            self._stopped.setdefault(record.arch_id, record)

    def _progress(self, record: TrialRecord) -> None:
        if self.on_progress is None:
            return
        done = self._finished
        if self._shared:  # every worker's trials, as the store counts them
            trials = self._trials()
            again = retried(trials)
            done = [
                r
                for r in map(TrialRecord.from_trial, trials)
                if r.status.finished and r.number not in again
            ]
        ok = [r for r in done if r.status == TrialStatus.COMPLETE]
        accs, macs = [float(r.val_acc) for r in ok], [float(r.macs) for r in ok]
        self.on_progress(
            Progress(
                done=len(done),
                total=self.config.trials,
                failed=sum(r.status == TrialStatus.FAILED for r in done),
                infeasible=sum(r.status == TrialStatus.INFEASIBLE for r in done),
                best_val_acc=max(accs, default=None),
                front_size=int(pareto_mask(accs, macs).sum()) if ok else 0,
                last_status=record.status,
                last_desc=record.arch_desc or "",
                trial=record,
                stopped=sum(r.status == TrialStatus.STOPPED for r in done),
            )
        )


# --------------------------------------------------------------------------- entry points


def prepare(config: SearchConfig) -> Strategy:
    """Validate dataset, strategy and evaluator for ``config`` without touching any store."""
    strategy = make_strategy(config.strategy, **config.strategy_options)
    strategy.check(config.space)
    if config.prescreen is not None and not isinstance(strategy, Proposer):
        raise StrategyError(
            f"--prescreen needs a strategy that proposes through Optuna, not {config.strategy!r}; "
            f"allowed: {', '.join(n for n in STRATEGIES if n.startswith('optuna:'))}"
        )
    p = config.proxy
    spec = parse_evaluator(config.evaluator)
    if spec.kind == "table":  # nothing is trained: the table must answer every network
        assert spec.path is not None
        load_table(spec.path).check(config.space, config.dataset, p, spec.seed)
        return strategy
    worker_devices(config.device, config.workers)  # a device this machine lacks: refused now
    dataset_for(
        config.dataset,
        config.space.source,
        config.data_dir,
        p.val_fraction,
        config.seed,
        p.train_subset,
    )
    return strategy


def open_search(store: Store, config: SearchConfig, strategy: Strategy) -> tuple[optuna.Study, int]:
    """Create the study, or resume it after checking its settings; return it and its done count."""
    record = config.record()
    if not store.has_search(config.name):
        picks = screen(config)  # before the study exists: slow, and it may fail
        try:
            sampler = strategy.sampler(config.space, config.seed)
            study = store.create_study(config.name, record, sampler)
            enqueue(study, config, picks)
            return study, 0
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it just now
            _wait_for_record(store, config.name)
    old = store.search_record(config.name)
    _check_resume(config.name, old, record)
    # Running trials belong to live workers (this run joins them) unless they are stale.
    # A joining worker's sampler gets a seed of its own: with the search's seed it would
    # propose the very networks the first worker proposes (the data split and the weights
    # still follow the search's seed).
    study_id = store.storage.get_study_id_from_name(config.name)
    sampler = strategy.sampler(config.space, joining_seed(config.seed, study_id, store))
    study = store.load_study(config.name, sampler)
    fail_stale(study)
    done = tally(study.get_trials(deepcopy=False)).finished
    records.write_search(study, dataclasses.replace(old, n_trials=max(config.trials, done)))
    return study, done


def screen(config: SearchConfig) -> list[Screened]:
    """The networks ``--prescreen K:M`` queues first (none without it), best first."""
    if config.prescreen is None:
        return []
    from fusion_nas.search.prescreen import Budget, parse_prescreen, prescreen
    from fusion_nas.search.zero_cost import train_batch

    k, m = parse_prescreen(config.prescreen)
    batch = train_batch(
        config.space,
        config.dataset,
        seed=config.seed,
        data_dir=config.data_dir,
        val_fraction=config.proxy.val_fraction,
    )
    budget = Budget(config.max_flops, config.max_params)
    proxy = config.prescreen_proxy
    return prescreen(config.space, k, m, proxy=proxy, batch=batch, seed=config.seed, budget=budget)


def enqueue(study: optuna.Study, config: SearchConfig, picks: list[Screened]) -> None:
    """Queue the pre-screened networks as the study's next trials, each with its score."""
    from fusion_nas.search.strategies.optuna_strategies import arch_params

    for place, pick in enumerate(picks, start=1):
        note = {
            "proxy": config.prescreen_proxy,
            "score": pick.score,
            "place": place,
            "of": config.prescreen,
        }
        study.enqueue_trial(
            arch_params(pick.arch, config.space), user_attrs={records.PRESCREEN_KEY: note}
        )


def joining_seed(seed: int, study_id: int, store: Store) -> int:
    """The sampler seed of a worker that opens an existing search: this process and the
    trials so far mixed into ``seed`` (a resumed search continues, it does not replay)."""
    n = len(store.storage.get_all_trials(study_id, deepcopy=False))
    return zlib.crc32(f"{seed}:{worker_id()}:{n}".encode()) % 2**31


def _wait_for_record(store: Store, name: str, timeout: float = 10.0) -> None:
    """Wait for the worker that created study ``name`` to store its search record."""
    end = time.monotonic() + timeout
    while not store.has_search(name):
        if time.monotonic() > end:
            raise StoreError(
                f"study {name!r} exists in {redact_url(store.url)} but is not a fusion-nas "
                "search; choose another --name"
            )
        time.sleep(0.2)


def _make_pool(workers: int, device: str = "auto") -> Pool:
    """One worker trains in this process; more train in worker processes, one GPU each
    (round-robin) when ``device`` resolves to CUDA."""
    devices = worker_devices(device, workers)
    return ProcessPool(workers, devices=devices) if workers > 1 else InlinePool(devices[0])


def _evaluator_pool(config: SearchConfig) -> tuple[Pool, dict[str, Cost]]:
    """What answers the trials (the table of ``table:PATH``, else training) and known costs."""
    spec = parse_evaluator(config.evaluator)
    if spec.kind == "table":
        assert spec.path is not None
        table = load_table(spec.path)
        return TablePool(table, spec.seed), table.costs()
    return _make_pool(config.workers, config.device), {}


def run_search(
    config: SearchConfig,
    store: Store | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Run (or resume) a search to ``config.trials`` finished trials; return all its trials.

    ``on_start(done, total)`` is called once the study is open; ``on_progress`` after each trial.
    """
    strategy = prepare(config)
    store = store if store is not None else Store()
    study, done = open_search(store, config, strategy)
    remaining = max(0, config.trials - done)
    if on_start is not None:
        on_start(done, config.trials)
    if remaining:
        with terminate_as_interrupt():
            run_trials(
                config, study, strategy, remaining, on_progress=on_progress, total=config.trials
            )
    return store.trials(config.name)


def run_trials(
    config: SearchConfig,
    study: optuna.Study,
    strategy: Strategy,
    n_trials: int,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    total: int | None = None,
) -> None:
    """Run ``n_trials`` trials of an opened search's ``study`` with a prepared ``strategy``.

    ``run_search`` calls it on a study of the store, with ``total`` the search's trial count
    in the store (shared by every worker; see :meth:`Search.run`); a benchmark may pass a
    study of its own (e.g. Optuna's in-memory storage, with :func:`records.write_search` done)
    to replay many table searches without database writes.
    """
    pool, costs = _evaluator_pool(config)
    search = Search(config, study, pool, on_progress, costs)
    try:
        if isinstance(strategy, Driver):
            strategy.run(search, n_trials)
        else:
            assert isinstance(strategy, Proposer)
            search.run(strategy, n_trials, total)
    except BaseException as exc:
        if isinstance(exc, Terminated):
            reason = exc.reason
        elif isinstance(exc, KeyboardInterrupt):
            reason = USER_STOP
        else:
            reason = f"the search stopped: {one_line(exc)}"
        search.interrupt(reason)
        raise
    finally:
        search.close()
        pool.close()
