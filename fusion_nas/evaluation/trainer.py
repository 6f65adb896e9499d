"""Evaluator: turns one architecture into a trial outcome (proxy-train, score on validation).

The evaluator is the seam between the search loop and the work: an :class:`EvalTask` holds
everything a worker needs (picklable, so it can cross a process boundary) and
:func:`evaluate` never raises: every problem becomes a ``failed`` :class:`Outcome` with its
reason. :class:`InlinePool` runs tasks in this process; :class:`ProcessPool` runs K at once in
worker processes, splitting the cores, and kills a worker whose trial outlives its timeout.
Both pools answer the same three calls the search loop makes (:class:`Pool`): ``free``,
``submit(key, task)`` and ``collect(wait_s)``, which returns ``(key, outcome)`` for every task
that ended, including one whose worker died (a ``failed`` outcome with the exit code).
:class:`fusion_nas.evaluation.table.TablePool` answers them from a tabular benchmark instead of
training.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

import torch

from fusion_nas.errors import one_line
from fusion_nas.model.arch import Architecture
from fusion_nas.model.build import build_model
from fusion_nas.store.records import TrialStatus
from fusion_nas.training.data import dataset_for, stored_space
from fusion_nas.training.devices import device_name
from fusion_nas.training.loop import ProxyConfig, train_proxy


@dataclass(frozen=True)
class EvalTask:
    """One proxy-training job."""

    arch_json: str
    space_source: str
    dataset: str
    proxy: ProxyConfig
    seed: int = 0
    data_dir: str | None = None
    timeout: float | None = None
    threads: int | None = None
    device: str | None = None  # "cpu", "cuda:N" or "mps" (None: the CPU); set by the pool
    # Successive halving: stop after this epoch (None: train every epoch of the proxy) and go
    # on from the state an earlier task returned, which stopped after epoch `start_epoch`.
    stop_after: int | None = None
    resume: bytes | None = None
    start_epoch: int = 0


@dataclass
class Outcome:
    """Result of an :class:`EvalTask`: ``complete`` with a score, or ``failed`` with a reason."""

    status: TrialStatus
    val_acc: float | None = None
    curve: list[float] = field(default_factory=list)
    seconds: float = 0.0
    reason: str | None = None
    device: str | None = (
        None  # name of the device it ran on (fusion_nas.training.devices.device_name)
    )
    state: bytes | None = None  # a run stopped early (EvalTask.stop_after): where it goes on


def evaluate(task: EvalTask) -> Outcome:
    """Build, seed and proxy-train the architecture; never raises."""
    start = time.perf_counter()
    name = None
    try:
        device = task.device or "cpu"
        name = device_name(device)
        if task.threads:
            torch.set_num_threads(task.threads)
        space = stored_space(task.space_source)
        arch = Architecture.from_json(task.arch_json)
        p = task.proxy
        splits = dataset_for(
            task.dataset,
            task.space_source,
            task.data_dir,
            p.val_fraction,
            task.seed,
            p.train_subset,
        )
        torch.manual_seed(task.seed)  # same seed -> same initial weights for the same network
        model = build_model(arch, space)  # built on the CPU: the same weights on every device
        result = train_proxy(
            model,
            splits.train,
            splits.val,
            p,
            seed=task.seed,
            timeout=task.timeout,
            device=device,
            stop_after=task.stop_after,
            resume=task.resume,
        )
        return Outcome(
            TrialStatus.COMPLETE,
            result.val_acc,
            result.curve,
            result.seconds,
            device=name,
            state=result.state,
        )
    except Exception as exc:  # a trial's failure must not end the search
        return Outcome(
            TrialStatus.FAILED,
            seconds=time.perf_counter() - start,
            reason=one_line(exc),
            device=name,
        )


class Pool(Protocol):
    """What the search loop calls on whatever answers its trials (trains or looks up)."""

    @property
    def threads(self) -> int:
        """Threads a trial trains with (stored with every trial)."""
        ...

    @property
    def free(self) -> int:
        """How many tasks can be submitted now."""
        ...

    def submit(self, key: Any, task: EvalTask) -> None:
        """Start ``task``; its outcome comes back from :meth:`collect` under ``key``."""
        ...

    def collect(self, wait_s: float = 0.0) -> list[tuple[Any, Outcome]]:
        """``(key, outcome)`` of every task that ended (waits up to ``wait_s``)."""
        ...

    def close(self) -> None:
        """Release workers."""
        ...


class InlinePool:
    """One worker in this process: a submitted task trains at once (no isolation).

    Every task trains on ``device`` (``cpu``, ``cuda:N`` or ``mps``).
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._done: list[tuple[Any, Outcome]] = []

    @property
    def threads(self) -> int:
        """Threads a trial trains with (results depend on it, so trials record it)."""
        return torch.get_num_threads()

    @property
    def free(self) -> int:
        """1 until a finished outcome waits to be collected, then 0."""
        return 0 if self._done else 1

    def submit(self, key: Any, task: EvalTask) -> None:
        """Train ``task`` now; its outcome is returned by the next :meth:`collect`."""
        task = EvalTask(**{**task.__dict__, "device": self.device})
        self._done.append((key, evaluate(task)))

    def collect(self, wait_s: float = 0.0) -> list[tuple[Any, Outcome]]:
        """Outcomes finished since the last call (never waits: submit did the work)."""
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        """Nothing to release."""


def _worker_main(conn: Connection, threads: int) -> None:
    # Ctrl-C and SIGTERM reach the whole process group; the search process records the open
    # trials as interrupted and ends its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(threads)
    while True:
        task = conn.recv()
        if task is None:
            return
        conn.send(evaluate(task))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    key: Any = None
    deadline: float | None = None
    timeout: float | None = None
    device: str = "cpu"  # where this slot's tasks train (kept when its process is replaced)


class ProcessPool:
    """K worker processes, each with ``cores // K`` threads; hung or dead workers are replaced.

    Worker ``i`` trains on ``devices[i % len(devices)]`` (default: the CPU), e.g. one GPU each
    from :func:`fusion_nas.training.devices.worker_devices`.
    """

    def __init__(
        self,
        workers: int,
        cores: int | None = None,
        grace: float = 30.0,
        devices: Sequence[str] | None = None,
    ) -> None:
        self.threads = max(1, (cores or os.cpu_count() or 1) // workers)
        self.grace = grace  # extra seconds past a task's timeout before the hard kill
        self._ctx = mp.get_context("spawn")
        self._workers = [self._start() for _ in range(workers)]
        assigned = list(devices or ["cpu"])
        for i, w in enumerate(self._workers):
            w.device = assigned[i % len(assigned)]
        self._done: list[tuple[Any, Outcome]] = []

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, self.threads), daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent)

    @property
    def free(self) -> int:
        """Idle workers."""
        return sum(w.key is None for w in self._workers)

    def pid_of(self, key: Any) -> int | None:
        """Process id of the worker running ``key`` (``None``: not running)."""
        return next((w.process.pid for w in self._workers if w.key == key), None)

    def submit(self, key: Any, task: EvalTask) -> None:
        """Hand ``task`` to an idle worker (one that died while idle is replaced first)."""
        worker = next(w for w in self._workers if w.key is None)
        if not worker.process.is_alive():
            self._replace(worker)
        task = EvalTask(**{**task.__dict__, "threads": self.threads, "device": worker.device})
        worker.key, worker.timeout = key, task.timeout
        worker.deadline = (
            None if task.timeout is None else time.monotonic() + task.timeout + self.grace
        )
        try:
            worker.conn.send(task)
        except OSError:  # died between the check and the send: collect reports it
            pass

    def collect(self, wait_s: float = 1.0) -> list[tuple[Any, Outcome]]:
        """Wait up to ``wait_s`` (0: just look) for ended tasks; return ``(key, outcome)`` each.

        A worker that died on its own gives a ``failed`` outcome for its key; one past its
        deadline is killed and gives a timeout. Both are replaced by fresh workers.
        """
        active = [w for w in self._workers if w.key is not None]
        if active and not self._done:
            deadlines = [w.deadline for w in active if w.deadline is not None]
            if deadlines:  # do not sleep past the next deadline
                wait_s = max(0.0, min(wait_s, min(deadlines) - time.monotonic()))
            ready = wait([w.conn for w in active], timeout=wait_s)
            for w in active:
                if w.conn in ready:
                    try:
                        outcome = w.conn.recv()
                    except (EOFError, OSError):
                        w.process.join(timeout=5)  # reap it, so its exit code is known
                        reason = f"worker process died (exit code {w.process.exitcode})"
                        outcome = Outcome(TrialStatus.FAILED, reason=reason)
                        self._done.append((w.key, outcome))
                        self._replace(w)
                        continue
                    self._done.append((w.key, outcome))
                    w.key = w.deadline = None
        now = time.monotonic()
        for w in self._workers:
            if w.key is not None and w.deadline is not None and now > w.deadline:
                reason = f"timeout: trial exceeded {w.timeout:g} s (worker killed)"
                self._done.append((w.key, Outcome(TrialStatus.FAILED, reason=reason)))
                self._replace(w)
        done, self._done = self._done, []
        return done

    def _replace(self, w: _Worker) -> None:
        """Kill ``w``'s process and give the slot a fresh one (the caller kept ``w.key``)."""
        w.process.kill()
        w.process.join(timeout=5)
        w.conn.close()
        fresh = self._start()
        w.process, w.conn, w.key, w.deadline = fresh.process, fresh.conn, None, None

    def close(self) -> None:
        """Stop every worker: idle ones are asked to exit, busy ones are killed."""
        for w in self._workers:
            if w.key is not None:
                w.process.kill()
                continue
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self._workers:
            w.process.join(timeout=2)
            if w.process.is_alive():
                w.process.kill()
