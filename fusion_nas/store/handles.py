"""Typed handles on a stored search and its trials (in the manner of Optuna's ``Study``).

:meth:`Store.search <fusion_nas.store.store.Store.search>` returns a :class:`StoredSearch`: the
search's name, its store, its :class:`~fusion_nas.store.records.SearchRecord`, and what the
record holds, parsed once per handle: the search space (:attr:`StoredSearch.space`) and the
proxy training settings (:attr:`StoredSearch.proxy`). Its trials come back as
:class:`StoredTrial` (a :class:`~fusion_nas.store.records.TrialRecord` with its
:class:`~fusion_nas.model.arch.Architecture`), so code that exports, retrains, explains or
counts a trial neither reads the store again nor parses the stored dicts itself.

The trials are read from the store on each call (a running search keeps adding them); the
record, space and proxy settings are fixed once the search exists, so a handle keeps them.
Model-layer imports (torch) wait until a space or an architecture is asked for, so listing
searches stays quick.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pandas as pd

from fusion_nas.errors import StoreError
from fusion_nas.store import records
from fusion_nas.store.queries import pick_trial, trials_frame
from fusion_nas.store.records import RetrainRecord, SearchRecord, TrialRecord, TrialStatus

if TYPE_CHECKING:  # the model layer imports torch: only when a space or network is used
    from fusion_nas.model.arch import Architecture
    from fusion_nas.model.space import SearchSpace
    from fusion_nas.store.store import Store
    from fusion_nas.training.loop import ProxyConfig

__all__ = ["StoredSearch", "StoredTrial"]


@dataclass(frozen=True)
class StoredTrial:
    """One trial of a stored search: its record, and its architecture parsed on first use.

    ``record`` holds every stored field (status, accuracy, cost, curve, ...); the properties
    below name the ones callers use most. :attr:`arch` is ``None`` for a trial that has no
    architecture recorded; :meth:`architecture` is the one place that refuses such a trial.
    """

    search: str  # name of the search the trial belongs to
    record: TrialRecord

    @property
    def number(self) -> int:
        """The trial's number in its search."""
        return self.record.number

    @property
    def status(self) -> TrialStatus:
        """Where the trial stands (complete, failed, ...)."""
        return self.record.status

    @property
    def complete(self) -> bool:
        """Whether the trial trained to the end (it has a validation accuracy)."""
        return self.record.status == TrialStatus.COMPLETE

    @cached_property
    def arch(self) -> Architecture | None:
        """The trial's architecture; ``None`` if none is recorded.

        Malformed stored data raises :class:`~fusion_nas.errors.ArchitectureError`.
        """
        if not isinstance(self.record.arch, dict):
            return None
        from fusion_nas.model.arch import Architecture

        return Architecture.from_dict(self.record.arch)

    def architecture(self) -> Architecture:
        """The trial's architecture; :class:`StoreError` if the trial has none recorded."""
        arch = self.arch
        if arch is None:
            raise StoreError(f"trial {self.number} of {self.search!r} has no architecture recorded")
        return arch

    def row(self) -> dict[str, Any]:
        """The trial as a plain dict (status as its string), as a table row shows it."""
        return self.record.as_row()


class StoredSearch:
    """A search in a results store: its record, its parsed space and settings, its trials.

    Made by :meth:`Store.search <fusion_nas.store.store.Store.search>`, which checks that the
    search exists. The space TOML is parsed at most once per handle.
    """

    def __init__(self, store: Store, name: str, study_id: int, record: SearchRecord) -> None:
        self.store = store
        self.name = name
        self.record = record
        self._study_id = study_id

    def __repr__(self) -> str:
        return f"StoredSearch({self.name!r}, space={self.record.space_name!r})"

    # ------------------------------------------------------------------ what the record holds

    @cached_property
    def space(self) -> SearchSpace:
        """The search space the search ran on (its stored TOML, not today's file)."""
        from fusion_nas.model.space import parse_space

        return parse_space(self.record.space_toml, source=f"<space of {self.name}>")

    @cached_property
    def proxy(self) -> ProxyConfig:
        """The proxy training settings the search's trials were scored with."""
        from fusion_nas.training.loop import ProxyConfig

        return ProxyConfig.from_dict(self.record.proxy)  # keys stored before a setting existed

    @property
    def cost_column(self) -> str:
        """The trial column of the second objective: ``macs`` or ``latency_ms``."""
        return self.record.cost_column

    # ------------------------------------------------------------------ trials

    def records(self) -> list[TrialRecord]:
        """The trial records, in trial-number order (read from the store on each call)."""
        return self.store._records(self._study_id)

    def trials(self) -> list[StoredTrial]:
        """The trials, typed, in trial-number order (read from the store on each call)."""
        return [StoredTrial(self.name, rec) for rec in self.records()]

    def frame(self) -> pd.DataFrame:
        """The trials as a table (:func:`~fusion_nas.store.queries.trials_frame`)."""
        return trials_frame(self.records(), self.cost_column)

    def trial(self, number: int) -> StoredTrial:
        """Trial ``number``, read alone (its id by number, then the trial).

        An unknown number names the valid range (:class:`StoreError`).
        """
        storage = self.store.storage
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
            frozen = storage.get_trial(trial_id)
        except KeyError:
            raise StoreError(self._no_trial(number)) from None
        return StoredTrial(self.name, TrialRecord.from_trial(frozen))

    def _no_trial(self, number: int) -> str:
        """The message of an unknown trial number: the search and its valid range."""
        n = self.store.n_trials(self._study_id)
        span = f"0..{n - 1}" if n else "none yet"
        return f"trial {number} does not exist in search {self.name!r}; trials: {span}"

    def trials_after(self, after: int = -1, running: Iterable[int] = ()) -> list[StoredTrial]:
        """Trials numbered above ``after``, plus those of ``running`` (numbers), by number.

        What a page that already holds trials ``0..after`` asks for: the new trials, and the
        current state of the ones it shows as running. Reads only those trials.
        """
        wanted = sorted({int(n) for n in running if int(n) <= after})
        recs = self.store.records_after(self._study_id, after, wanted)
        return [StoredTrial(self.name, rec) for rec in recs]

    def pick(self, trial: int | None = None, pick: str | None = None) -> StoredTrial:
        """Trial ``trial``, or the one the ``pick`` rule chooses (one read of the store).

        Rules as :func:`~fusion_nas.store.queries.pick_trial`: ``knee``, ``best``,
        ``max-flops:X``; exactly one of ``trial`` and ``pick``.
        """
        recs = self.records()
        row = pick_trial(trials_frame(recs, self.cost_column), trial, pick, search=self.name)
        (chosen,) = [rec for rec in recs if rec.number == int(row["number"])]
        return StoredTrial(self.name, chosen)

    # ------------------------------------------------------------------ retrain results

    def retrains(self) -> dict[int, RetrainRecord]:
        """The ``fusion-nas retrain`` results stored with the search, by trial number."""
        return records.study_retrains(self.store.storage, self._study_id)

    def save_retrain(self, record: RetrainRecord) -> None:
        """Store a retrain result with the search (replacing one of the same trial)."""
        records.write_retrain(self.store.load_study(self.name), record)
