"""Open a search and run it: check the input, create or resume the study, pick the evaluator.

``run_search`` checks the space, dataset, strategy and budgets *before* it writes anything,
so bad input leaves the store untouched. Then a :class:`~fusion_nas.search.loop.Search` runs
the trials.

What trains a trial is an :class:`~fusion_nas.evaluation.base.Evaluator`: the built-in proxy
trainer by default; ``run_search(config, store, evaluator=...)`` takes any object with its one
method, ``data=DataSplits(...)`` trains the built-in way on the user's own datasets and
``train_fn=...`` runs the user's own training function (see :mod:`fusion_nas.evaluation`).

With ``evaluator="table:PATH"`` (``--evaluator``) the pool is a
:class:`~fusion_nas.evaluation.table.TablePool`: the same loop, but every result (and every cost)
is looked up in a tabular benchmark, so hundreds of trials take seconds; the table is checked
against the space, dataset and proxy before anything is written.

Ctrl-C, SIGTERM (or any error) ends only the trials still open, as ``interrupted``; finished
trials stay as they are. A resumed search first marks trials left running by an ended process
as ``interrupted``; those do not count towards the trial total, so the resumed search runs them
again.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna
import pandas as pd

from fusion_nas.errors import (
    FusionNasError,
    ShortProxyWarning,
    StoreError,
    StrategyError,
    one_line,
)
from fusion_nas.evaluation.base import Evaluator
from fusion_nas.evaluation.function import FunctionEvaluator, TrainFn
from fusion_nas.evaluation.pools import Pool, make_pool
from fusion_nas.evaluation.table import TableEvaluator, load_table
from fusion_nas.evaluation.trainer import TrainingEvaluator
from fusion_nas.model.cost import Cost
from fusion_nas.search.config import (
    DEFAULT_STRATEGY,
    NO_QUEUE_STRATEGIES,
    SearchConfig,
    _check_resume,
    cap_workers,
    settle_proxy,
)
from fusion_nas.search.loop import Progress, Search
from fusion_nas.search.signals import USER_STOP, Terminated, terminate_as_interrupt
from fusion_nas.search.start import BlindSampler, enqueue_members
from fusion_nas.search.strategies import STRATEGIES, Driver, Proposer, Strategy, make_strategy
from fusion_nas.search.workers import fail_stale, tally, worker_id
from fusion_nas.store import optuna_adapter, records
from fusion_nas.store.store import Store, redact_url
from fusion_nas.training.data import DataSplits, dataset_for
from fusion_nas.training.devices import check_precision, worker_devices
from fusion_nas.training.loop import MIN_PROXY_STEPS, proxy_steps, steps_advice

if TYPE_CHECKING:  # the pre-screen (zero-cost proxies) is imported only when used
    from fusion_nas.search.prescreen import Screened


def builds_own_data(evaluator: Evaluator | None) -> bool:
    """Whether ``evaluator`` trains on data of its own (the user's splits, or anything a custom
    evaluator does) rather than on the search's built-in dataset."""
    if evaluator is None:
        return False
    if isinstance(evaluator, (TrainingEvaluator, FunctionEvaluator)):
        return evaluator.data is not None
    return True  # a custom evaluator: what it reads is its own business


def resolve_evaluator(
    config: SearchConfig,
    evaluator: Evaluator | None = None,
    data: DataSplits | None = None,
    train_fn: TrainFn | None = None,
) -> Evaluator | None:
    """The evaluator of a search: the one given, else ``train_fn`` (on ``data`` or the built-in
    dataset), else the built-in trainer on ``data``; ``None``: the built-in trainer on the
    search's dataset. Refuses, in one line, combinations that cannot both hold."""
    given = [n for n, v in (("data", data), ("train_fn", train_fn)) if v is not None]
    if config.table is not None and (evaluator is not None or given):
        what = ", ".join(["evaluator", *given] if evaluator is not None else given)
        raise FusionNasError(
            f"a search answered by a table (evaluator {config.evaluator!r}) takes no {what}; "
            "allowed: the table alone, or evaluator 'train' with evaluator, data or train_fn"
        )
    if evaluator is not None and given:
        raise FusionNasError(
            f"pass either an evaluator or {' and '.join(given)}, not both: the evaluator "
            "decides what it trains on"
        )
    if evaluator is not None and not callable(getattr(evaluator, "evaluate", None)):
        raise FusionNasError(
            f"evaluator {evaluator!r} has no evaluate(task) method; allowed: an object with "
            "evaluate(task: EvalTask) -> Outcome (fusion_nas.evaluation.Evaluator)"
        )
    if data is not None and not isinstance(data, DataSplits):
        raise FusionNasError(
            f"data must be a DataSplits(train, val, test=None), not {type(data).__name__}"
        )
    if train_fn is not None:
        if not callable(train_fn):
            raise FusionNasError(f"train_fn must be callable, not {type(train_fn).__name__}")
        return FunctionEvaluator(train_fn, data)
    if data is not None:
        return TrainingEvaluator(data=data)
    return evaluator


def _check_data(config: SearchConfig, data: DataSplits) -> None:
    """One sample of the user's train and validation data has the space's input shape."""
    want = tuple(config.space.input_shape(1))[1:]
    for part in ("train", "val"):
        split = getattr(data, part)
        if split is None or len(split) == 0:
            raise FusionNasError(f"data.{part} is empty; a search needs train and val samples")
        x = split[0][0]
        shape = tuple(getattr(x, "shape", ()))
        if shape != want:
            raise FusionNasError(
                f"data.{part} samples have shape {shape}, but space {config.space.name!r} "
                f"takes {want} (channels, *size)"
            )


def prepare(config: SearchConfig, evaluator: Evaluator | None = None) -> Strategy:
    """Validate dataset, strategy and evaluator for ``config`` without touching any store.

    ``evaluator`` (from :func:`resolve_evaluator`) decides whether the built-in dataset is
    loaded: an evaluator with data of its own has that data's shape checked instead."""
    strategy = make_strategy(config.strategy or DEFAULT_STRATEGY, **config.strategy_options)
    strategy.check(config.space)
    if config.screening is not None and not isinstance(strategy, Proposer):
        raise StrategyError(
            f"--prescreen needs a strategy that proposes through Optuna, not {config.strategy!r}; "
            f"allowed: {', '.join(_queueing_strategies())}"
        )
    if config.screening is not None and config.strategy in NO_QUEUE_STRATEGIES:
        raise StrategyError(
            f"--prescreen cannot queue networks for --strategy {config.strategy!r}; "
            f"allowed: {', '.join(_queueing_strategies())}"
        )
    if config.start_from and (
        not isinstance(strategy, Proposer) or config.strategy in NO_QUEUE_STRATEGIES
    ):
        raise StrategyError(
            f"--start-from cannot queue networks for --strategy {config.strategy!r}; "
            f"allowed: {', '.join(_queueing_strategies())}"
        )
    p = config.proxy
    table = config.table
    if table is not None:  # nothing is trained: the table must answer every network
        load_table(table.path).check(config.space, config.dataset, p, table.seed)
        return strategy
    # A device this machine lacks, or a precision it cannot train in: refused now.
    devices = worker_devices(config.device, config.workers, config.trials_per_device)
    check_precision(p.precision, devices)
    data = getattr(evaluator, "data", None)
    if isinstance(data, DataSplits):
        _check_data(config, data)
    if builds_own_data(evaluator):
        return strategy
    dataset_for(
        config.dataset,
        config.space.source,
        config.data_dir,
        p.val_fraction,
        config.seed,
        p.train_subset,
    )
    return strategy


def skipped_files(config: SearchConfig, evaluator: Evaluator | None = None) -> int:
    """Unreadable files left out of the data the search trains on (a folder's corrupt images,
    each logged when loaded): ``DataSplits.skipped`` of the user's or the built-in data."""
    if config.table is not None:
        return 0
    data = getattr(evaluator, "data", None)
    if isinstance(data, DataSplits):
        return data.skipped
    if builds_own_data(evaluator):
        return 0
    p = config.proxy  # loaded by prepare(): read from the per-process cache
    src = config.space.source
    return dataset_for(
        config.dataset, src, config.data_dir, p.val_fraction, config.seed, p.train_subset
    ).skipped


def warn_short_proxy(config: SearchConfig, evaluator: Evaluator | None = None) -> int | None:
    """Warn (:class:`~fusion_nas.errors.ShortProxyWarning`) when a trial's proxy run takes
    fewer than :data:`~fusion_nas.training.loop.MIN_PROXY_STEPS` optimiser steps; return the
    steps (``None`` when the built-in trainer does not train: a table, a custom evaluator or
    ``train_fn``)."""
    if config.table is not None or not (
        evaluator is None or isinstance(evaluator, TrainingEvaluator)
    ):
        return None
    data = getattr(evaluator, "data", None)
    if not isinstance(data, DataSplits):
        p = config.proxy
        src = config.space.source
        data = dataset_for(
            config.dataset, src, config.data_dir, p.val_fraction, config.seed, p.train_subset
        )
    n_train, p = len(data.train), config.proxy
    steps = proxy_steps(n_train, p)
    if steps < MIN_PROXY_STEPS:
        advice = steps_advice(n_train, p)
        by_batch = f"batch_size={advice['batch_size']} or " if advice["batch_size"] else ""
        warnings.warn(
            ShortProxyWarning(
                f"each trial trains {steps} optimiser steps ({n_train} training samples, "
                f"batch size {p.batch_size}, {p.epochs} epoch{'s' * (p.epochs != 1)}), fewer than "
                f"{MIN_PROXY_STEPS}: "
                f"networks may not learn and their scores rank nothing; {by_batch}"
                f"epochs={advice['epochs']} reaches {MIN_PROXY_STEPS}",
                n_train=n_train,
                batch_size=p.batch_size,
                epochs=p.epochs,
                steps=steps,
                minimum=MIN_PROXY_STEPS,
                advice=advice,
            ),
            stacklevel=3,
        )
    return steps


def settle_strategy(config: SearchConfig, store: Store | str | None = None) -> SearchConfig:
    """``config`` with its strategy settled: the one it names; when it names none
    (``strategy=None``, no ``--strategy``), the stored strategy and options of the search of that
    name in ``store`` (an existing search resumes as it began, whatever today's default), else
    :data:`~fusion_nas.search.config.DEFAULT_STRATEGY`. The proxy's augmentation is settled
    the same way when it names none (:func:`~fusion_nas.search.config.settle_proxy`).
    ``store`` is a store or its URL; a store that does not exist yet is not created here."""
    old = None
    if config.strategy is None or config.proxy.augment is None:
        old = _stored_record(store, config.name)
    config = settle_proxy(config, old)  # augmentation likewise: stored, else the dataset's
    if config.strategy is not None:
        return config
    if old is None:
        return dataclasses.replace(config, strategy=DEFAULT_STRATEGY)
    return dataclasses.replace(
        config, strategy=old.strategy, strategy_options=dict(old.strategy_options)
    )


def _stored_record(store: Store | str | None, name: str) -> records.SearchRecord | None:
    """The record of search ``name`` in ``store`` (a store or a URL), or ``None``."""
    try:
        st = store if isinstance(store, Store) else Store(store, create=False)
        return st.search_record(name) if st.has_search(name) else None
    except StoreError:  # no store there yet: a new search
        return None


def _queueing_strategies() -> list[str]:
    """The strategies ``--prescreen`` can queue networks for."""
    return [n for n in STRATEGIES if n.startswith("optuna:") and n not in NO_QUEUE_STRATEGIES]


def open_search(
    store: Store, config: SearchConfig, strategy: Strategy, skipped_files: int = 0
) -> tuple[optuna.Study, int]:
    """Create the study, or resume it after checking its settings; return it and its done count.

    ``skipped_files``: unreadable files left out of the data, recorded with a new search."""
    record = dataclasses.replace(config.record(), skipped_files=skipped_files)
    if not store.has_search(config.name):
        picks = screen(config)  # before the study exists: slow, and it may fail
        try:
            sampler = _sampler(strategy, config, config.seed)
            study = store.create_study(config.name, record, sampler)
            enqueue_members(study, config.space, config.start_from)  # zoo members first
            enqueue(study, config, picks)
            return study, 0
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it just now
            _wait_for_record(store, config.name)
    old = store.search_record(config.name)
    _check_resume(config.name, old, record)
    # Running trials belong to live workers (this run joins them) unless they are stale.
    # A joining worker's sampler gets a seed of its own: with the search's seed it would
    # propose the very networks the first worker proposes (the data split and the weights
    # still follow the search's seed).
    study_id = store.storage.get_study_id_from_name(config.name)
    sampler = _sampler(strategy, config, joining_seed(config.seed, study_id, store))
    study = store.load_study(config.name, sampler)
    fail_stale(study)
    done = tally(study.get_trials(deepcopy=False)).finished
    records.write_search(study, dataclasses.replace(old, n_trials=max(config.trials, done)))
    return study, done


def _sampler(strategy: Strategy, config: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The strategy's sampler; blind to ``--start-from`` trials where the space has zoo
    members (:class:`~fusion_nas.search.start.BlindSampler`)."""
    sampler = strategy.sampler(config.space, seed)
    if config.space.zoo_members and config.strategy not in NO_QUEUE_STRATEGIES:
        return BlindSampler(sampler)
    return sampler


def screen(config: SearchConfig) -> list[Screened]:
    """The networks ``--prescreen K:M`` queues first (none without it), best first."""
    spec = config.screening
    if spec is None:
        return []
    from fusion_nas.search.prescreen import Budget, prescreen
    from fusion_nas.search.zero_cost import train_batch

    batch = train_batch(
        config.space,
        config.dataset,
        seed=config.seed,
        data_dir=config.data_dir,
        val_fraction=config.proxy.val_fraction,
    )
    budget = Budget(config.max_flops, config.max_params)
    return prescreen(
        config.space,
        spec.k,
        spec.m,
        proxy=spec.proxy,
        batch=batch,
        seed=config.seed,
        budget=budget,
    )


def enqueue(study: optuna.Study, config: SearchConfig, picks: list[Screened]) -> None:
    """Queue the pre-screened networks as the study's next trials, each with its score."""
    from fusion_nas.search.strategies.optuna_strategies import arch_params

    spec = config.screening
    for place, pick in enumerate(picks, start=1):
        assert spec is not None
        note = {"proxy": spec.proxy, "score": pick.score, "place": place, "of": str(spec)}
        records.enqueue_prescreened(study, arch_params(pick.arch, config.space), note)


def joining_seed(seed: int, study_id: int, store: Store) -> int:
    """The sampler seed of a worker that opens an existing search: this process and the
    trials so far mixed into ``seed`` (a resumed search continues, it does not replay)."""
    n = optuna_adapter.count_trials(store.storage, study_id)  # one COUNT, no trials loaded
    return zlib.crc32(f"{seed}:{worker_id()}:{n}".encode()) % 2**31


def _wait_for_record(store: Store, name: str, timeout: float = 10.0) -> None:
    """Wait for the worker that created study ``name`` to store its search record."""
    end = time.monotonic() + timeout
    while not store.has_search(name):
        if time.monotonic() > end:
            raise StoreError(
                f"study {name!r} exists in {redact_url(store.url)} but is not a fusion-nas "
                "search; choose another --name"
            )
        time.sleep(0.2)


def _make_pool(
    workers: int,
    device: str = "auto",
    evaluator: Evaluator | None = None,
    trials_per_device: int | None = None,
) -> Pool:
    """One worker evaluates in this process; more in worker processes, one GPU each
    (round-robin) when ``device`` resolves to CUDA, ``trials_per_device`` on each GPU at least
    (:func:`~fusion_nas.evaluation.make_pool`)."""
    return make_pool(evaluator, workers, device, trials_per_device=trials_per_device)


def _evaluator_pool(
    config: SearchConfig, evaluator: Evaluator | None = None
) -> tuple[Pool, dict[str, Cost]]:
    """What answers the trials (the table of ``table:PATH``, else ``evaluator``, else the
    built-in training) and the costs already known."""
    spec = config.table
    if spec is not None:
        table = load_table(spec.path)
        return make_pool(TableEvaluator(table, spec.seed)), table.costs()
    pool = _make_pool(config.workers, config.device, evaluator, config.trials_per_device)
    return pool, {}


def run_search(
    config: SearchConfig,
    store: Store | None = None,
    *,
    evaluator: Evaluator | None = None,
    data: DataSplits | None = None,
    train_fn: TrainFn | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Run (or resume) a search to ``config.trials`` finished trials; return all its trials.

    What trains each trial: ``evaluator`` (any :class:`~fusion_nas.evaluation.Evaluator`), or
    the built-in trainer on the user's ``data`` (``DataSplits(train, val, test)`` of torch
    datasets), or the user's ``train_fn(model, data, device, report) -> val_acc``; by default
    the built-in trainer on ``config.dataset``. ``config.dataset`` names what the store records.
    ``on_start(done, total)`` is called once the study is open; ``on_progress`` after each trial.
    """
    evaluator = resolve_evaluator(config, evaluator, data, train_fn)
    config = settle_strategy(config, store)
    strategy = prepare(config, evaluator)
    store = store if store is not None else Store()
    study, done = open_search(store, config, strategy, skipped_files(config, evaluator))
    remaining = max(0, config.trials - done)
    if remaining:
        # A resume runs only the trials left: no more workers than those (at least one).
        config = dataclasses.replace(config, workers=cap_workers(config.workers, remaining))
        warn_short_proxy(config, evaluator)
    if on_start is not None:
        on_start(done, config.trials)
    if remaining:
        with terminate_as_interrupt():
            run_trials(
                config,
                study,
                strategy,
                remaining,
                evaluator=evaluator,
                on_progress=on_progress,
                total=config.trials,
            )
    return store.trials(config.name)


def run_trials(
    config: SearchConfig,
    study: optuna.Study,
    strategy: Strategy,
    n_trials: int,
    *,
    evaluator: Evaluator | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    total: int | None = None,
) -> None:
    """Run ``n_trials`` trials of an opened search's ``study`` with a prepared ``strategy``.

    ``run_search`` calls it on a study of the store, with ``total`` the search's trial count
    in the store (shared by every worker; see :meth:`Search.run`); a benchmark may pass a
    study of its own (e.g. Optuna's in-memory storage, with :func:`records.write_search` done)
    to replay many table searches without database writes.
    """
    pool, costs = _evaluator_pool(config, evaluator)
    search = Search(config, study, pool, on_progress, costs)
    try:
        if isinstance(strategy, Driver):
            strategy.run(search, n_trials)
        else:
            assert isinstance(strategy, Proposer)
            search.run(strategy, n_trials, total)
    except BaseException as exc:
        if isinstance(exc, Terminated):
            reason = exc.reason
        elif isinstance(exc, KeyboardInterrupt):
            reason = USER_STOP
        else:
            reason = f"the search stopped: {one_line(exc)}"
        search.interrupt(reason)
        raise
    finally:
        search.close()
        pool.close()
