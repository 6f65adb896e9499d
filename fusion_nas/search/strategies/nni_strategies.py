"""NNI strategies: random, grid, regularized evolution and TPE through NNI's own NAS API.

Needs the optional extra: ``pip install -e '.[nni]'`` (NNI 3.0 and pytorch_lightning).
Without it, an ``nni:*`` strategy stops with that install command before anything is written.

How a search runs
-----------------
The search space becomes an NNI ``ModelSpace`` (:func:`model_space`): stage ``i`` is one
``nni.choice`` labelled ``s{i}`` over the stage's distinct choices, each named by its short
label (``conv(k3)@8``, ``gated(k3,h2,win)x2@32``), so NNI proposes each stage's operator
together with the kernel, heads, attention variant, width and depth that operator reads (no two
samples build the same network). Frozen on a sample, the model space is its ``.arch`` and the
real network (built by :func:`fusion_nas.model.build.build_model` on the first forward only: the
search costs and trains proposals itself, so NNI's copy is never allocated unless called).

NNI's strategy proposes (``Random``, ``GridSearch``, ``RegularizedEvolution`` and ``TPE`` from
``nni.nas.strategy``, each seeded with the search's seed). A ``NasExperiment`` with the
sequential execution engine (``SequentialEngineConfig``) runs the proposals one by one in this
process, at most ``max_trial_number`` = the trials still missing. NNI drives this loop, so the
strategy is a :class:`~fusion_nas.search.strategies.base.Driver`: its ``FunctionalEvaluator`` hands
each architecture to :meth:`~fusion_nas.search.strategies.base.TrialRunner.evaluate`, which the
search
implements: it costs the network, records an over-budget one as infeasible without training,
re-uses an already evaluated one, trains the rest and records every trial in the results store
with the same fields, statuses and failure reasons as an Optuna trial. The evaluator then
reports one number to NNI with ``nni.report_final_result``.

The number NNI optimises
------------------------
NNI optimises one scalar (it has no multi-objective search). ``macs_weight`` (λ, option
``--macs-weight``, default 0) trades accuracy for cost, a weighted-sum scalarisation of the
search's two objectives:

==========================================  ============================================
trial                                       scalar reported to NNI
==========================================  ============================================
trained (status ``complete``)               val_acc - λ · log10(MACs)
over budget (status ``infeasible``)         ``PENALTY`` - λ · ``MAX_LOG_MACS`` = -1 - 15 λ
failed (NaN loss, timeout, exception)       ``PENALTY`` - λ · ``MAX_LOG_MACS`` = -1 - 15 λ
==========================================  ============================================

With λ = 0 the scalar is the validation accuracy alone and NNI heads for the most accurate
network whatever it costs. With λ > 0 one decade of MACs is worth λ of accuracy, so the
strategy heads for the point of the front where the front's slope is λ per decade (λ = 0.05:
a network ten times cheaper is preferred unless it loses more than 5 points). An over-budget
or failed network ranks below every trained one. The store records both objectives of every
trial either way, so the front, hypervolume and plots treat NNI and Optuna searches alike.

NNI's ``HPOTunerStrategy`` (TPE) sleeps one second after each proposal, waiting for a worker;
the sequential engine trains synchronously, so :func:`_nni`'s ``TpeStrategy`` only waits when no
worker is idle (never, with this engine).

Resume
------
NNI's own checkpoints are not used: the results store is the record. A resumed search
warm-starts the NNI strategy from the stored trials (those with status ``interrupted``, cut
short by Ctrl-C or an ended process, are left out, so NNI may propose them again): the
samples already tried are never proposed again, regularized evolution starts from the last
``population`` trials as its population, and TPE replays every stored result.

Files and output
----------------
NNI's logs, the warnings raised while it runs and whatever it prints on import go to
``nni.log`` in :func:`fusion_nas.settings.nni_dir` (``results/nni`` by default); NNI's
experiment directory (``log/experiment.log``, ``checkpoint/``) is ``<nni_dir>/<id>/`` with one
id per search name, and its experiment list ``<nni_dir>/.experiment`` (NNI would use
``~/nni-experiments``). Nothing of NNI reaches the console, so the progress bar stays clean.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import math
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna

from fusion_nas import settings
from fusion_nas.errors import StrategyError, allowed
from fusion_nas.model.arch import Architecture, StageChoice
from fusion_nas.model.build import build_model
from fusion_nas.model.space import SearchSpace
from fusion_nas.search.strategies.base import Driver, TrialRunner
from fusion_nas.store.records import TrialRecord, TrialStatus

PENALTY = -1.0  # scalar of an over-budget or failed trial: below every accuracy
MAX_LOG_MACS = 15.0  # log10 of 10^15 MACs, beyond any trainable network: penalties stay lowest
INSTALL_HINT = "pip install -e '.[nni]'"
METHODS = {
    "nni:random": "Random",
    "nni:grid": "GridSearch",
    "nni:evolution": "RegularizedEvolution",
    "nni:tpe": "TPE",
}

_log = logging.getLogger("nni.fusion_nas")  # under NNI's logger: it goes where NNI's logs go
_import_notes: list[str] = []  # what importing NNI printed or warned, for the log file


# --------------------------------------------------------------------------- NNI import


def _import_nni(strategy: str = "nni:*") -> None:
    """Import NNI's NAS API quietly; raise :class:`StrategyError` with the install hint."""
    printed = io.StringIO()
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(printed),
            contextlib.redirect_stderr(printed),
        ):
            import nni

            nni.silence_stdout()  # NNI logs to stdout from import on; its logs go to a file
            import nni.algorithms.hpo.tpe_tuner
            import nni.nas.evaluator
            import nni.nas.experiment
            import nni.nas.nn.pytorch
            import nni.nas.space
            import nni.nas.strategy
            import nni.tools.nnictl.config_utils
    except Exception as exc:  # missing package, or an install that cannot import
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise StrategyError(
            f"strategy {strategy!r} needs the optional NNI extra; install it with: "
            f"{INSTALL_HINT} ({reason})"
        ) from None
    _import_notes.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    _import_notes.extend(line for line in printed.getvalue().splitlines() if line.strip())


@functools.cache
def _nni() -> SimpleNamespace:
    """NNI's classes, and the three defined on top of them (NNI imported quietly first)."""
    _import_nni()  # every module imported below is then loaded already
    import nni
    from nni.algorithms.hpo.tpe_tuner import TpeTuner
    from nni.mutable import ensure_frozen
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment
    from nni.nas.experiment.config import NasExperimentConfig, SequentialEngineConfig
    from nni.nas.nn.pytorch import ModelSpace
    from nni.nas.space import model_context
    from nni.nas.strategy import GridSearch, Random, RegularizedEvolution
    from nni.nas.strategy.evolution import Individual
    from nni.nas.strategy.hpo import HPOTunerStrategy
    from nni.tools.nnictl.config_utils import Experiments

    class FusionModelSpace(ModelSpace):
        """A fusion-nas search space as an NNI model space: one ``nni.choice`` per stage."""

        def __init__(self, space: SearchSpace) -> None:
            super().__init__()
            stages = []
            for i, options in enumerate(_stage_options(space)):
                choice = self.add_mutable(nni.choice(f"s{i}", list(options)))
                stages.append(options[ensure_frozen(choice)])  # the sampled label's stage
            self.arch = Architecture(space.name, tuple(stages))
            self.space = space
            self.net: Any = None  # built on the first forward

        def freeze(self, sample: dict[str, Any]) -> FusionModelSpace:
            """The model space built again with ``sample``'s choices: one real network."""
            with model_context(sample):
                return FusionModelSpace(*self.trace_args, **self.trace_kwargs)

        def forward(self, x: Any) -> Any:
            """The network of the sampled architecture (the first choices before freezing)."""
            if self.net is None:
                self.net = build_model(self.arch, self.space)
            return self.net(x)

    class Experiment(NasExperiment):
        """``NasExperiment`` that keeps its experiment list in its working directory."""

        def _start_without_nni_manager(self) -> None:
            workdir = str(self.config.experiment_working_directory)
            Experiments(home_dir=workdir).add_experiment(
                self.id,
                "N/A",
                int(time.time() * 1000),
                "N/A",
                self.config.experiment_name,
                "N/A",
                status="RUNNING",
                tag=["retiarii"],
                logDir=workdir,
            )

        def _stop_without_nni_manager(self) -> None:
            experiments = Experiments(home_dir=str(self.config.experiment_working_directory))
            experiments.update_experiment(self.id, "status", "STOPPED")
            experiments.update_experiment(self.id, "endTime", int(time.time() * 1000))

    class TpeStrategy(HPOTunerStrategy):
        """NNI's tuner strategy without the fixed one-second pause after every proposal."""

        def _run(self) -> None:
            space = {k: m.as_legacy_dict() for k, m in self.model_space.simplify().items()}
            with self._thread_lock:
                self.tuner.update_search_space(space)
            while self.engine.budget_available():
                if not self.engine.idle_worker_available():
                    time.sleep(0.05)  # a parallel engine: wait for a worker
                    continue
                with self._thread_lock:
                    try:
                        param = self.tuner.generate_parameters(self._model_count)
                    except nni.NoMoreTrialError:
                        _log.warning("no more trials generated by the tuner; stopping")
                        break
                    model = self.model_space.freeze(param)
                    self._model_to_id[model] = self._model_count
                    self._model_count += 1
                self.engine.submit_models(model)  # the sequential engine trains it here

    class WarmTpeTuner(TpeTuner):
        """NNI's TPE tuner that replays earlier results once it knows the search space."""

        def __init__(self, history: list[dict[str, Any]], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.history = history

        def update_search_space(self, space: Any) -> None:
            super().update_search_space(space)
            if self.history:
                self.import_data(self.history)

    return SimpleNamespace(
        FusionModelSpace=FusionModelSpace,
        Experiment=Experiment,
        WarmTpeTuner=WarmTpeTuner,
        FunctionalEvaluator=FunctionalEvaluator,
        NasExperimentConfig=NasExperimentConfig,
        SequentialEngineConfig=SequentialEngineConfig,
        GridSearch=GridSearch,
        Random=Random,
        RegularizedEvolution=RegularizedEvolution,
        Individual=Individual,
        HPOTunerStrategy=HPOTunerStrategy,
        TpeStrategy=TpeStrategy,
    )


# --------------------------------------------------------------------------- space mapping


def _stage_options(space: SearchSpace) -> list[dict[str, StageChoice]]:
    """Per stage: label -> distinct choice (labels are the short descriptions)."""
    return [{opt.describe(): opt for opt in spec.options()} for spec in space.stages]


def model_space(space: SearchSpace) -> Any:
    """``space`` as an NNI ``ModelSpace`` (the choice of stage ``i`` is labelled ``s{i}``)."""
    return _nni().FusionModelSpace(space)


def sample_of(arch: Architecture) -> dict[str, str]:
    """The NNI sample that freezes the model space to ``arch``."""
    return {f"s{i}": stage.describe() for i, stage in enumerate(arch.stages)}


def architecture_of(sample: dict[str, str], space: SearchSpace) -> Architecture:
    """Inverse of :func:`sample_of`."""
    options = _stage_options(space)
    return Architecture(space.name, tuple(options[i][sample[f"s{i}"]] for i in range(len(options))))


def score(record: TrialRecord, macs_weight: float = 0.0) -> float:
    """The scalar NNI optimises: accuracy (or :data:`PENALTY`) - λ·log10(MACs) (module doc)."""
    if record.status == TrialStatus.COMPLETE and record.val_acc is not None:
        cost = macs_weight * math.log10(max(record.macs or 1, 1)) if macs_weight else 0.0
        return float(record.val_acc) - cost
    return PENALTY - macs_weight * MAX_LOG_MACS


def _evaluate(model: Any, runner: TrialRunner, macs_weight: float = 0.0) -> None:
    """NNI's evaluator: record the trial through the runner, report its scalar to NNI."""
    import nni

    nni.report_final_result(score(runner.evaluate(model.arch), macs_weight))


def _history(runner: TrialRunner, macs_weight: float = 0.0) -> list[tuple[dict[str, str], float]]:
    """(sample, scalar) of the search's finished trials, oldest first.

    Interrupted trials are left out: they say nothing against the network, so NNI may propose
    it again. Running ones (another process) are not results yet.
    """
    return [
        (sample_of(Architecture.from_dict(r.arch)), score(r, macs_weight))
        for r in runner.history()
        if r.status.finished and r.arch is not None
    ]


def _experiment_id(name: str) -> str:
    """NNI experiment id of a search (at most 32 characters of ``[A-Za-z0-9_-]``)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:20]
    return f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}".lstrip("-")


# --------------------------------------------------------------------------- output


def _warning_to_log(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    _log.warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)


@contextlib.contextmanager
def _nni_output(log_file: Path) -> Iterator[None]:
    """Send NNI's logs and every warning to ``log_file`` instead of the console."""
    logger = logging.getLogger("nni")
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s (%(name)s) %(message)s"))
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # nothing reaches the root logger (and so the console)
    try:
        while _import_notes:
            _log.info("on import: %s", _import_notes.pop(0))
        with warnings.catch_warnings():
            warnings.showwarning = _warning_to_log  # restored when the block ends
            yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.propagate = propagate


# --------------------------------------------------------------------------- strategy


class NniStrategy(Driver):
    """An NNI NAS strategy run by NNI's sequential engine; trials go through the runner.

    ``population`` and ``sample_size`` configure regularized evolution (population size and
    tournament size; a child re-draws each stage with probability ``1 / stages``);
    ``seed_trials`` is the number of random trials before TPE models the results;
    ``macs_weight`` (λ) makes the scalar NNI optimises val_acc - λ·log10(MACs) (module doc).
    """

    def __init__(
        self,
        name: str,
        population: int = 12,
        sample_size: int = 4,
        seed_trials: int = 10,
        macs_weight: float = 0.0,
    ) -> None:
        if name not in METHODS:
            raise StrategyError(f"unknown NNI strategy {name!r}; allowed: {allowed(METHODS)}")
        if population < 1:
            raise StrategyError(f"--population must be at least 1, got {population}")
        if name == "nni:evolution" and not 1 <= sample_size <= population:
            raise StrategyError(
                f"--sample-size must be between 1 and --population ({population}), "
                f"got {sample_size}"
            )
        if seed_trials < 1:
            raise StrategyError(f"seed_trials must be at least 1, got {seed_trials}")
        if not (math.isfinite(macs_weight) and macs_weight >= 0):
            raise StrategyError(f"--macs-weight must be 0 or more, got {macs_weight}")
        self.name = name
        self.macs_weight = float(macs_weight)
        self.population = population
        self.sample_size = sample_size
        self.seed_trials = seed_trials

    def check(self, space: SearchSpace) -> None:
        """NNI must be importable (the install hint otherwise)."""
        _import_nni(self.name)

    def sampler(self, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
        """NNI proposes; the study only records, so its sampler never suggests anything."""
        return optuna.samplers.RandomSampler(seed=seed)

    def nni_strategy(
        self, space: SearchSpace, seed: int, history: list[tuple[dict[str, str], float]]
    ) -> Any:
        """The seeded NNI strategy, warm-started with ``history`` (sample, scalar) pairs."""
        api = _nni()
        from numpy.random import RandomState

        tried = {
            "random_state": RandomState(seed).get_state(),
            "dedup_history": [frozenset(sample.items()) for sample, _ in history],
        }
        if self.name == "nni:random":
            strategy = api.Random(seed=seed)
            strategy.load_state_dict(tried)
        elif self.name == "nni:grid":
            strategy = api.GridSearch(shuffle=True, seed=seed)
            strategy.load_state_dict({**tried, "granularity": 1, "no_sample_found_counter": 0})
        elif self.name == "nni:evolution":
            strategy = api.RegularizedEvolution(
                population_size=self.population,
                sample_size=self.sample_size,
                mutation_prob=1.0 / len(space.stages),
                seed=seed,
            )
            recent = history[-self.population :]
            strategy.load_state_dict(
                {
                    **tried,
                    "population": [api.Individual(dict(s), y) for s, y in recent],
                    "individual_counter": len(history),
                    "num_running_models": 0,
                }
            )
        else:
            tuner = api.WarmTpeTuner(
                [{"parameter": sample, "value": y} for sample, y in history],
                optimize_mode="maximize",
                seed=seed,
                tpe_args={"n_startup_jobs": self.seed_trials},
            )
            strategy = api.TpeStrategy(tuner)
        return strategy

    def run(self, runner: TrialRunner, n_trials: int) -> None:
        """Run an NNI experiment of ``n_trials`` models; each is a trial of the runner."""
        api = _nni()
        workdir = settings.nni_dir().resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        with _nni_output(workdir / "nni.log"):
            history = _history(runner, self.macs_weight)
            strategy = self.nni_strategy(runner.space, runner.seed, history)
            experiment = api.Experiment(
                model_space(runner.space),
                api.FunctionalEvaluator(_evaluate, runner=runner, macs_weight=self.macs_weight),
                strategy,
                api.NasExperimentConfig(
                    execution_engine=api.SequentialEngineConfig(max_model_count=n_trials),
                    model_format="simplified",
                    experiment_name=runner.name,
                    experiment_working_directory=str(workdir),
                    max_trial_number=n_trials,
                ),
                id=_experiment_id(runner.name),
            )
            _log.info(
                "search %r: %s (%s), %d trial(s), %d earlier result(s), seed %d, experiment %s",
                runner.name,
                self.name,
                type(strategy).__name__,
                n_trials,
                len(history),
                runner.seed,
                experiment.id,
            )
            before = len(runner.history())
            try:
                experiment.start()  # runs the strategy to the end in this thread
            finally:
                experiment.stop()
            ran = len(runner.history()) - before
            if ran < n_trials:  # e.g. a grid or a small space ran out of new networks
                _log.warning("%s stopped after %d of %d trial(s)", self.name, ran, n_trials)
