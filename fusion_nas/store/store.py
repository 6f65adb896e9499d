"""Results store: Optuna's RDB storage (SQLAlchemy), so ``optuna-dashboard`` opens it as is.

One search = one Optuna study with two objectives (validation accuracy up, MACs down). What is
stored with a study and its trials is defined in :mod:`fusion_nas.store.records`; this module opens
the storage, lists searches and reads them, through the storage's public API only.

Baselines (:mod:`fusion_nas.analysis.baselines`) live beside the searches: one study per space and
dataset, named ``baselines:<space>:<dataset>`` and marked by the study attribute
``fusion_nas_baselines`` instead of ``fusion_nas``, so listings of searches leave it out. Each
baseline is one trial (values: validation accuracy and MACs, as a search's trials) holding its
:class:`~fusion_nas.store.records.BaselineRecord`; storing a baseline again replaces its entry.

Listing searches costs one ``get_all_studies`` call; reading a search's trials costs a constant
number of calls (its id by name, its record, its trials), however many searches the store holds.

Default location: :func:`fusion_nas.settings.default_store_url` (SQLite under
``$FUSION_NAS_HOME``); override with ``--store URL`` or ``$FUSION_NAS_STORE`` (any SQLAlchemy
URL, e.g. ``postgresql://user@host/db``).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd
import sqlalchemy
from optuna.storages import RetryFailedTrialCallback

from fusion_nas import settings
from fusion_nas.errors import SpaceError, StoreError, allowed, one_line
from fusion_nas.settings import redact_url  # re-exported: store callers import it from here
from fusion_nas.store import optuna_adapter, records
from fusion_nas.store.handles import StoredSearch
from fusion_nas.store.queries import (
    SUMMARY_ATTRS,
    SUMMARY_COLUMNS,
    reference_macs,
    search_summary,
    trial_row,
    trials_frame,
)
from fusion_nas.store.records import (
    BaselineRecord,
    BaselineSetRecord,
    SearchRecord,
    TrialRecord,
    TrialStatus,
)

if TYPE_CHECKING:
    from fusion_nas.model.space import SearchSpace

__all__ = ["Store", "StoredSearch", "quiet_optuna", "redact_url", "resolve_url", "space_input"]

_DRIVERS = ("sqlite", "postgresql", "mysql")
SQLITE_BUSY_S = 60  # how long an SQLite writer waits for another before it gives up
SCHEMA_TRIES = 5  # workers starting together on a new database race to create its tables
# what the loser of that race is told (PostgreSQL, SQLite), by table, type or version row
_SCHEMA_RACE = ("already exists", "duplicate key", "UNIQUE constraint failed")


def quiet_optuna() -> None:
    """Keep Optuna's per-trial INFO lines off the console (warnings still show)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def resolve_url(url: str | None = None) -> str:
    """The store URL to use: ``url``, else ``$FUSION_NAS_STORE``, else the SQLite default."""
    url = url or os.environ.get(settings.STORE_ENV) or settings.default_store_url()
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:
        raise StoreError(
            f"invalid store URL {redact_url(url)!r}; expected a SQLAlchemy URL such as "
            f"{settings.default_store_url()!r} or 'postgresql://user@host/db'"
        ) from None
    if parsed.get_backend_name() not in _DRIVERS:
        raise StoreError(
            f"unsupported store URL {redact_url(url)!r}: database "
            f"{parsed.get_backend_name()!r}; allowed: {allowed(_DRIVERS)}"
        )
    return url


def space_input(space: SearchSpace | str) -> tuple[str, int, tuple[int, ...], int] | None:
    """``(kind, channels, size, classes)`` of a search space, or of a stored space's TOML.

    TOML text goes through :func:`~fusion_nas.model.space.parse_space`, the one space parser;
    ``None`` if it does not parse.
    """
    if isinstance(space, str):
        from fusion_nas.model.space import parse_space

        try:
            space = parse_space(space, source="<stored space>")
        except SpaceError:
            return None
    return (space.kind, space.channels, tuple(space.size), space.classes)


def _sqlite_path(url: str) -> Path | None:
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    if path.is_dir():
        raise StoreError(
            f"store path {str(path)!r} is a directory; give a file in it, e.g. "
            f"'sqlite:///{(path / 'fusion_nas.db').as_posix()}'"
        )
    return path


def _begin_immediate(conn: sqlalchemy.engine.Connection) -> None:
    """Start every SQLite transaction with the write lock (``BEGIN IMMEDIATE``).

    Two processes that both read, then both try to write, would otherwise deadlock, and SQLite
    answers ``database is locked`` at once instead of waiting. Taken up front, the lock makes
    a second writer wait (up to ``SQLITE_BUSY_S``) for the first to commit.
    """
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _rdb_storage(url: str, connect: dict[str, Any]) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage of ``url``, with heartbeats; tried again if its schema is racing.

    Heartbeats: a worker's running trials stay alive while it beats; another worker fails a
    trial whose beat is older than the grace period, and the callback queues it once more (a
    retry, linked by ``failed_trial``). Workers that start together on a new database all
    create Optuna's tables; the losers of that race see "already exists" and simply open the
    tables the winner made.
    """
    for attempt in range(SCHEMA_TRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs={"connect_args": connect} if connect else {},
                    heartbeat_interval=settings.heartbeat_interval(),
                    grace_period=settings.grace_period(),
                    heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=1),
                )
        except sqlalchemy.exc.DatabaseError as exc:
            racing = any(m in str(exc) for m in _SCHEMA_RACE)
            if not racing or attempt == SCHEMA_TRIES - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class _Cached:
    """What :class:`Store` keeps of a study between reads (see :meth:`Store.search_frame`)."""

    ident: tuple[str, str]  # search name and creation time: a study id reused is another search
    key: tuple[Any, ...] | None  # trial_stats of the study when read
    records: dict[int, TrialRecord]  # by trial number (narrow ones: summary fields only)
    frame: pd.DataFrame


class Store:
    """A results store: open it once, then list searches, read trials, create/open studies."""

    def __init__(self, url: str | None = None, *, create: bool = True) -> None:
        self.url = resolve_url(url)
        path = _sqlite_path(self.url)
        if path is not None:
            if not create and not path.exists():
                raise StoreError(
                    f"no results store at {str(path)!r}; run 'fusion-nas search' first"
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the store directory {str(path.parent)!r}: {exc}"
                ) from None
        # SQLite: wait for a busy writer instead of failing at once (several workers); the
        # driver's own transaction handling is off so that _begin_immediate starts each one.
        connect = {"timeout": SQLITE_BUSY_S, "isolation_level": None} if path else {}
        self._cache: dict[tuple[int, bool], _Cached] = {}  # by (study id, narrow)
        self._cache_lock = threading.Lock()
        try:
            self.storage = _rdb_storage(self.url, connect)
            if path is not None:
                sqlalchemy.event.listen(self.storage.engine, "begin", _begin_immediate)
        except Exception as exc:  # SQLAlchemy/driver errors: one line, no traceback
            # Neither the URL nor a driver's message may show the password (an import error
            # or a connect error may echo the URL, its password percent-decoded or not).
            detail = one_line(exc, typed=False, lines=1).replace(self.url, redact_url(self.url))
            missing = getattr(exc.__cause__, "name", None)
            if isinstance(exc, ImportError) and missing:  # Optuna wraps the driver's import
                detail = f"its database driver {missing!r} is not installed; install it here"
            try:
                secret = sqlalchemy.engine.make_url(self.url).password
            except Exception:
                secret = None
            typed = self.url.partition("://")[2].rpartition("@")[0].partition(":")[2]
            for word in sorted({str(secret or ""), typed}, key=len, reverse=True):
                if len(word) >= 3:  # shorter ones would blank out ordinary words
                    detail = detail.replace(word, "***")
            raise StoreError(
                f"cannot open the results store {redact_url(self.url)!r}: {detail}"
            ) from None

    @classmethod
    def in_memory(cls, storage: optuna.storages.BaseStorage | None = None) -> Store:
        """A store over ``storage``, any Optuna ``BaseStorage`` (default: a new in-memory one).

        Nothing is written to disk: for tests, notebooks and benchmarks that replay many
        searches. Searches open, resume and list exactly as in a database store; heartbeats
        and several processes on one search need an RDB store.
        """
        store = cls.__new__(cls)
        store.url = "memory://"
        store._cache = {}
        store._cache_lock = threading.Lock()
        store.storage = storage if storage is not None else optuna.storages.InMemoryStorage()
        return store

    # ------------------------------------------------------------------ searches

    def searches(self) -> dict[str, SearchRecord]:
        """Every fusion-nas search in the store and its record, oldest first (one query)."""
        out = {}
        for study in self.storage.get_all_studies():
            record = records.search_record(records.study_attrs(study))
            if record is not None:
                out[study.study_name] = record
        return out

    def search_names(self) -> list[str]:
        """Names of the fusion-nas searches in the store, oldest first."""
        return list(self.searches())

    def _unknown(self, name: str) -> StoreError:
        known = self.search_names()
        hint = f"; known searches: {allowed(known)}" if known else "; the store has no searches"
        return StoreError(f"no search named {name!r} in {redact_url(self.url)}{hint}")

    def _lookup(self, name: str) -> tuple[int, SearchRecord] | None:
        """Study id and record of search ``name``, or ``None`` (no such fusion-nas search)."""
        try:
            study_id = self.storage.get_study_id_from_name(name)
            record = records.search_record(records.study_attrs(self.storage, study_id))
        except KeyError:
            return None
        return None if record is None else (study_id, record)

    def _find(self, name: str) -> tuple[int, SearchRecord]:
        found = self._lookup(name)
        if found is None:
            raise self._unknown(name)
        return found

    def has_search(self, name: str) -> bool:
        """Whether a search called ``name`` exists."""
        return self._lookup(name) is not None

    def search(self, name: str) -> StoredSearch:
        """A handle on search ``name``: its record, parsed space, settings and typed trials."""
        study_id, record = self._find(name)
        return StoredSearch(self, name, study_id, record)

    def search_record(self, name: str) -> SearchRecord:
        """The record of search ``name`` (space TOML, dataset, proxy, strategy, seed, ...)."""
        return self._find(name)[1]

    def create_study(
        self,
        name: str,
        record: SearchRecord,
        sampler: optuna.samplers.BaseSampler | None = None,
    ) -> optuna.Study:
        """Create the study of a new search and store its record in one step."""
        study = optuna.create_study(
            study_name=name,
            storage=self.storage,
            directions=list(records.DIRECTIONS),
            sampler=sampler,
        )
        records.write_search(study, record)
        return study

    def load_study(
        self, name: str, sampler: optuna.samplers.BaseSampler | None = None
    ) -> optuna.Study:
        """The Optuna study of search ``name``; unknown names list the known ones."""
        self._find(name)
        return optuna.load_study(study_name=name, storage=self.storage, sampler=sampler)

    def delete_search(self, name: str) -> None:
        """Remove a search and its trials."""
        self._find(name)
        optuna.delete_study(study_name=name, storage=self.storage)

    # ------------------------------------------------------------------ trials

    def _records(self, study_id: int, *, narrow: bool = False) -> list[TrialRecord]:
        """The records of every trial of ``study_id``, in trial-number order.

        An RDB store is read in a few plain queries (:func:`.optuna_adapter.read_trials`);
        ``narrow`` reads only the attributes a summary shows (:data:`.queries.SUMMARY_ATTRS`),
        and then each complete trial that lacks its accuracy or cost is read whole, so its
        status is the one a full read gives.
        """
        keys = SUMMARY_ATTRS if narrow else None
        trials = optuna_adapter.read_trials(
            self.storage, study_id, user_keys=keys, system_attrs=not narrow
        )
        if trials is None:  # not an RDB storage
            trials = self.storage.get_all_trials(study_id, deepcopy=False)
        recs = [TrialRecord.from_trial(t) for t in trials]
        return self._whole(study_id, recs) if narrow else recs

    def _whole(self, study_id: int, recs: list[TrialRecord]) -> list[TrialRecord]:
        """Narrow ``recs`` with each complete one that lacks its accuracy or MACs read whole."""
        suspect = [
            r.number
            for r in recs
            if r.status == TrialStatus.COMPLETE and (r.val_acc is None or r.macs is None)
        ]
        if not suspect:
            return recs
        last = max(r.number for r in recs)
        whole = {r.number: r for r in self.records_after(study_id, last, suspect)}
        return [whole.get(r.number, r) for r in recs]

    def records(self, name: str) -> list[TrialRecord]:
        """The trial records of search ``name``, in trial-number order."""
        return self._records(self._find(name)[0])

    def records_after(
        self, study_id: int, after: int, numbers: Iterable[int] = ()
    ) -> list[TrialRecord]:
        """Records of ``study_id``'s trials numbered above ``after`` or in ``numbers``.

        In trial-number order. Reads only those trials (a few queries), however many the
        study holds.
        """
        numbers = list(numbers)
        trials = optuna_adapter.read_trials(self.storage, study_id, after=after, numbers=numbers)
        if trials is None:  # not an RDB storage: filter every trial
            keep = {int(n) for n in numbers}
            return [r for r in self._records(study_id) if r.number > after or r.number in keep]
        return [TrialRecord.from_trial(t) for t in trials]

    def n_trials(self, study_id: int) -> int:
        """How many trials study ``study_id`` holds, every state counted (one query)."""
        stats = optuna_adapter.trial_stats(self.storage)
        if stats is None:
            return len(self.storage.get_all_trials(study_id, deepcopy=False))
        return sum(count for _, count, *_ in stats.get(study_id, ()))

    def _cached(
        self,
        name: str,
        study_id: int,
        record: SearchRecord,
        key: tuple[Any, ...] | None,
        *,
        narrow: bool = False,
    ) -> _Cached:
        """The records and table of a study, read again only where they may have changed.

        ``key`` (:func:`~fusion_nas.store.optuna_adapter.trial_stats` of the study) unchanged:
        the cached table as it is. Changed: only the trials numbered above the last one read
        and those that were running are read again (a finished Optuna trial never changes).
        ``narrow``: the summary's table (:meth:`_records`), cached apart from the full one.
        """
        ident = (name, record.created)
        with self._cache_lock:
            entry = self._cache.get((study_id, narrow))
            if entry is not None and entry.ident != ident:
                entry = None
            if entry is not None and key is not None and entry.key == key:
                return entry
            if entry is None or key is None:
                recs = {r.number: r for r in self._records(study_id, narrow=narrow)}
            else:
                recs = dict(entry.records)
                last = max(recs, default=-1)
                running = [n for n, r in recs.items() if r.status == TrialStatus.RUNNING]
                for rec in self.records_after(study_id, last, running):
                    recs[rec.number] = rec
            ordered = [recs[n] for n in sorted(recs)]
            entry = _Cached(ident, key, recs, trials_frame(ordered, record.cost_column))
            if key is not None:
                self._cache[(study_id, narrow)] = entry
            return entry

    def search_frame(self, search: StoredSearch) -> pd.DataFrame:
        """The trials table of a search handle (as :meth:`StoredSearch.frame`), cached.

        Only trials added or running since the last call are read from the store.
        """
        stats = optuna_adapter.trial_stats(self.storage)
        key = None if stats is None else stats.get(search._study_id, ())
        return self._cached(search.name, search._study_id, search.record, key).frame.copy()

    def trials(self, name: str) -> pd.DataFrame:
        """All trials of search ``name``, one row each (see :func:`.results.trials_frame`)."""
        study_id, record = self._find(name)
        return trials_frame(self._records(study_id), record.cost_column)

    def trial(self, name: str, number: int) -> dict[str, Any]:
        """One trial of search ``name`` as a dict; unknown numbers name the valid range.

        Reads that trial alone, and for a complete trial the objective values of the other
        complete ones (:meth:`on_front`), never every trial's attributes.
        """
        search = self.search(name)
        rec = search.trial(number).record
        row = trial_row(trials_frame([rec], search.cost_column), number, search=name)
        row["on_front"] = self.on_front(search, rec)
        return row

    def on_front(self, search: StoredSearch, rec: TrialRecord) -> bool:
        """Whether trial ``rec`` of ``search`` is on its Pareto front (accuracy up, cost down).

        Asked of the database (:func:`.optuna_adapter.dominated`: one query over the COMPLETE
        trials' objective values that stops at the first trial dominating this one) rather
        than by reading every trial. Over-budget
        trials are stored with accuracy 0, so they never dominate a trained one.
        """
        cost = getattr(rec, search.cost_column, None)
        if rec.status != TrialStatus.COMPLETE or rec.val_acc is None or cost is None:
            return False
        acc, own = float(rec.val_acc), float(cost)
        dominated = optuna_adapter.dominated(self.storage, search._study_id, rec.number, acc, own)
        if dominated is None:  # not an RDB storage: the search's table knows
            df = self.search_frame(search)
            return bool(df.loc[df.number == rec.number, "on_front"].any())
        return not dominated

    def summaries(self, ref_macs: float | None = None) -> list[dict[str, Any]]:
        """:func:`~fusion_nas.store.queries.search_summary` of every search, oldest first.

        Hypervolumes share one reference point (``ref_macs``, default
        :func:`~fusion_nas.store.queries.reference_macs` over every listed search) so rows compare.
        A search deleted while it is being read is left out. Only what a summary shows is
        read of each trial (its status, accuracy and cost: :data:`.queries.SUMMARY_ATTRS`), and
        again only where it changed since the last call: a listing of unchanged searches costs
        two queries, not a read of every trial.
        """
        stats = optuna_adapter.trial_stats(self.storage)
        frames: dict[str, tuple[SearchRecord, pd.DataFrame]] = {}
        for name, record in self.searches().items():
            try:
                study_id = self.storage.get_study_id_from_name(name)
                key = None if stats is None else stats.get(study_id, ())
                full = self._cache.get((study_id, False))
                if full is not None and key is not None and full.key == key:
                    frame = full.frame  # the whole table is at hand and current
                else:
                    frame = self._cached(name, study_id, record, key, narrow=True).frame
                frames[name] = (record, frame)
            except KeyError:  # deleted since it was listed
                continue
        ref = ref_macs if ref_macs is not None else reference_macs(df for _, df in frames.values())
        return [search_summary(name, rec, df, ref) for name, (rec, df) in frames.items()]

    def summary(self, ref_macs: float | None = None) -> pd.DataFrame:
        """One row per search (columns :data:`.results.SUMMARY_COLUMNS`); see :meth:`summaries`."""
        return pd.DataFrame(self.summaries(ref_macs), columns=list(SUMMARY_COLUMNS))

    # ------------------------------------------------------------------ baselines

    def baseline_sets(self) -> dict[str, BaselineSetRecord]:
        """Every baseline collection in the store and its record, oldest first (one query)."""
        out = {}
        for study in self.storage.get_all_studies():
            record = records.baseline_set_record(records.study_attrs(study))
            if record is not None:
                out[study.study_name] = record
        return out

    def _baseline_list(self, study_id: int) -> list[BaselineRecord]:
        """The baselines of a collection, one per name (the latest), in stored order."""
        latest: dict[str, BaselineRecord] = {}
        for t in self.storage.get_all_trials(study_id, deepcopy=False):
            rec = records.read_baseline(t)
            if rec is not None and (
                rec.name not in latest or rec.created >= latest[rec.name].created
            ):
                latest[rec.name] = rec
        return list(latest.values())

    def baselines(self, collection: str) -> list[BaselineRecord]:
        """The baselines stored in collection ``collection`` (``baselines:<space>:<dataset>``)."""
        try:
            study_id = self.storage.get_study_id_from_name(collection)
            record = records.baseline_set_record(records.study_attrs(self.storage, study_id))
        except KeyError:
            record = None
        if record is None:
            known = list(self.baseline_sets())
            hint = f"; known: {allowed(known)}" if known else "; the store has none"
            raise StoreError(f"no baseline collection named {collection!r}{hint}")
        return self._baseline_list(study_id)

    def save_baseline(self, collection: BaselineSetRecord, record: BaselineRecord) -> str:
        """Store ``record`` in the collection of its space and dataset; return the study name.

        An earlier entry of the same name is replaced (the collection is rewritten: finished
        Optuna trials cannot be changed), so each name is stored once. One writer per
        collection at a time.
        """
        name = records.collection_name(collection.space_name, collection.dataset)
        kept: list[BaselineRecord] = []
        try:
            study_id = self.storage.get_study_id_from_name(name)
        except KeyError:
            study_id = None
        if study_id is not None:
            if records.baseline_set_record(records.study_attrs(self.storage, study_id)) is None:
                raise StoreError(
                    f"study {name!r} in {redact_url(self.url)} is not a baseline collection; "
                    "it is left as it is"
                )
            kept = self._baseline_list(study_id)
        entries = [record if r.name == record.name else r for r in kept]
        if record.name not in {r.name for r in kept}:
            entries.append(record)
        if study_id is not None:
            optuna.delete_study(study_name=name, storage=self.storage)
        study = optuna.create_study(
            study_name=name, storage=self.storage, directions=list(records.DIRECTIONS)
        )
        records.write_baseline_set(study, collection)
        study.add_trials([records.baseline_trial(r) for r in entries])
        return name

    def baselines_for(
        self, search: SearchRecord | StoredSearch
    ) -> list[tuple[str, BaselineRecord]]:
        """The stored baselines a search compares with (same dataset and input), labelled.

        Collections of the search's own space come first, labelled by the baseline's name; a
        toolkit design of another space is labelled ``name [space]``. A label already taken
        by an earlier collection is left out (the paper networks are the same in every space
        of one input). A handle's space is the one it parsed already.
        """
        if isinstance(search, StoredSearch):
            try:
                key = space_input(search.space)
            except SpaceError:
                key = None
            search = search.record
        else:
            key = space_input(search.space_toml)
        if key is None:
            return []
        sets = [
            (name, rec)
            for name, rec in self.baseline_sets().items()
            if rec.dataset == search.dataset and rec.input_key() == key
        ]
        sets.sort(key=lambda item: item[1].space_name != search.space_name)  # stable
        out: list[tuple[str, BaselineRecord]] = []
        for name, rec in sets:
            try:
                entries = self._baseline_list(self.storage.get_study_id_from_name(name))
            except KeyError:  # deleted since it was listed
                continue
            own = rec.space_name == search.space_name
            for entry in entries:
                label = (
                    entry.name if own or entry.arch is None else f"{entry.name} [{rec.space_name}]"
                )
                if label not in {taken for taken, _ in out}:
                    out.append((label, entry))
        return out
