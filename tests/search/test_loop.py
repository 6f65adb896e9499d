"""The search owns the ask/tell loop: order of calls, feedback, reuse, progress and interrupts.

Real Optuna samplers, real spaces (``digits`` and a two-network space) and the ``synthetic``
dataset with one epoch. The sampler is wrapped by a recorder: Optuna calls ``before_trial``
inside ``ask`` and ``after_trial`` inside ``tell``, so the recorder sees the order of calls and
which trials the sampler could learn from when it was asked.
"""

from __future__ import annotations

import inspect
import os
import signal

import optuna
import pytest

import fusion_nas.search.session as session_mod
from fusion_nas.evaluation import InlinePool, ProcessPool, TrainingEvaluator
from fusion_nas.model.space import SearchSpace, load_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.loop import Search
from fusion_nas.search.session import run_search
from fusion_nas.search.signals import USER_STOP
from fusion_nas.search.strategies import Proposer, optuna_strategies
from fusion_nas.search.workers import PROCESS_ENDED
from fusion_nas.store.records import TrialRecord, TrialStatus
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig

TWO_NETWORKS = """
name = "two"
[input]
kind = "image"
size = [8, 8]
channels = 1
classes = 10
[stem]
width = 8
kernel = 3
[[stage]]
operator = ["conv", "attention"]
kernel = [3]
heads = [1]
attention = ["global"]
width = 8
"""


class Recorder(optuna.samplers.BaseSampler):
    """Delegates to ``inner``; logs ``ask#N``/``tell#N`` and what was complete at each ask."""

    def __init__(self, inner: optuna.samplers.BaseSampler, log: dict) -> None:
        self.inner, self.log = inner, log

    def before_trial(self, study, trial) -> None:
        self.log["calls"].append(f"ask#{trial.number}")
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        self.log["complete_at_ask"].append(len(done))
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        seen = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        self.log["complete_in_sampler"].append(len(seen))
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.log["calls"].append(f"tell#{trial.number}")
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


@pytest.fixture
def log(monkeypatch) -> dict:
    """Wrap the sampler of every Optuna strategy with a :class:`Recorder`."""
    out: dict = {"calls": [], "complete_at_ask": [], "complete_in_sampler": []}
    for cls in (optuna_strategies.NSGA2, optuna_strategies.TPE, optuna_strategies.RandomSearch):
        real = cls.sampler
        monkeypatch.setattr(
            cls,
            "sampler",
            lambda self, space, seed, real=real: Recorder(real(self, space, seed), out),
        )
    return out


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path}/loop.db")


@pytest.fixture
def two(tmp_path) -> SearchSpace:
    path = tmp_path / "two.toml"
    path.write_text(TWO_NETWORKS)
    space = load_space(path)
    assert space.num_architectures() == 2
    return space


@pytest.fixture
def trainings(monkeypatch) -> list[int]:
    """Trial numbers handed to a pool for training (in-process and worker pools alike)."""
    submitted: list[int] = []

    class CountingInline(InlinePool):
        def submit(self, key, task):
            submitted.append(key)
            super().submit(key, task)

    class CountingProcess(ProcessPool):
        def submit(self, key, task):
            submitted.append(key)
            super().submit(key, task)

    def make_pool(evaluator=None, workers=1, device="auto", **kw):
        if workers > 1:
            return CountingProcess(workers, evaluator=evaluator)
        return CountingInline(evaluator=evaluator)

    use_pool(monkeypatch, make_pool)
    return submitted


def use_pool(monkeypatch, make_pool) -> None:
    """Searches get their pool from ``make_pool(evaluator, workers, device)``: a pool with
    behaviour of its own (slots, dead workers) that an evaluator cannot stand in for."""
    monkeypatch.setattr(session_mod, "make_pool", make_pool)


def _config(name: str, trials: int, workers: int = 1, space: SearchSpace | None = None, **kw):
    return SearchConfig(
        name=name,
        space=space or load_space("digits"),
        dataset="synthetic",
        trials=trials,
        proxy=ProxyConfig(epochs=1, batch_size=32, train_subset=64),
        workers=workers,
        **kw,
    )


def _open_counts(calls: list[str]) -> list[int]:
    """Trials open (asked, not told) right after each call."""
    out, n = [], 0
    for call in calls:
        n += 1 if call.startswith("ask") else -1
        out.append(n)
    return out


# --------------------------------------------------------------------------- order of calls


def test_one_worker_tells_each_trial_before_the_next_ask(store, log) -> None:
    df = run_search(_config("one", 4), store)
    assert log["calls"] == [
        "ask#0",
        "tell#0",
        "ask#1",
        "tell#1",
        "ask#2",
        "tell#2",
        "ask#3",
        "tell#3",
    ]
    assert log["complete_at_ask"] == [0, 1, 2, 3]
    assert list(df.status) == ["complete"] * 4


def test_two_workers_keep_two_trials_open_and_tell_before_asking(store, log) -> None:
    df = run_search(_config("two-w", 6, workers=2), store)
    calls = log["calls"]
    assert sorted(calls) == sorted([f"ask#{i}" for i in range(6)] + [f"tell#{i}" for i in range(6)])
    assert calls[:2] == ["ask#0", "ask#1"]  # both workers start at once
    # Never more than two open: asks #2.. each wait for a tell that frees a slot.
    opened = _open_counts(calls)
    assert max(opened) == 2 and min(opened) >= 0 and opened[-1] == 0
    asks = [i for i, call in enumerate(calls) if call.startswith("ask")]
    tells = [i for i, call in enumerate(calls) if call.startswith("tell")]
    for k, at in enumerate(asks[2:]):
        assert sum(t < at for t in tells) >= k + 1, calls
    assert log["complete_at_ask"][2:] == [sum(t < at for t in tells) for at in asks[2:]]
    assert (df.status == "complete").all()


def test_two_slots_with_a_result_ready_tell_it_before_asking(store, log, monkeypatch) -> None:
    """A two-slot pool whose result is ready at once: the loop tells before it asks again."""

    class TwoSlots(InlinePool):
        @property
        def free(self) -> int:
            return 2 - len(self._done)

    use_pool(monkeypatch, lambda evaluator=None, *a, **kw: TwoSlots(evaluator=evaluator))
    run_search(_config("ready", 3, workers=2), store)
    assert log["calls"] == ["ask#0", "tell#0", "ask#1", "tell#1", "ask#2", "tell#2"]


def test_nsga2_learns_from_every_finished_trial(store, log) -> None:
    """After the first generation NSGA-II's relative sampling sees the earlier results."""
    config = _config("nsga", 6, strategy="optuna:nsga2", strategy_options={"population": 2})
    run_search(config, store)
    # Inside the sampler, at the ask of trial i, trials 0..i-1 are complete (the old loop: 0).
    assert log["complete_in_sampler"] == [0, 1, 2, 3, 4, 5]
    # NSGA-II breeds generation g+1 from a complete generation g: with results withheld until
    # the end, every trial would stay in generation 0.
    study = store.load_study("nsga")
    generations = [t.system_attrs["NSGAIISampler:generation"] for t in study.get_trials()]
    assert generations == [0, 0, 1, 1, 2, 2]


# --------------------------------------------------------------------------- de-duplication


@pytest.mark.parametrize("workers", [1, 2])
def test_a_repeated_network_is_trained_once(store, two, trainings, workers) -> None:
    config = _config(f"dup{workers}", 5, workers, space=two, strategy="optuna:random", seed=1)
    df = run_search(config, store).set_index("number")
    assert len(df) == 5 and (df.status == "complete").all()
    assert len(trainings) == 2 and df.arch_id.nunique() == 2  # each network trained once
    trained = df[df.duplicate_of.isna()]
    assert sorted(trained.index) == sorted(trainings)
    first = {row.arch_id: n for n, row in trained.iterrows()}
    for n, row in df[df.duplicate_of.notna()].iterrows():
        assert int(row.duplicate_of) == first[row.arch_id] < n
        assert row.val_acc == df.val_acc[first[row.arch_id]]
    if workers == 2:  # trial 1 repeats trial 0 while trial 0 is still training: it waited
        assert df.arch_id[1] == df.arch_id[0] and df.duplicate_of[1] == 0


def test_grid_runs_past_the_end_of_its_grid(store, two, trainings) -> None:
    """Optuna's grid sampler stops a study when the grid is done; the search goes on instead."""
    df = run_search(_config("grid", 3, space=two, strategy="optuna:grid"), store)
    assert list(df.status) == ["complete"] * 3 and df.arch_id.nunique() == 2
    assert len(trainings) == 2 and df.duplicate_of[2] in (0, 1)


# --------------------------------------------------------------------------- progress


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_after_each_trial(store, workers) -> None:
    seen = []
    run_search(_config(f"p{workers}", 4, workers), store, on_progress=seen.append)
    assert [p.done for p in seen] == [1, 2, 3, 4]
    assert all(p.total == 4 and p.last_status == TrialStatus.COMPLETE for p in seen)
    assert all(p.best_val_acc is not None and p.front_size >= 1 for p in seen)


# --------------------------------------------------------------------------- interrupts


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupt_keeps_finished_trials(store, workers) -> None:
    def stop_after_two(p) -> None:
        if p.done == 2:
            raise KeyboardInterrupt

    config = _config(f"i{workers}", 5, workers)
    with pytest.raises(KeyboardInterrupt):
        run_search(config, store, on_progress=stop_after_two)
    df = store.trials(config.name)
    assert (df.status == "complete").sum() == 2  # finished work is kept
    cut = df[df.status != "complete"]
    assert set(cut.status) <= {"interrupted"} and (cut.fail_reason == USER_STOP).all()
    # 1 worker: nothing is in flight between trials. 2 workers: the trial still training, or
    # none when both finished before the loop looked (both are then told, progress runs twice).
    assert len(cut) == 0 if workers == 1 else len(cut) <= 1
    # Resumed (workers are not part of what must match): interrupted trials do not count.
    df = run_search(_config(config.name, 5), store)
    assert (df.status == "complete").sum() == 5 and (df.status != "running").all()


class InterruptedThird(TrainingEvaluator):
    """The built-in training, with Ctrl-C pressed during the third network's training."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def evaluate(self, task):
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return super().evaluate(task)


def test_interrupt_inside_training_marks_only_that_trial(store) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_search(
            _config("ctrl-c", 5, strategy="optuna:random"), store, evaluator=InterruptedThird()
        )
    df = store.trials("ctrl-c")
    assert list(df.status) == ["complete", "complete", "interrupted"]
    assert df.fail_reason[2] == USER_STOP and df.fail_reason[:2].isna().all()


def test_resume_marks_a_running_trial_without_heartbeats_interrupted(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FUSION_NAS_HEARTBEAT", "1")  # grace period 3 s
    store = Store(f"sqlite:///{tmp_path / 'stale.db'}")
    config = _config("stale", 2, strategy="optuna:random")
    run_search(config, store)
    store.load_study("stale").ask()  # left running by a process without heartbeats
    df = run_search(_config("stale", 3, strategy="optuna:random"), store)
    # it held a place until it was older than the grace period, then it was given up
    assert list(df.status) == ["complete", "complete", "interrupted", "complete"]
    assert df.fail_reason[2] == PROCESS_ENDED


# --------------------------------------------------------------------------- dead worker


def test_a_dead_worker_fails_its_trial_and_the_search_goes_on(store, monkeypatch) -> None:
    killed: list[int] = []

    class Killing(ProcessPool):
        def submit(self, key, task):
            super().submit(key, task)
            if key == 1:  # SIGKILL the worker that just got trial 1
                os.kill(self.pid_of(key), signal.SIGKILL)
                killed.append(key)

    use_pool(
        monkeypatch,
        lambda evaluator=None, workers=1, *a, **kw: Killing(workers, evaluator=evaluator),
    )
    df = run_search(_config("dead", 4, workers=2, strategy="optuna:random"), store)
    assert killed == [1] and len(df) == 4
    assert df.status[1] == "failed" and "worker process died (exit code -9)" in df.fail_reason[1]
    assert (df.drop(index=1).status == "complete").all()


# --------------------------------------------------------------------------- the seam


def test_every_registered_strategy_is_offered_by_the_cli() -> None:
    from typer.testing import CliRunner

    from fusion_nas.cli.app import app
    from fusion_nas.search.strategies import STRATEGIES, make_strategy

    out = CliRunner().invoke(app, ["search", "--help"], terminal_width=400).output
    for name, spec in STRATEGIES.items():
        assert name in out
        strategy = make_strategy(name)
        takes = inspect.signature(type(strategy)).parameters
        assert strategy.name == name and set(spec.options) <= set(takes)
    assert isinstance(make_strategy("optuna:nsga2"), Proposer)


# --------------------------------------------------------------------------- resume, history


def test_a_resume_starts_no_more_workers_than_trials_left(store, monkeypatch) -> None:
    sizes: list[int] = []

    def make_pool(evaluator=None, workers=1, device="auto", **kw):
        sizes.append(workers)
        return InlinePool(evaluator=evaluator)

    use_pool(monkeypatch, make_pool)
    run_search(_config("left", 3, strategy="optuna:random"), store)
    df = run_search(_config("left", 5, workers=8, strategy="optuna:random"), store)
    assert sizes == [1, 2]  # 2 trials left: 2 workers, not min(8, --trials 5)
    assert len(df) == 5 and (df.status == "complete").all()


def test_history_is_every_trial_as_a_fresh_read_gives_it(store) -> None:
    config = _config("hist", 3, strategy="optuna:random")
    run_search(config, store)
    study = store.load_study("hist")
    study.ask()  # one still running
    search = Search(config, study, InlinePool())
    try:
        fresh = [TrialRecord.from_trial(t) for t in study.get_trials()]
        assert search.history() == fresh and [r.number for r in fresh] == [0, 1, 2, 3]
        assert search.history()[3].status == TrialStatus.RUNNING
    finally:
        search.close()
