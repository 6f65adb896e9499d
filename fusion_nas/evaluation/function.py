"""Bring your own training: the user's function as an evaluator.

::

    def train_fn(model, data, device, report) -> float:
        # model: the built network, seeded and already on `device`; data: the DataSplits
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for epoch in range(1, report.epochs + 1):
            ...  # train one epoch on data.train with a loss of your own
            acc = ...  # accuracy on data.val
            report(epoch, acc)  # raises StopTraining at a successive-halving rung
        return acc

    evaluator = FunctionEvaluator(train_fn, data=DataSplits(train, val))

``report`` is the trial's :class:`~fusion_nas.evaluation.base.EvalContext`: call it after
every epoch with the epoch (1-based) and the validation accuracy; read ``report.epochs`` (the
full budget, the proxy's epochs), ``report.seed``, ``report.arch`` and ``report.space``. Before
the call every random generator (``random``, NumPy, torch) is seeded with the trial's seed and
the model is built from it, so the same seed gives the same run.

Successive halving (``fidelity="sh:..."``): ``report`` raises
:class:`~fusion_nas.evaluation.base.StopTraining` once the rung's epoch is reported; let it
propagate (or return at once) and the evaluator returns the curve so far, the accuracy at the
rung and a marker ``state``. A promoted network does not go on from a checkpoint: the
function runs again **from scratch** up to the next rung (the same seed, so the same
trajectory if the function is deterministic), and the outcome's curve and seconds are those
of the whole re-run. This costs the epochs of the earlier rungs again, but asks nothing of the
user's loop beyond reporting each epoch.

With ``workers > 1`` the evaluator is pickled into each worker process: ``train_fn`` must be
importable by module and name (defined at the top level of a module, not a lambda or a
closure, and not in ``__main__`` of an interactive session) and the datasets picklable.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fusion_nas.errors import TrialFailed, one_line
from fusion_nas.evaluation.base import EvalContext, EvalTask, Outcome, StopTraining, task_splits
from fusion_nas.model.arch import Architecture
from fusion_nas.model.build import build_model
from fusion_nas.store.records import TrialStatus
from fusion_nas.training.data import DataSplits, stored_space
from fusion_nas.training.devices import device_name

__all__ = ["FunctionEvaluator", "TrainFn"]

# train_fn(model, data, device, report) -> validation accuracy
TrainFn = Callable[[torch.nn.Module, Any, str, EvalContext], float]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class FunctionEvaluator:
    """Evaluates an architecture with the user's ``train_fn(model, data, device, report)``.

    ``data`` is handed to ``train_fn`` unchanged: the user's
    :class:`~fusion_nas.training.data.DataSplits` (or anything the function understands);
    ``None``: the task's built-in dataset as ``DataSplits``. Never raises: an exception in
    ``train_fn`` fails the trial with its message.
    """

    def __init__(self, train_fn: TrainFn, data: DataSplits | Any | None = None) -> None:
        if not callable(train_fn):
            raise TypeError(f"train_fn must be callable, got {train_fn!r}")
        self.train_fn = train_fn
        self.data = data

    def __repr__(self) -> str:
        name = getattr(self.train_fn, "__qualname__", repr(self.train_fn))
        return f"FunctionEvaluator({name})"

    def splits(self, task: EvalTask) -> Any:
        """What ``train_fn`` gets as ``data``: the user's, else the task's built-in dataset."""
        return task_splits(task, self.data)

    def evaluate(self, task: EvalTask) -> Outcome:
        """Build the network from ``task.seed`` and run ``train_fn`` on it; never raises."""
        start = time.perf_counter()
        name = None
        ctx: EvalContext | None = None
        try:
            device = task.device or "cpu"
            name = device_name(device)
            if task.threads:
                torch.set_num_threads(task.threads)
            space = stored_space(task.space_source)
            arch = Architecture.from_json(task.arch_json)
            data = self.splits(task)
            ctx = EvalContext(
                arch=arch,
                space=space,
                seed=task.seed,
                device=device,
                epochs=task.proxy.epochs,
                stop_after=task.stop_after,
                start_epoch=task.start_epoch,
                resume=task.resume,
                timeout=task.timeout,
                started=start,
            )
            seed_everything(task.seed)  # the same seed: the same weights and the same run
            model = build_model(arch, space).to(device)
            try:
                acc: float | None = float(self.train_fn(model, data, device, ctx))
            except StopTraining:
                acc = None
            if ctx.stopped:  # the rung ended the run (even if train_fn swallowed the signal)
                return Outcome(
                    TrialStatus.COMPLETE,
                    ctx.curve[-1],
                    list(ctx.curve),
                    time.perf_counter() - start,
                    device=name,
                    state=f"rerun to epoch {ctx.stop_after}".encode(),  # nothing to go on from
                )
            if acc is None:
                raise TrialFailed("StopTraining raised before the rung's epoch was reported")
            if not math.isfinite(acc):
                raise TrialFailed(f"train_fn returned a non-finite accuracy ({acc})")
            return Outcome(
                TrialStatus.COMPLETE,
                acc,
                list(ctx.curve) or [acc],
                time.perf_counter() - start,
                device=name,
            )
        except Exception as exc:  # a trial's failure must not end the search
            return Outcome(
                TrialStatus.FAILED,
                curve=list(ctx.curve) if ctx is not None else [],
                seconds=time.perf_counter() - start,
                reason=one_line(exc),
                device=name,
            )
