"""The evaluator seam: one architecture in (:class:`EvalTask`), one :class:`Outcome` out.

An :class:`Evaluator` is anything with ``evaluate(task) -> Outcome`` that never raises (a
problem becomes a ``failed`` outcome with its reason). The search loop hands tasks to a pool
(:mod:`fusion_nas.evaluation.pools`), the pool hands them to its evaluator. Implementations:

- :class:`~fusion_nas.evaluation.trainer.TrainingEvaluator`: the built-in proxy training, on a
  built-in dataset or on the user's own :class:`~fusion_nas.training.data.DataSplits`;
- :class:`~fusion_nas.evaluation.function.FunctionEvaluator`: the user's own training function
  ``train_fn(model, data, device, report) -> val_acc``;
- :class:`~fusion_nas.evaluation.table.TableEvaluator`: looks results up in a tabular benchmark.

Successive halving (``--fidelity sh``) asks an evaluator to stop after epoch
``task.stop_after`` and, for a promoted network, to go on from ``task.resume`` (the
``Outcome.state`` of the rung before, which ended after epoch ``task.start_epoch``). The
outcome's ``curve`` then covers every epoch since the start and its ``val_acc`` is the
accuracy after ``stop_after`` epochs. Evaluators written as a training loop see these through
an :class:`EvalContext` and end a rung by letting its :meth:`EvalContext.report` raise
:class:`StopTraining`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from fusion_nas.errors import TrialFailed
from fusion_nas.model.arch import Architecture
from fusion_nas.model.space import SearchSpace
from fusion_nas.store.records import TrialStatus
from fusion_nas.training.data import DataSplits, dataset_for
from fusion_nas.training.loop import ProxyConfig

__all__ = ["EvalContext", "EvalTask", "Evaluator", "Outcome", "StopTraining"]


@dataclass(frozen=True)
class EvalTask:
    """One evaluation job: everything a worker needs, picklable across a process boundary."""

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
    # Bytes of tensors at most on the GPU while it trained (torch.cuda.max_memory_allocated
    # after a reset); None off CUDA and for evaluators that do not measure it.
    peak_memory: int | None = None


@runtime_checkable
class Evaluator(Protocol):
    """Turns one architecture into an :class:`Outcome` (proxy-trains it, looks it up, ...).

    ``evaluate`` must never raise: every failure becomes ``Outcome(TrialStatus.FAILED,
    reason=...)``. It must honour ``task.stop_after`` (return after that epoch, with the
    accuracy at that epoch and a ``state`` to go on from) when the search uses successive
    halving, and ``task.device`` / ``task.threads`` set by the pool.

    With ``workers > 1`` the evaluator is pickled once into every worker process (the
    ``spawn`` start method): it and everything it holds (datasets, functions) must be
    picklable, and functions must be importable by module and name (not a lambda or a
    function defined inside another function or in ``__main__`` of an interactive session).
    """

    def evaluate(self, task: EvalTask) -> Outcome:
        """Evaluate ``task``'s architecture; never raises."""
        ...


class StopTraining(Exception):  # noqa: N818 (a signal, like optuna.TrialPruned, not an error)
    """Raised by :meth:`EvalContext.report` once the epoch the evaluator stops after is reached.

    A training function lets it propagate (or returns at once); the evaluator catches it and
    returns the curve reported so far.
    """


@dataclass
class EvalContext:
    """What a training loop needs to know about its trial, and its ``report`` callback.

    ``epochs`` is the full budget (the proxy's epochs); the run ends early, at the end of epoch
    ``stop_after``, when successive halving asks for a rung. ``resume`` and ``start_epoch`` come
    from the rung before (``None`` / 0 for a fresh run). Call the context itself, or
    :meth:`report`, after every epoch.
    """

    arch: Architecture
    space: SearchSpace
    seed: int
    device: str
    epochs: int
    stop_after: int | None = None
    start_epoch: int = 0
    resume: bytes | None = None
    timeout: float | None = None
    curve: list[float] = field(default_factory=list)  # validation accuracy after each epoch
    started: float = field(default_factory=time.perf_counter)
    stopped: bool = False  # set once the run reached ``stop_after`` (its rung)

    def report(self, epoch: int, val_acc: float) -> None:
        """Record the validation accuracy after ``epoch`` (1-based, counted from the start).

        Raises :class:`StopTraining` once ``epoch`` reaches ``stop_after`` (the result is
        recorded first), and :class:`~fusion_nas.errors.TrialFailed` on a non-finite accuracy
        or when the trial's timeout has passed.
        """
        acc = float(val_acc)
        if not math.isfinite(acc):
            raise TrialFailed(f"non-finite validation accuracy ({acc}) at epoch {epoch}")
        if self.stopped:  # reported again after a swallowed StopTraining: the rung is done
            raise StopTraining(f"stopped after epoch {self.stop_after}")
        self.curve.append(acc)
        if self.timeout is not None and time.perf_counter() - self.started > self.timeout:
            raise TrialFailed(f"timeout: trial exceeded {self.timeout:g} s (at epoch {epoch})")
        if self.stop_after is not None and epoch >= self.stop_after:
            self.stopped = True
            raise StopTraining(f"stopped after epoch {epoch}")

    __call__ = report


def task_splits(task: EvalTask, data: DataSplits | None = None) -> DataSplits:
    """What a trial trains and scores on: ``data`` (the user's own), else the task's built-in
    dataset split by the task's seed (loaded once per process)."""
    if data is not None:
        return data
    p = task.proxy
    return dataset_for(
        task.dataset, task.space_source, task.data_dir, p.val_fraction, task.seed, p.train_subset
    )
