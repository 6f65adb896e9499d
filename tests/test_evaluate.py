"""The evaluator and its pools: outcomes never raise; an over-deadline worker is killed."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest
import torch

from fusion_nas.evaluation import trainer as evaluate_module
from fusion_nas.evaluation.trainer import EvalTask, InlinePool, ProcessPool, evaluate
from fusion_nas.model.space import load_space
from fusion_nas.training.loop import ProxyConfig


def _task(space: str, timeout: float | None = None, **proxy) -> EvalTask:
    sp = load_space(space)
    return EvalTask(
        sp.sample(0).to_json(), sp.source, "synthetic", ProxyConfig(**proxy), timeout=timeout
    )


def _results(pool: ProcessPool, wait_s: float = 1.0) -> list:
    """Collect until at least one outcome is in."""
    done: list = []
    while not done:
        done = pool.collect(wait_s=wait_s)
    return done


def test_evaluate_turns_bad_input_into_a_failed_outcome() -> None:
    bad = EvalTask('{"space": "digits"}', load_space("digits").source, "synthetic", ProxyConfig())
    out = evaluate(bad)
    assert out.status == "failed" and "non-empty 'stages' list" in out.reason


def test_a_trial_trains_with_the_thread_count_of_its_task(monkeypatch) -> None:
    # Accuracies are reproducible for a given thread count, and workers split the cores: the
    # count a task names must be the one its training runs with.
    seen = []
    real_train = evaluate_module.train_proxy

    def train(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_train(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "train_proxy", train)
    torch.set_num_threads(1)
    task = _task("digits", epochs=1, train_subset=64)
    assert evaluate(dataclasses.replace(task, threads=2)).status == "complete"
    assert evaluate(dataclasses.replace(task, threads=1)).status == "complete"
    assert seen == [2, 1]


def test_inline_pool_runs_on_submit() -> None:
    pool = InlinePool()
    pool.submit("k", _task("digits", epochs=1, train_subset=64))
    (key, outcome), *rest = pool.collect()
    assert key == "k" and outcome.status == "complete" and not rest


def test_process_pool_kills_a_trial_past_its_deadline_and_recovers() -> None:
    # The worker is stopped (SIGSTOP) once it has its task: it can neither finish nor answer,
    # however fast or loaded the machine, so only the pool's deadline can end this trial.
    pool = ProcessPool(1, cores=1, grace=0.5)
    try:
        pool.submit("hung", _task("digits", timeout=0.5, epochs=1, train_subset=64))
        pid = pool.pid_of("hung")
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        (key, outcome), *rest = _results(pool, wait_s=0.2)
        assert key == "hung" and outcome.status == "failed" and not rest
        assert outcome.reason == "timeout: trial exceeded 0.5 s (worker killed)"
        with pytest.raises(ProcessLookupError):  # killed and reaped, not left stopped
            os.kill(pid, 0)
        assert pool.free == 1 and pool.pid_of("hung") is None
        pool.submit("next", _task("digits", epochs=1, train_subset=64))  # a fresh worker
        assert pool.pid_of("next") not in (None, pid)
        (key, outcome), *_ = _results(pool)
        assert key == "next" and outcome.status == "complete"
    finally:
        pool.close()


def test_process_pool_reports_a_worker_that_died_with_its_key_and_recovers() -> None:
    pool = ProcessPool(1, cores=1)
    try:
        pool.submit("doomed", _task("coatnet-like", epochs=1, batch_size=64))
        pid = pool.pid_of("doomed")
        assert pid is not None and pool.free == 0
        os.kill(pid, signal.SIGKILL)  # dies on its own, mid-trial, not by a deadline
        (key, outcome), *rest = _results(pool)
        assert key == "doomed" and not rest
        assert outcome.status == "failed"
        assert outcome.reason == "worker process died (exit code -9)"
        assert pool.free == 1 and pool.pid_of("doomed") is None
        pool.submit("next", _task("digits", epochs=1, train_subset=64))  # a fresh worker
        (key, outcome), *_ = _results(pool)
        assert key == "next" and outcome.status == "complete"
    finally:
        pool.close()


def test_inline_pool_never_waits_and_holds_one_result() -> None:
    pool = InlinePool()
    assert pool.free == 1 and pool.collect(wait_s=5.0) == []
    pool.submit(7, _task("digits", epochs=1, train_subset=64))
    assert pool.free == 0  # its one result waits to be collected
    assert [key for key, _ in pool.collect()] == [7] and pool.free == 1
