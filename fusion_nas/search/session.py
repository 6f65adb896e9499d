"""Open a search and run it: check the input, create or resume the study, pick the evaluator.

``run_search`` checks the space, dataset, strategy and budgets *before* it writes anything,
so bad input leaves the store untouched. Then a :class:`~fusion_nas.search.loop.Search` runs
the trials.

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
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna
import pandas as pd

from fusion_nas.errors import StoreError, StrategyError, one_line
from fusion_nas.evaluation.table import TablePool, load_table
from fusion_nas.evaluation.trainer import InlinePool, Pool, ProcessPool, dataset_for
from fusion_nas.model.cost import Cost
from fusion_nas.search.config import SearchConfig, _check_resume
from fusion_nas.search.loop import Progress, Search
from fusion_nas.search.signals import USER_STOP, Terminated, terminate_as_interrupt
from fusion_nas.search.strategies import STRATEGIES, Driver, Proposer, Strategy, make_strategy
from fusion_nas.search.workers import fail_stale, tally, worker_id
from fusion_nas.store import records
from fusion_nas.store.store import Store, redact_url
from fusion_nas.training.devices import worker_devices

if TYPE_CHECKING:  # the pre-screen (zero-cost proxies) is imported only when used
    from fusion_nas.search.prescreen import Screened


def prepare(config: SearchConfig) -> Strategy:
    """Validate dataset, strategy and evaluator for ``config`` without touching any store."""
    strategy = make_strategy(config.strategy, **config.strategy_options)
    strategy.check(config.space)
    if config.screening is not None and not isinstance(strategy, Proposer):
        raise StrategyError(
            f"--prescreen needs a strategy that proposes through Optuna, not {config.strategy!r}; "
            f"allowed: {', '.join(n for n in STRATEGIES if n.startswith('optuna:'))}"
        )
    p = config.proxy
    table = config.table
    if table is not None:  # nothing is trained: the table must answer every network
        load_table(table.path).check(config.space, config.dataset, p, table.seed)
        return strategy
    worker_devices(config.device, config.workers)  # a device this machine lacks: refused now
    dataset_for(
        config.dataset,
        config.space.source,
        config.data_dir,
        p.val_fraction,
        config.seed,
        p.train_subset,
    )
    return strategy


def open_search(store: Store, config: SearchConfig, strategy: Strategy) -> tuple[optuna.Study, int]:
    """Create the study, or resume it after checking its settings; return it and its done count."""
    record = config.record()
    if not store.has_search(config.name):
        picks = screen(config)  # before the study exists: slow, and it may fail
        try:
            sampler = strategy.sampler(config.space, config.seed)
            study = store.create_study(config.name, record, sampler)
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
    sampler = strategy.sampler(config.space, joining_seed(config.seed, study_id, store))
    study = store.load_study(config.name, sampler)
    fail_stale(study)
    done = tally(study.get_trials(deepcopy=False)).finished
    records.write_search(study, dataclasses.replace(old, n_trials=max(config.trials, done)))
    return study, done


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
    n = len(store.storage.get_all_trials(study_id, deepcopy=False))
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


def _make_pool(workers: int, device: str = "auto") -> Pool:
    """One worker trains in this process; more train in worker processes, one GPU each
    (round-robin) when ``device`` resolves to CUDA."""
    devices = worker_devices(device, workers)
    return ProcessPool(workers, devices=devices) if workers > 1 else InlinePool(devices[0])


def _evaluator_pool(config: SearchConfig) -> tuple[Pool, dict[str, Cost]]:
    """What answers the trials (the table of ``table:PATH``, else training) and known costs."""
    spec = config.table
    if spec is not None:
        table = load_table(spec.path)
        return TablePool(table, spec.seed), table.costs()
    return _make_pool(config.workers, config.device), {}


def run_search(
    config: SearchConfig,
    store: Store | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Run (or resume) a search to ``config.trials`` finished trials; return all its trials.

    ``on_start(done, total)`` is called once the study is open; ``on_progress`` after each trial.
    """
    strategy = prepare(config)
    store = store if store is not None else Store()
    study, done = open_search(store, config, strategy)
    remaining = max(0, config.trials - done)
    if on_start is not None:
        on_start(done, config.trials)
    if remaining:
        with terminate_as_interrupt():
            run_trials(
                config, study, strategy, remaining, on_progress=on_progress, total=config.trials
            )
    return store.trials(config.name)


def run_trials(
    config: SearchConfig,
    study: optuna.Study,
    strategy: Strategy,
    n_trials: int,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    total: int | None = None,
) -> None:
    """Run ``n_trials`` trials of an opened search's ``study`` with a prepared ``strategy``.

    ``run_search`` calls it on a study of the store, with ``total`` the search's trial count
    in the store (shared by every worker; see :meth:`Search.run`); a benchmark may pass a
    study of its own (e.g. Optuna's in-memory storage, with :func:`records.write_search` done)
    to replay many table searches without database writes.
    """
    pool, costs = _evaluator_pool(config)
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
