"""The built-in evaluator: proxy-train one architecture and score it on the validation split.

:class:`TrainingEvaluator` builds the network on the CPU from the task's seed (the same
initial weights on every device), then trains it with
:func:`fusion_nas.training.loop.train_proxy` on the task's built-in dataset, or on the user's
own :class:`~fusion_nas.training.data.DataSplits` given to it::

    splits = DataSplits(TensorDataset(x_tr, y_tr), TensorDataset(x_va, y_va))
    pool = make_pool(TrainingEvaluator(data=splits), workers=2)

The user's splits go to every worker process with the evaluator (pickled): with ``workers >
1`` their datasets must be picklable (a ``TensorDataset`` is). Their inputs must have the
space's shape, ``(N, channels, L)`` or ``(N, channels, H, W)``, labels int64 in ``[0,
classes)``; the proxy's ``val_fraction`` and ``train_subset`` apply to built-in datasets only.

:func:`evaluate` is the built-in evaluator as a function (what a pool given no evaluator
runs). This module also keeps the names that lived here before the evaluators and pools were
split out (:mod:`~fusion_nas.evaluation.base`, :mod:`~fusion_nas.evaluation.pools`).
"""

from __future__ import annotations

import os  # noqa: F401 (kept reachable here as before the split: tests patch os.cpu_count here)
import time

import torch

from fusion_nas.errors import one_line
from fusion_nas.evaluation import pools

# Old import paths (`from fusion_nas.evaluation.trainer import EvalTask, InlinePool, ...`).
from fusion_nas.evaluation.base import EvalTask, Outcome, task_splits
from fusion_nas.evaluation.pools import InlinePool, Pool, ProcessPool
from fusion_nas.model.arch import Architecture
from fusion_nas.model.build import build_model
from fusion_nas.store.records import TrialStatus
from fusion_nas.training.data import DataSplits, dataset_for, stored_space
from fusion_nas.training.devices import (
    device_name,
    is_out_of_memory,
    peak_memory,
    reset_peak_memory,
)
from fusion_nas.training.loop import train_proxy

__all__ = [
    "EvalTask",
    "InlinePool",
    "Outcome",
    "Pool",
    "ProcessPool",
    "TrainingEvaluator",
    "dataset_for",
    "evaluate",
]
# The worker entry of a pool running the built-in training (ProcessPool looks it up here) and
# its slot record, under the names they had here.
_worker_main = pools._worker_main
_Worker = pools._Worker


class TrainingEvaluator:
    """Build, seed and proxy-train an architecture (:func:`train_proxy`); never raises.

    ``data``: the splits to train (``train``) and score (``val``) on; ``None``: the task's
    built-in dataset (``EvalTask.dataset``, loaded once per process). The test split is never
    read. Successive halving is exact: a rung stops after ``task.stop_after`` epochs of the
    full schedule and a promoted network goes on from the saved ``state``.
    """

    def __init__(self, data: DataSplits | None = None) -> None:
        self.data = data

    def __repr__(self) -> str:
        data = "built-in" if self.data is None else repr(self.data.name)
        return f"TrainingEvaluator(data={data})"

    def splits(self, task: EvalTask) -> DataSplits:
        """The splits ``task`` trains on: the user's, else its built-in dataset."""
        return task_splits(task, self.data)

    def evaluate(self, task: EvalTask) -> Outcome:
        """Proxy-train ``task``'s architecture on ``task.device``; never raises."""
        start = time.perf_counter()
        name, model = None, None
        device = task.device or "cpu"
        try:
            name = device_name(device)
            reset_peak_memory(device)  # this trial's peak, not an earlier trial's of the worker
            if task.threads:
                torch.set_num_threads(task.threads)
            space = stored_space(task.space_source)
            arch = Architecture.from_json(task.arch_json)
            splits = self.splits(task)
            torch.manual_seed(task.seed)  # same seed -> same initial weights for the same network
            model = build_model(arch, space)  # built on the CPU: the same weights on every device
            result = train_proxy(
                model,
                splits.train,
                splits.val,
                task.proxy,
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
                peak_memory=peak_memory(device),
            )
        except Exception as exc:  # a trial's failure must not end the search
            reason, oom = one_line(exc), is_out_of_memory(exc)
        peak = None
        if oom:  # the traceback (and the model it held) is gone now: give the memory back
            reason = f"out of device memory on {name or device}: {reason}"
            model = None  # noqa: F841 (its parameters on the device go with it)
            if torch.device(device).type == "cuda":
                peak = peak_memory(device)
                torch.cuda.empty_cache()  # so the worker's next trial starts from a clean GPU
        return Outcome(
            TrialStatus.FAILED,
            seconds=time.perf_counter() - start,
            reason=reason,
            device=name,
            peak_memory=peak,
        )


_BUILTIN = TrainingEvaluator()


def evaluate(task: EvalTask) -> Outcome:
    """Build, seed and proxy-train the architecture on its built-in dataset; never raises."""
    return _BUILTIN.evaluate(task)
