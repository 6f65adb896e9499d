"""NNI strategies: searches through NNI's model-space API land in the same store as Optuna's."""

from __future__ import annotations

import statistics
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

import fusion_nas.evaluation.trainer
from fusion_nas.cli.app import app
from fusion_nas.errors import StrategyError
from fusion_nas.model.arch import Architecture
from fusion_nas.model.space import load_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.session import run_search
from fusion_nas.search.strategies import make_strategy
from fusion_nas.search.strategies import nni_strategies as ns
from fusion_nas.store.records import TrialRecord, TrialStatus
from fusion_nas.store.store import Store
from fusion_nas.training.loop import ProxyConfig
from tests.search.test_strategies import PLANTED, SEEDS, plant, trials_to_optimum

pytestmark = pytest.mark.nni

FAST = ["--epochs", "1", "--train-subset", "64", "--batch-size", "32"]
FIELDS = ("status", "val_acc", "macs", "params", "arch", "arch_id", "curve", "train_seconds")
MEDIAN_MACS = 183_104  # median MACs of the 416 digits architectures


@pytest.fixture
def nni_installed():
    """Skip where the extra is missing (CI installs it, so there these tests run)."""
    pytest.importorskip("nni")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a temporary directory: NNI's files go to ./results/nni there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _config(name: str, strategy: str, trials: int, **kw) -> SearchConfig:
    return SearchConfig(
        name=name,
        space=load_space("digits"),
        dataset="synthetic",
        strategy=strategy,
        trials=trials,
        proxy=ProxyConfig(epochs=1, batch_size=32, train_subset=64),
        **kw,
    )


@pytest.mark.parametrize("strategy", ["nni:random", "nni:grid", "nni:evolution", "nni:tpe"])
def test_cli_search_records_every_trial(nni_installed, workdir, strategy):
    url = f"sqlite:///{workdir}/s.db"
    args = ["search", "digits", "-d", "synthetic", "-s", strategy, "-n", "3", *FAST]
    args += ["--store", url, "--population", "2", "--sample-size", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # NNI's logs stay off the console; the one line fusion-nas itself warns (a proxy of few
    # optimiser steps: FAST trains 1 epoch on 64 samples) is its own
    ours = [line for line in result.output.splitlines() if "optimiser steps" in line]
    assert len(ours) == 1 and ours[0].startswith("Warning: each trial trains only")
    output = "\n".join(line for line in result.output.splitlines() if line not in ours)
    for noise in ("WARNING", "INFO", "Warning", "nni"):
        assert noise not in output
    name = f"digits-synthetic-{strategy.split(':')[1]}"
    df = Store(url).trials(name)
    assert len(df) == 3 and list(df.number) == [0, 1, 2]
    assert df.arch_id.nunique() == 3  # NNI never proposes a sample twice
    ok = df[df.status == "complete"]
    assert len(ok) == 3
    for field in FIELDS:
        assert ok[field].notna().all(), field
    assert all(len(curve) == 1 for curve in ok.curve)
    assert Store(url).search_record(name).strategy == strategy
    log = (workdir / "results" / "nni" / "nni.log").read_text()
    assert name in log and "experiment" in log
    listing = CliRunner().invoke(app, ["results", "--store", url])
    assert listing.exit_code == 0 and name in listing.output and strategy in listing.output


def test_resume_adds_exactly_the_missing_trials(nni_installed, workdir):
    url = f"sqlite:///{workdir}/s.db"
    run_search(
        _config("evo", "nni:evolution", 2, strategy_options={"population": 2, "sample_size": 2}),
        Store(url),
    )
    first = Store(url).trials("evo")
    df = run_search(
        _config("evo", "nni:evolution", 4, strategy_options={"population": 2, "sample_size": 2}),
        Store(url),
    )
    assert list(df.number) == [0, 1, 2, 3]
    assert list(df.arch_id[:2]) == list(first.arch_id)  # the first trials are kept as they were
    assert df.arch_id.nunique() == 4  # the warm-started strategy does not repeat them
    assert (df.status == "complete").all()
    again = run_search(_config("evo", "nni:evolution", 4), Store(url))
    assert len(again) == 4  # nothing missing: nothing runs


def test_resumed_random_search_continues_the_same_sequence(nni_installed, workdir):
    # A budget of 1 MAC makes every trial infeasible: no training, only the proposals count.
    url = f"sqlite:///{workdir}/s.db"
    run_search(_config("once", "nni:random", 6, max_flops=1), Store(url))
    run_search(_config("twice", "nni:random", 3, max_flops=1), Store(url))
    run_search(_config("twice", "nni:random", 6, max_flops=1), Store(url))
    once, twice = Store(url).trials("once"), Store(url).trials("twice")
    assert list(once.arch_id) == list(twice.arch_id)
    assert (twice.status == "infeasible").all() and twice.train_seconds.isna().all()


def test_grid_tries_each_network_once_then_stops(nni_installed, workdir):
    (workdir / "tiny.toml").write_text(
        '[input]\nkind = "image"\nsize = [8, 8]\nchannels = 1\nclasses = 10\n'
        "[stem]\nwidth = 8\nkernel = 3\n"
        '[[stage]]\noperator = ["conv", "attention"]\nkernel = [3, 5]\nheads = [1, 2]\nwidth = 8\n'
    )
    space = load_space(workdir / "tiny.toml")
    assert space.num_architectures() == 4
    url = f"sqlite:///{workdir}/s.db"
    config = SearchConfig(
        name="tiny", space=space, dataset="synthetic", strategy="nni:grid", trials=6, max_flops=1
    )
    df = run_search(config, Store(url))
    assert len(df) == 4 and set(df.arch_id) == {a.arch_id for a in space.enumerate()}
    assert len(run_search(config, Store(url))) == 4  # resumed: nothing left to try


def test_failed_trial_is_recorded_and_the_search_goes_on(nni_installed, workdir, monkeypatch):
    real, calls = fusion_nas.evaluation.trainer.train_proxy, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash in training")
        return real(*args, **kwargs)

    monkeypatch.setattr(fusion_nas.evaluation.trainer, "train_proxy", flaky)
    url = f"sqlite:///{workdir}/s.db"
    df = run_search(_config("flaky", "nni:tpe", 3), Store(url))
    assert list(df.status) == ["complete", "failed", "complete"]
    failed = df.iloc[1]
    assert "simulated crash in training" in failed.fail_reason
    assert pd.isna(failed.val_acc) and failed.arch_id is not None


def test_budget_is_honoured_before_training(nni_installed, workdir):
    url = f"sqlite:///{workdir}/s.db"
    result = CliRunner().invoke(
        app,
        ["search", "digits", "-d", "synthetic", "-s", "nni:random", "-n", "6", *FAST]
        + ["--max-flops", str(MEDIAN_MACS), "--store", url, "--name", "budget"],
    )
    assert result.exit_code == 0, result.output
    df = Store(url).trials("budget")
    over, under = df[df.macs > MEDIAN_MACS], df[df.macs <= MEDIAN_MACS]
    assert len(over) and len(under)  # the seed gives both kinds
    assert (over.status == "infeasible").all()
    assert over.train_seconds.isna().all() and over.val_acc.isna().all()
    assert over.fail_reason.str.contains("over budget, not trained").all()
    assert (under.status == "complete").all() and under.train_seconds.notna().all()


def test_without_the_extra_one_line_hint_and_nothing_written(workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "nni", None)  # `import nni` fails as if not installed
    url = f"sqlite:///{workdir}/s.db"
    for strategy in ns.METHODS:
        result = CliRunner().invoke(
            app, ["search", "digits", "-d", "synthetic", "-s", strategy, "--store", url]
        )
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "pip install -e '.[nni]'" in lines[0], result.output
        assert "Traceback" not in result.output
    assert not (workdir / "s.db").exists() or Store(url).search_names() == []
    assert not (workdir / "results").exists()
    with pytest.raises(StrategyError, match="install"):
        make_strategy("nni:grid").check(load_space("digits"))


def test_bad_evolution_options_name_the_flag():
    with pytest.raises(StrategyError, match="--sample-size"):
        make_strategy("nni:evolution", population=3, sample_size=5)


def test_model_space_mirrors_the_search_space(nni_installed):
    space = load_space("digits")
    ms = ns.model_space(space)
    choices = ms.simplify()
    assert list(choices) == ["s0", "s1"]
    sizes = [len(c.values) for c in choices.values()]
    assert sizes == [st.count() for st in space.stages]
    assert sizes[0] * sizes[1] == space.num_architectures() == 416
    arch = space.sample(3)
    sample = ns.sample_of(arch)
    assert ns.architecture_of(sample, space) == arch
    frozen = ms.freeze(sample)  # NNI's frozen model is the real network of the architecture
    assert frozen.arch == arch
    import torch

    assert frozen(torch.zeros(space.input_shape(2))).shape == (2, space.classes)


def test_scalar_reported_to_nni():
    def trial(status, state=TrialState.COMPLETE, acc=None):
        attrs = {"status": status, "val_acc": acc}
        values = [acc or 0.0, 1.0] if state == TrialState.COMPLETE else None
        frozen = optuna.trial.create_trial(state=state, values=values, user_attrs=attrs)
        return TrialRecord.from_trial(frozen)

    assert ns.score(trial("complete", acc=0.75)) == 0.75
    assert ns.score(trial("infeasible")) == ns.PENALTY == -1.0
    assert ns.score(trial("failed", state=TrialState.FAIL)) == ns.PENALTY


def test_history_leaves_out_interrupted_and_running_trials_by_status():
    space = load_space("digits")
    a, b, c, d = (space.sample(i) for i in range(4))

    def rec(number, arch, status, acc=None, reason=None):
        return TrialRecord(
            number,
            status,
            val_acc=acc,
            arch=arch.to_dict(),
            arch_id=arch.arch_id,
            fail_reason=reason,
        )

    class Runner:  # a TrialRunner with a fixed history
        name, space, seed = "h", load_space("digits"), 0

        def history(self):
            return [
                rec(0, a, TrialStatus.COMPLETE, 0.5),
                rec(1, b, TrialStatus.INTERRUPTED, reason="stopped by the user (Ctrl-C)"),
                rec(2, c, TrialStatus.FAILED, reason="interrupted-looking text, still a failure"),
                rec(3, d, TrialStatus.RUNNING),
            ]

    history = ns._history(Runner())
    assert history == [(ns.sample_of(a), 0.5), (ns.sample_of(c), ns.PENALTY)]


# --------------------------------------------------------------------------- NNI's own classes


@pytest.fixture
def nni_api():
    """NNI imported the way the strategies import it (quietly)."""
    return ns._nni()


def _seeded(state: np.random.RandomState, seed: int) -> bool:
    """Whether a NumPy random state is fresh from ``seed``."""
    return np.array_equal(state.get_state()[1], np.random.RandomState(seed).get_state()[1])


def test_each_name_builds_the_nni_strategy_it_claims(nni_api) -> None:
    from nni.algorithms.hpo.tpe_tuner import OptimizeMode, TpeTuner
    from nni.nas.strategy import GridSearch, Random, RegularizedEvolution
    from nni.nas.strategy.hpo import HPOTunerStrategy

    space = load_space("digits")  # two stages

    def build(name: str, **options):
        return make_strategy(name, **options).nni_strategy(space, 5, [])

    random = build("nni:random")
    assert type(random) is Random and _seeded(random._random_state, 5)
    assert random._dedup_helper is not None  # never proposes a network twice

    grid = build("nni:grid")
    assert type(grid) is GridSearch and grid.shuffle is True and _seeded(grid._random_state, 5)

    evo = build("nni:evolution", population=6, sample_size=3)
    assert type(evo) is RegularizedEvolution
    assert (evo.population_size, evo.sample_size) == (6, 3)
    assert evo.mutation_prob == 0.5 and evo.crossover is False  # one stage of two per child
    assert _seeded(evo._random_state, 5) and len(evo._population) == 0
    default = build("nni:evolution")
    assert (default.population_size, default.sample_size) == (12, 4)

    tpe = build("nni:tpe", seed_trials=4)
    assert isinstance(tpe, HPOTunerStrategy) and isinstance(tpe.tuner, TpeTuner)
    assert tpe.tuner.optimize_mode is OptimizeMode.Maximize  # accuracy goes up
    assert tpe.tuner.args.n_startup_jobs == 4
    rng = np.random.default_rng(5)
    assert tpe.tuner.rng.bit_generator.state == rng.bit_generator.state
    assert build("nni:tpe").tuner.args.n_startup_jobs == 10


def _capture_strategies(monkeypatch) -> list:
    """Record every NNI strategy object the search builds."""
    built: list = []
    real = ns.NniStrategy.nni_strategy

    def spy(self, *args, **kwargs):
        built.append(real(self, *args, **kwargs))
        return built[-1]

    monkeypatch.setattr(ns.NniStrategy, "nni_strategy", spy)
    return built


def _planted_config(name: str, strategy: str, trials: int, space, **options) -> SearchConfig:
    return SearchConfig(
        name=name,
        space=space,
        dataset="synthetic",
        strategy=strategy,
        trials=trials,
        strategy_options=options,
    )


def test_evolution_breeds_from_the_results_it_was_told(workdir, monkeypatch) -> None:
    space = plant(monkeypatch)
    built = _capture_strategies(monkeypatch)
    store = Store.in_memory()
    config = _planted_config("evo", "nni:evolution", 7, space, population=3, sample_size=2)
    run_search(config, store, evaluator=PLANTED)
    (evo,) = built
    df = store.trials("evo")
    assert len(df) == 7 and (df.status == "complete").all()
    told = [
        (ns.sample_of(Architecture.from_dict(arch)), acc) for arch, acc in zip(df.arch, df.val_acc)
    ]
    # The population is the last `population` results, each with the accuracy the search
    # recorded (regularized evolution drops the oldest).
    assert [(dict(i.x), i.y) for i in evo._population] == told[-3:]
    assert len({frozenset(s.items()) for s, _ in told}) == 7  # no network proposed twice


def test_evolution_finds_a_planted_optimum_sooner_than_random(workdir, monkeypatch) -> None:
    # Measured over seeds 0-9 (optimum found after trials, capped at 101): NNI's random 87.1,
    # regularized evolution (population 8, sample size 4) 39.7. An evolution that ignored its
    # results would propose what random search does.
    space = plant(monkeypatch)
    options = {"population": 8, "sample_size": 4}
    evo = [trials_to_optimum(space, "nni:evolution", options, s) for s in SEEDS]
    rand = [trials_to_optimum(space, "nni:random", {}, s) for s in SEEDS]
    assert statistics.mean(rand) > 50, rand  # the optimum is hard to hit by chance
    assert statistics.mean(evo) < 0.65 * statistics.mean(rand), (evo, rand)


def test_tpe_is_told_every_result_and_replays_the_stored_ones(workdir, monkeypatch) -> None:
    space = plant(monkeypatch)
    built = _capture_strategies(monkeypatch)
    store = Store.in_memory()
    config = _planted_config("tpe", "nni:tpe", 2, space, seed_trials=2)
    run_search(config, store, evaluator=PLANTED)  # NNI's TPE strategy waits a second per trial
    df = store.trials("tpe")
    losses = [-acc for acc in df.val_acc]  # the tuner minimises the negated accuracy
    history = built[0].tuner._history  # per stage, keyed the way NNI formats a space
    assert set(history) == {("s0",), ("s1",), ("s2",), ("s3",)}
    assert all([r.loss for r in records] == losses for records in history.values())
    # A resumed search builds the tuner from the stored results before it proposes anything.
    resumed = make_strategy("nni:tpe").nni_strategy(space, 0, ns._history(_Runner(store)))
    resumed.tuner.update_search_space(
        {label: m.as_legacy_dict() for label, m in ns.model_space(space).simplify().items()}
    )
    assert [r.loss for r in resumed.tuner._history[("s3",)]] == losses


class _Runner:
    """The part of a TrialRunner that :func:`nni_strategies._history` reads."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def history(self) -> list[TrialRecord]:
        return self.store.records("tpe")
