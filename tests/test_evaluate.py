"""The evaluator and its pools: outcomes never raise; an over-deadline worker is killed."""

from __future__ import annotations

import os
import signal
import time

from fusion_nas.evaluate import EvalTask, InlinePool, ProcessPool, evaluate
from fusion_nas.space import load_space
from fusion_nas.train import ProxyConfig


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


def test_inline_pool_runs_on_submit() -> None:
    pool = InlinePool()
    pool.submit("k", _task("digits", epochs=1, train_subset=64))
    (key, outcome), *rest = pool.collect()
    assert key == "k" and outcome.status == "complete" and not rest


def test_process_pool_kills_a_trial_past_its_deadline_and_recovers() -> None:
    # A 224x224 network of the ImageNet-scale space cannot finish its first batch (one long
    # C-level call, so the cooperative per-batch check never runs) within 0.5 + 0.5 s.
    pool = ProcessPool(1, cores=1, grace=0.5)
    try:
        start = time.monotonic()
        pool.submit("slow", _task("coatnet-like", timeout=0.5, epochs=1, batch_size=64))
        (key, outcome), *_ = _results(pool, wait_s=0.2)
        assert key == "slow" and outcome.status == "failed"
        assert outcome.reason == "timeout: trial exceeded 0.5 s (worker killed)"
        assert time.monotonic() - start < 30
        pool.submit("next", _task("digits", epochs=1, train_subset=64))  # a fresh worker
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
