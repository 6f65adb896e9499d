"""The evaluators and their pools: outcomes never raise; an over-deadline worker is killed;
the user's own data and training function run as evaluators, in one or two workers."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest
import torch
from torch.utils.data import TensorDataset

from fusion_nas.evaluation import (
    Evaluator,
    FunctionEvaluator,
    StopTraining,
    TrainingEvaluator,
    make_pool,
)
from fusion_nas.evaluation import base as base_module
from fusion_nas.evaluation import trainer as evaluate_module
from fusion_nas.evaluation.trainer import EvalTask, InlinePool, ProcessPool, evaluate
from fusion_nas.model.space import load_space
from fusion_nas.training.data import DataSplits
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


# --------------------------------------------------------------------------- bring your own


def user_splits(n: int = 96, seed: int = 0) -> DataSplits:
    """A user's own data for the digits space: (N, 1, 8, 8) images, the class is the brightest
    of the first ten pixels (learnable, and nothing like the built-in digits)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + n // 2, 1, 8, 8, generator=g)
    y = x.flatten(1)[:, :10].argmax(1)
    train, val = TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:])
    return DataSplits(train, val, name="user", classes=10)


def user_train_fn(model: torch.nn.Module, data: DataSplits, device: str, report) -> float:
    """A user's training loop with a loss of its own (squared error on one-hot targets)."""
    x, y = (t.to(device) for t in data.train.tensors)
    xv, yv = (t.to(device) for t in data.val.tensors)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    acc = 0.0
    for epoch in range(1, report.epochs + 1):
        model.train()
        for i in range(0, len(y), 32):
            out = model(x[i : i + 32]).softmax(1)
            target = torch.nn.functional.one_hot(y[i : i + 32], 10).float()
            loss = ((out - target) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xv).argmax(1) == yv).float().mean().item()
        report(epoch, acc)
    return acc


def failing_train_fn(model, data, device, report) -> float:
    """A user's function that breaks after one epoch."""
    report(1, 0.5)
    raise ValueError("user code broke")


def _digits_task(**kw) -> EvalTask:
    sp = load_space("digits")
    proxy = ProxyConfig(epochs=kw.pop("epochs", 2), batch_size=32)
    return EvalTask(sp.sample(0).to_json(), sp.source, "user", proxy, seed=3, **kw)


def test_training_evaluator_trains_on_the_users_dataset(monkeypatch) -> None:
    def no_builtin(*a, **k):
        raise AssertionError("a built-in dataset was loaded")

    monkeypatch.setattr(base_module, "dataset_for", no_builtin)
    evaluator = TrainingEvaluator(data=user_splits())
    assert isinstance(evaluator, Evaluator)
    out = evaluator.evaluate(_digits_task())
    assert out.status == "complete", out.reason
    assert len(out.curve) == 2 and out.val_acc == out.curve[-1]
    # successive halving: a rung and its promotion give the full run's curve
    rung = evaluator.evaluate(_digits_task(stop_after=1))
    assert rung.state is not None and rung.curve == out.curve[:1]
    rest = evaluator.evaluate(_digits_task(stop_after=2, resume=rung.state, start_epoch=1))
    assert rest.curve == out.curve


def test_training_evaluator_with_a_dataset_of_the_wrong_shape_fails_the_trial() -> None:
    x = torch.randn(40, 3, 5, 5)  # not the digits space's (1, 8, 8)
    data = DataSplits(TensorDataset(x, torch.zeros(40, dtype=torch.long)), None, name="wrong")
    out = TrainingEvaluator(data=data).evaluate(_digits_task())
    assert out.status == "failed" and out.reason


def test_function_evaluator_runs_the_users_loss_and_stops_at_a_rung() -> None:
    evaluator = FunctionEvaluator(user_train_fn, user_splits())
    assert isinstance(evaluator, Evaluator)
    full = evaluator.evaluate(_digits_task(epochs=3))
    assert full.status == "complete", full.reason
    assert len(full.curve) == 3 and full.val_acc == full.curve[-1] and full.state is None
    rung = evaluator.evaluate(_digits_task(epochs=3, stop_after=1))
    assert rung.status == "complete" and rung.curve == full.curve[:1]
    assert rung.val_acc == rung.curve[0] and rung.state is not None
    # promoted: re-run from scratch (same seed, same run) up to the next rung
    more = evaluator.evaluate(
        _digits_task(epochs=3, stop_after=2, resume=rung.state, start_epoch=1)
    )
    assert more.curve == full.curve[:2] and more.val_acc == full.curve[1]


def test_function_evaluator_turns_the_users_error_into_a_failed_outcome() -> None:
    out = FunctionEvaluator(failing_train_fn, user_splits()).evaluate(_digits_task())
    assert out.status == "failed" and out.reason == "ValueError: user code broke"
    assert out.curve == [0.5]


def test_report_stops_again_if_the_users_loop_swallows_the_signal() -> None:
    def swallowing(model, data, device, report) -> float:
        for epoch in range(1, 5):
            try:
                report(epoch, epoch / 10)
            except StopTraining:
                pass  # a loop that catches everything: the rung still ends the run here
        return 1.0

    out = FunctionEvaluator(swallowing, user_splits()).evaluate(_digits_task(stop_after=2))
    assert out.status == "complete" and out.curve == [0.1, 0.2] and out.val_acc == 0.2


def test_process_pool_runs_a_function_evaluator_in_two_workers() -> None:
    evaluator = FunctionEvaluator(user_train_fn, user_splits())
    pool = make_pool(evaluator, workers=2, device="cpu", cores=2)
    try:
        assert isinstance(pool, ProcessPool) and pool.free == 2
        pool.submit("a", _digits_task(epochs=2))
        pool.submit("b", _digits_task(epochs=2, stop_after=1))
        pids = {pool.pid_of("a"), pool.pid_of("b")}
        assert len(pids) == 2 and os.getpid() not in pids and None not in pids
        done: dict = {}
        while len(done) < 2:
            done.update(pool.collect(wait_s=1.0))
        assert {o.status for o in done.values()} == {"complete"}
        assert len(done["a"].curve) == 2 and done["b"].curve == done["a"].curve[:1]
    finally:
        pool.close()


def test_make_pool_picks_the_pool_for_the_evaluator() -> None:
    inline = make_pool(None, workers=1, device="cpu")
    assert isinstance(inline, InlinePool) and inline.evaluator is None
    user = TrainingEvaluator(data=user_splits())
    inline = make_pool(user, workers=1, device="cpu")
    inline.submit("k", _digits_task(epochs=1))
    ((key, out),) = inline.collect()
    assert key == "k" and out.status == "complete", out.reason
