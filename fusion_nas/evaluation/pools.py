"""Pools: run an :class:`~fusion_nas.evaluation.base.Evaluator` on the search loop's tasks.

:class:`InlinePool` runs tasks in this process; :class:`ProcessPool` runs K at once in worker
processes, splitting the cores, and kills a worker whose trial outlives its timeout. Both answer
the same calls the search loop makes (:class:`Pool`): ``free``, ``submit(key, task)`` and
``collect(wait_s)``, which returns ``(key, outcome)`` for every task that ended, including one
whose worker died (a ``failed`` outcome with the exit code). :func:`make_pool` picks the pool
for an evaluator, a worker count and a device.

A pool given no evaluator (``None``) runs the built-in training,
:func:`fusion_nas.evaluation.trainer.evaluate`, looked up on that module at every call.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

import torch

from fusion_nas.evaluation.base import EvalTask, Evaluator, Outcome
from fusion_nas.store.records import TrialStatus
from fusion_nas.training.devices import worker_devices

__all__ = ["InlinePool", "Pool", "ProcessPool", "make_pool"]


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


def run_evaluator(evaluator: Evaluator | None, task: EvalTask) -> Outcome:
    """``evaluator.evaluate(task)``; ``None``: the built-in training evaluator."""
    if evaluator is None:
        # Imported here: the trainer module re-exports the pools (the old import paths). Looked
        # up at every call so that replacing `trainer.evaluate` replaces the built-in.
        from fusion_nas.evaluation import trainer

        return trainer.evaluate(task)
    return evaluator.evaluate(task)


class InlinePool:
    """One worker in this process: a submitted task is evaluated at once (no isolation).

    Every task runs on ``device`` (``cpu``, ``cuda:N`` or ``mps``) with ``evaluator`` (``None``:
    the built-in training).
    """

    def __init__(self, device: str = "cpu", evaluator: Evaluator | None = None) -> None:
        self.device = device
        self.evaluator = evaluator
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
        """Evaluate ``task`` now; its outcome is returned by the next :meth:`collect`."""
        task = replace(task, device=self.device)
        self._done.append((key, run_evaluator(self.evaluator, task)))

    def collect(self, wait_s: float = 0.0) -> list[tuple[Any, Outcome]]:
        """Outcomes finished since the last call (never waits: submit did the work)."""
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        """Nothing to release."""


def _worker_main(conn: Connection, threads: int, evaluator: Evaluator | None = None) -> None:
    """A worker process: evaluate every task received on ``conn`` until ``None`` arrives."""
    # Ctrl-C and SIGTERM reach the whole process group; the search process records the open
    # trials as interrupted and ends its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(threads)
    while True:
        task = conn.recv()
        if task is None:
            return
        conn.send(run_evaluator(evaluator, task))


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

    Worker ``i`` runs on ``devices[i % len(devices)]`` (default: the CPU), e.g. one GPU each
    from :func:`fusion_nas.training.devices.worker_devices`. ``evaluator`` (``None``: the
    built-in training) is pickled once into each worker process when it starts, so it must be
    picklable (see :class:`~fusion_nas.evaluation.base.Evaluator`).
    """

    def __init__(
        self,
        workers: int,
        cores: int | None = None,
        grace: float = 30.0,
        devices: Sequence[str] | None = None,
        evaluator: Evaluator | None = None,
    ) -> None:
        self.threads = max(1, (cores or os.cpu_count() or 1) // workers)
        self.grace = grace  # extra seconds past a task's timeout before the hard kill
        self.evaluator = evaluator
        self._ctx = mp.get_context("spawn")
        self._workers = [self._start() for _ in range(workers)]
        assigned = list(devices or ["cpu"])
        for i, w in enumerate(self._workers):
            w.device = assigned[i % len(assigned)]
        self._done: list[tuple[Any, Outcome]] = []

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        if self.evaluator is None:
            # The built-in training's worker entry is looked up where it has always lived, so
            # that replacing `trainer._worker_main` (as tests do) replaces it here.
            from fusion_nas.evaluation import trainer

            target, args = trainer._worker_main, (child, self.threads)
        else:
            target, args = _worker_main, (child, self.threads, self.evaluator)
        proc = self._ctx.Process(target=target, args=args, daemon=True)
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
        task = replace(task, threads=self.threads, device=worker.device)
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


def make_pool(
    evaluator: Evaluator | None = None,
    workers: int = 1,
    device: str = "auto",
    *,
    cores: int | None = None,
    grace: float = 30.0,
    trials_per_device: int | None = None,
) -> Pool:
    """The pool that runs ``evaluator`` (``None``: the built-in training) for a search.

    One worker evaluates in this process (:class:`InlinePool`); more evaluate in worker
    processes (:class:`ProcessPool`), one GPU each (round-robin) when ``device`` resolves to
    CUDA. ``trials_per_device=N`` on CUDA: at least ``N`` workers per GPU, each a process
    training its own trial on that GPU (a small proxy network leaves most of a GPU idle).
    A :class:`~fusion_nas.evaluation.table.TableEvaluator` answers at once, so it always
    gets its :class:`~fusion_nas.evaluation.table.TablePool` (one slot, the table's threads).
    Raises :class:`~fusion_nas.errors.DeviceError` for a device this machine lacks.
    """
    from fusion_nas.evaluation.table import TableEvaluator, TablePool  # table imports pools

    if isinstance(evaluator, TableEvaluator):
        return TablePool(evaluator.table, evaluator.seed)
    devices = worker_devices(device, workers, trials_per_device)  # one per worker
    if len(devices) > 1:
        return ProcessPool(len(devices), cores, grace, devices=devices, evaluator=evaluator)
    return InlinePool(devices[0], evaluator)
