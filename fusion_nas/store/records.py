"""Typed records of searches and trials: the only module that reads or writes Optuna attributes.

A search is one Optuna study; its record (:class:`SearchRecord`) is the study's user attribute
``fusion_nas``. A trial's fields (:class:`TrialRecord`) are the trial's user attributes plus
Optuna's own state and times. A baseline collection is a study of its own, named
``baselines:<space>:<dataset>`` and marked by the attribute ``fusion_nas_baselines``
(:class:`BaselineSetRecord`) instead of ``fusion_nas``; each of its trials holds one
:class:`BaselineRecord` in the attribute ``fusion_nas_baseline``. Everything else in
fusion-nas goes through the functions below, so attribute names and status strings have one
home.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from fusion_nas.store import optuna_adapter

SEARCH_KEY = "fusion_nas"  # study user attribute holding the search record
RETRAIN_PREFIX = "retrain:"  # study user attributes holding retrain results, one per trial
OBJECTIVES = ("val_acc (maximize)", "macs (minimize)")
LATENCY_OBJECTIVES = ("val_acc (maximize)", "latency_ms (minimize)")
DIRECTIONS = ("maximize", "minimize")  # Optuna directions of (validation accuracy, MACs)


class TrialStatus(str, Enum):
    """Where a trial stands. ``str`` values are what tables, CSV and JSON show."""

    COMPLETE = "complete"  # trained; has a validation accuracy
    FAILED = "failed"  # NaN loss, exception or timeout; has a reason
    INFEASIBLE = "infeasible"  # over a budget, never trained
    INTERRUPTED = "interrupted"  # cut short by Ctrl-C or a process that ended
    STOPPED = "stopped"  # stopped early by successive halving; has its rung accuracies
    RUNNING = "running"

    @property
    def finished(self) -> bool:
        """Whether the trial counts towards the search's trial count."""
        return self in (
            TrialStatus.COMPLETE,
            TrialStatus.FAILED,
            TrialStatus.INFEASIBLE,
            TrialStatus.STOPPED,
        )

    def __str__(self) -> str:
        return self.value


def _known_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The items of ``data`` that are fields of dataclass ``cls`` (newer keys are dropped)."""
    known = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in known}


@dataclass(frozen=True)
class SearchRecord:
    """What defines a search, stored once with its study."""

    space_name: str
    space_toml: str
    dataset: str
    proxy: dict[str, Any]
    strategy: str
    seed: int
    n_trials: int
    data_dir: str | None = None
    strategy_options: dict[str, Any] = field(default_factory=dict)
    max_flops: int | None = None
    max_params: int | None = None
    trial_timeout: float | None = None
    workers: int = 1
    version: str = ""
    objectives: tuple[str, ...] = OBJECTIVES
    evaluator: str = "train"  # "train", or "table:PATH[@SEED]": trials looked up in a table
    fidelity: str = "full"  # or successive halving, "sh:1,3,10/3" (fusion_nas.search.fidelity)
    prescreen: str | None = None  # "K:M:PROXY": the first M trials were pre-screened
    max_latency_ms: float | None = None  # --max-latency-ms
    skipped_files: int = 0  # unreadable files left out of the dataset (a folder's corrupt images)

    @property
    def cost_column(self) -> str:
        """The trial column of the second objective: ``macs`` or ``latency_ms``."""
        return "latency_ms" if self.objectives[1:2] == LATENCY_OBJECTIVES[1:2] else "macs"

    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )

    def to_attr(self) -> dict[str, Any]:
        """The JSON-able dict stored as the study's ``fusion_nas`` attribute."""
        out = asdict(self)
        out["objectives"] = list(self.objectives)
        return out

    @classmethod
    def from_attr(cls, data: Mapping[str, Any]) -> SearchRecord:
        """Inverse of :meth:`to_attr`; keys this version does not know are ignored."""
        values = _known_fields(cls, data)
        if "objectives" in values:
            values["objectives"] = tuple(values["objectives"])
        return cls(**values)


# Fields a search record must have, with their types: a record without them is unusable.
_SEARCH_TYPES = {
    "space_name": str,
    "space_toml": str,
    "dataset": str,
    "proxy": Mapping,
    "strategy": str,
    "seed": int,
    "n_trials": int,
}


def study_attrs(study: Any, study_id: int | None = None) -> Mapping[str, Any]:
    """The user attributes of a study: of a ``StudySummary``/``FrozenStudy``/``Study`` when
    ``study_id`` is ``None``, else of study ``study_id`` in the storage ``study``."""
    if study_id is None:
        return study.user_attrs
    return study.get_study_user_attrs(study_id)


def search_record(user_attrs: Mapping[str, Any]) -> SearchRecord | None:
    """The search record in a study's user attributes; ``None`` for a foreign study, or for a
    record that lacks a field or holds one of the wrong type (a damaged store lists the
    other searches instead of failing on it)."""
    data = user_attrs.get(SEARCH_KEY)
    if not isinstance(data, Mapping):
        return None
    for name, kind in _SEARCH_TYPES.items():
        value = data.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return None
    try:
        return SearchRecord.from_attr(data)
    except (TypeError, ValueError):
        return None


def write_search(study: optuna.Study, record: SearchRecord) -> None:
    """Store (or replace) the search record of ``study``."""
    study.set_user_attr(SEARCH_KEY, record.to_attr())


# Set by optuna.storages.RetryFailedTrialCallback on the trial that re-runs a lost one.
RETRY_OF_KEY = "failed_trial"
PRESCREEN_KEY = "prescreen"  # trial user attribute: why --prescreen queued it (proxy, score)
# trial user attribute: the zoo member --start-from queued (member, place, of); such a trial has
# no stage parameters, and the samplers do not see it (fusion_nas.search.start)
START_KEY = "start_from"
RETRY_HISTORY_KEY = "retry_history"  # the numbers of every lost attempt before the retry
LOST_WORKER = "worker lost: no heartbeat within the grace period (process killed or machine gone)"
WORKER_KEY = "worker"  # trial user attribute: host:pid of the process that asked it


def trial_worker(t: FrozenTrial) -> str | None:
    """``host:pid`` of the worker that asked ``t``; ``None`` if asked outside a search loop."""
    return t.user_attrs.get(WORKER_KEY)


def write_worker(trial: optuna.Trial, worker: str, *, heartbeat: bool = False) -> None:
    """Record on ``trial`` the worker (``host:pid``) that asked it; with ``heartbeat``, its
    first heartbeat too, in the same transaction (an RDB store)."""
    optuna_adapter.write_attrs(trial, {WORKER_KEY: worker}, heartbeat=heartbeat)


def retry_of(t: FrozenTrial) -> int | None:
    """The number of the lost trial that ``t`` runs again, or ``None`` if it is no retry."""
    number = t.system_attrs.get(RETRY_OF_KEY)
    return number if isinstance(number, int) else None


def retry_history(t: FrozenTrial) -> list[int]:
    """The numbers of every lost attempt that the retry ``t`` runs again (none: ``[]``)."""
    return list(t.system_attrs.get(RETRY_HISTORY_KEY) or [])


def proposed_arch(t: FrozenTrial) -> dict[str, Any] | None:
    """The architecture dict recorded on ``t`` when it was proposed, or ``None``."""
    arch = t.user_attrs.get("arch")
    return arch if isinstance(arch, dict) else None


def trial_arch_id(t: FrozenTrial) -> str | None:
    """The ``arch_id`` recorded on ``t`` (``None`` before it was proposed)."""
    return t.user_attrs.get("arch_id")


def trial_val_acc(t: FrozenTrial) -> float | None:
    """The validation accuracy recorded on ``t``, as stored (``None``: none recorded)."""
    return t.user_attrs.get("val_acc")


def trial_macs(t: FrozenTrial) -> Any:
    """The MACs recorded on ``t``, as stored (callers check the type)."""
    return t.user_attrs.get("macs")


def trial_duplicate_of(t: FrozenTrial) -> Any:
    """The trial whose result ``t`` repeats, as stored (``None``: ``t`` is no duplicate)."""
    return t.user_attrs.get("duplicate_of")


def rung_history(t: FrozenTrial) -> list[Any]:
    """The ``[epochs, val_acc]`` pairs of the rungs ``t`` reached, as stored (none: ``[]``)."""
    return t.user_attrs.get("rungs") or []


def write_rungs(trial: optuna.Trial, rungs: list[tuple[int, float]]) -> None:
    """Record the rungs ``trial`` reached so far, as ``[[epochs, val_acc], ...]``."""
    optuna_adapter.write_attrs(trial, {"rungs": [[e, a] for e, a in rungs]})


def enqueue_prescreened(
    study: optuna.Study, params: Mapping[str, Any], note: Mapping[str, Any]
) -> None:
    """Queue a pre-screened network's ``params`` as a trial of ``study``, with why (``note``)."""
    study.enqueue_trial(dict(params), user_attrs={PRESCREEN_KEY: dict(note)})


def enqueue_member(study: optuna.Study, note: Mapping[str, Any]) -> None:
    """Queue a zoo member of the space as a trial of ``study`` (``note``: member, place, of)."""
    study.enqueue_trial({}, user_attrs={START_KEY: dict(note)})


def start_note(t: FrozenTrial) -> dict[str, Any] | None:
    """The ``--start-from`` note of a trial (``{"member": ..., "place": ..., "of": ...}``)."""
    note = t.user_attrs.get(START_KEY)
    return note if isinstance(note, dict) and isinstance(note.get("member"), str) else None


# What each trial attribute must hold; a value of another type (a hand-edited or foreign
# store) is dropped and the trial flagged, so one bad trial cannot break a whole listing.
_NUMBER = (int, float)
_ATTR_TYPES: dict[str, tuple[type, ...]] = {
    "val_acc": _NUMBER,
    "macs": _NUMBER,
    "params": _NUMBER,
    "arch_id": (str,),
    "arch": (dict,),
    "arch_desc": (str,),
    "curve": (list,),
    "train_seconds": _NUMBER,
    "threads": (int,),
    "device": (str,),
    "peak_memory": (int,),
    "fail_reason": (str,),
    "duplicate_of": (int,),
    "rungs": (list,),
    PRESCREEN_KEY: (dict,),
    START_KEY: (dict,),
    "latency_ms": _NUMBER,
    "latency": (dict,),
}


def _well_typed(key: str, value: Any) -> bool:
    types = _ATTR_TYPES.get(key)
    if types is None or value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, types):
        return False
    if key == "curve":
        return all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in value)
    if key == "rungs":  # [[epochs, val_acc], ...]
        return all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, _NUMBER) for x in v)
            for v in value
        )
    return True


def _checked_attrs(user_attrs: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A trial's attributes without the values of the wrong type, and a note naming those."""
    bad = {k: v for k, v in user_attrs.items() if not _well_typed(k, v)}
    if not bad:
        return dict(user_attrs), None
    shown = ", ".join(f"{k}={v!r}"[:60] for k, v in bad.items())
    ok = {k: v for k, v in user_attrs.items() if k not in bad}
    return ok, f"malformed record, ignored: {shown}"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as fusion-nas sees it."""

    number: int
    status: TrialStatus
    val_acc: float | None = None
    macs: int | None = None
    params: int | None = None
    arch_id: str | None = None
    arch: dict[str, Any] | None = None
    arch_desc: str | None = None
    curve: list[float] = field(default_factory=list)
    train_seconds: float | None = None
    threads: int | None = None
    device: str | None = None  # where it trained: "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)", ...
    peak_memory: int | None = None  # bytes allocated at most on the GPU it trained on
    fail_reason: str | None = None
    duplicate_of: int | None = None
    retry_of: int | None = None  # the trial whose worker was lost; this one runs it again
    # Successive halving: (epochs, validation accuracy) at every rung the trial reached.
    rungs: list[tuple[int, float]] = field(default_factory=list)
    prescreen: dict[str, Any] | None = None  # queued by --prescreen: proxy, score, place, of
    latency_ms: float | None = None  # median batch-1 eager latency on the search's machine
    latency: dict[str, Any] | None = None  # backend -> fusion_nas.deploy.latency.LatencyRecord dict
    start_from: dict[str, Any] | None = None  # queued by --start-from: member, place, of
    datetime_start: dt.datetime | None = None
    datetime_complete: dt.datetime | None = None

    @classmethod
    def from_trial(cls, t: FrozenTrial) -> TrialRecord:
        """The record of an Optuna trial of a fusion-nas study."""
        ua, malformed = _checked_attrs(t.user_attrs)
        status = trial_status(t)
        if (
            malformed
            and status == TrialStatus.COMPLETE
            and ("val_acc" not in ua or "macs" not in ua)
        ):
            status = TrialStatus.FAILED  # no point to draw: listed as failed, with the note
        reason = ua.get("fail_reason")
        if malformed:
            reason = f"{reason}; {malformed}" if reason else malformed
        if status == TrialStatus.FAILED and not reason and ua.get("status") == "running":
            reason = LOST_WORKER  # failed by another worker's heartbeat check
        if status in (TrialStatus.FAILED, TrialStatus.INTERRUPTED) and not reason:
            reason = f"trial ended in state {t.state.name}"
        return cls(
            number=t.number,
            status=status,
            val_acc=ua.get("val_acc") if status == TrialStatus.COMPLETE else None,
            macs=ua.get("macs"),
            params=ua.get("params"),
            arch_id=ua.get("arch_id"),
            arch=ua.get("arch"),
            arch_desc=ua.get("arch_desc"),
            curve=list(ua.get("curve") or []),
            train_seconds=ua.get("train_seconds"),
            threads=ua.get("threads"),
            device=ua.get("device"),
            peak_memory=ua.get("peak_memory"),
            fail_reason=reason,
            duplicate_of=ua.get("duplicate_of"),
            retry_of=retry_of(t),
            rungs=[(int(e), float(a)) for e, a in ua.get("rungs") or []],
            prescreen=ua.get(PRESCREEN_KEY),
            latency_ms=ua.get("latency_ms"),
            latency=ua.get("latency"),
            start_from=ua.get(START_KEY),
            datetime_start=t.datetime_start,
            datetime_complete=t.datetime_complete,
        )

    def as_row(self) -> dict[str, Any]:
        """Plain dict (status as its string), one table row."""
        row = asdict(self)
        row["status"] = self.status.value
        return row


TRIAL_FIELDS = tuple(f.name for f in fields(TrialRecord))


def trial_status(t: FrozenTrial) -> TrialStatus:
    """fusion-nas status of an Optuna trial."""
    if t.state in (TrialState.RUNNING, TrialState.WAITING):
        return TrialStatus.RUNNING
    stored = t.user_attrs.get("status")
    if t.state == TrialState.COMPLETE:
        return TrialStatus.INFEASIBLE if stored == TrialStatus.INFEASIBLE else TrialStatus.COMPLETE
    if t.state == TrialState.PRUNED:
        return TrialStatus.STOPPED
    if stored == TrialStatus.INTERRUPTED:
        return TrialStatus.INTERRUPTED
    return TrialStatus.FAILED


# --------------------------------------------------------------------------- writers


def proposal_attrs(
    arch: Mapping[str, Any],
    arch_id: str,
    desc: str,
    macs: int,
    params: int,
    *,
    worker: str | None = None,
) -> dict[str, Any]:
    """The user attributes that record a proposal (see :func:`write_proposal`); also what
    ``optuna.trial.create_trial(user_attrs=...)`` takes to build a trial without asking one."""
    attrs = {
        "arch": dict(arch),
        "arch_id": arch_id,
        "arch_desc": desc,
        "macs": int(macs),
        "params": int(params),
        "status": TrialStatus.RUNNING.value,
    }
    if worker is not None:
        attrs[WORKER_KEY] = worker
    return attrs


def write_proposal(
    trial: optuna.Trial,
    arch: Mapping[str, Any],
    arch_id: str,
    desc: str,
    macs: int,
    params: int,
    *,
    worker: str | None = None,
    constraints: Mapping[str, float] | None = None,
) -> None:
    """A trial has its architecture and cost and is about to be trained (or recorded).

    One transaction: the fields, the ``worker`` that asked it and its Optuna constraints
    (``name -> value``, <= 0 feasible; NSGA-II and TPE rank a violating trial infeasible).
    """
    attrs = proposal_attrs(arch, arch_id, desc, macs, params, worker=worker)
    optuna_adapter.write_attrs(trial, attrs, constraints)


def result_attrs(
    status: TrialStatus,
    *,
    val_acc: float | None = None,
    curve: list[float] | None = None,
    train_seconds: float | None = None,
    threads: int | None = None,
    device: str | None = None,
    fail_reason: str | None = None,
    duplicate_of: int | None = None,
    rungs: list[tuple[int, float]] | None = None,
    peak_memory: int | None = None,
) -> dict[str, Any]:
    """The user attributes that record a trial's outcome (see :func:`write_result`); ``None``
    fields are left out."""
    values = {
        "val_acc": val_acc,
        "curve": curve,
        "train_seconds": train_seconds,
        "threads": threads,
        "device": device,
        "peak_memory": peak_memory,
        "fail_reason": fail_reason,
        "duplicate_of": duplicate_of,
        "rungs": [[int(e), float(a)] for e, a in rungs] if rungs is not None else None,
    }
    attrs = {k: v for k, v in values.items() if v is not None}
    attrs["status"] = TrialStatus(status).value
    return attrs


def write_result(trial: optuna.Trial, status: TrialStatus, **fields: Any) -> None:
    """A trial's outcome (:func:`result_attrs` of ``status`` and ``fields``), in one
    transaction, before it is told to the study."""
    optuna_adapter.write_attrs(trial, result_attrs(status, **fields))


def objectives_for(objective: str) -> tuple[str, ...]:
    """The stored objectives of a search whose second objective is ``macs`` or ``latency``."""
    return LATENCY_OBJECTIVES if objective == "latency" else OBJECTIVES


def latency_ms(measured: Mapping[str, Any]) -> float:
    """Median batch-1 milliseconds of the eager record in ``measured`` (backend -> record)."""
    points = measured["eager"]["points"]
    return float(next(p for p in points if p["batch"] == 1)["median_ms"])


def write_latency(
    trial: optuna.Trial, measured: Mapping[str, Any], constraints: Mapping[str, float] | None = None
) -> None:
    """A trial's measured latencies (backend -> LatencyRecord dict), its batch-1 median and
    any latency constraints, in one transaction."""
    attrs = {"latency": dict(measured), "latency_ms": latency_ms(measured)}
    optuna_adapter.write_attrs(trial, attrs, constraints)


def mark_interrupted(
    storage: optuna.storages.BaseStorage, study_name: str, number: int, reason: str
) -> None:
    """Record a RUNNING trial as interrupted and end it (Optuna state FAIL), by public API."""
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    attrs = {"status": TrialStatus.INTERRUPTED.value, "fail_reason": reason}
    optuna_adapter.set_attrs(storage, trial_id, attrs)  # one transaction
    storage.set_trial_state_values(trial_id, TrialState.FAIL)


# --------------------------------------------------------------------------- retraining


@dataclass(frozen=True)
class RetrainRecord:
    """One final retraining of a trial (test accuracy), kept as JSON and with the search."""

    search: str
    trial: int
    arch_id: str
    arch: dict[str, Any]
    arch_desc: str
    macs: int
    params: int
    proxy_val_acc: float | None
    epochs: int
    train_samples: int
    test_samples: int
    test_acc: float
    seconds: float
    created: str
    files: dict[str, str]
    # The final schedule's settings (None in records written before they were stored).
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    device: str | None = None  # where it trained ("cpu", "cuda:0 (NVIDIA ...)"); None: older

    def to_attr(self) -> dict[str, Any]:
        """The JSON-able dict stored as the study's ``retrain:N`` attribute."""
        return asdict(self)

    @classmethod
    def from_attr(cls, data: Mapping[str, Any]) -> RetrainRecord:
        """Inverse of :meth:`to_attr`; keys this version does not know are ignored."""
        return cls(**_known_fields(cls, data))


def write_retrain(study: optuna.Study, record: RetrainRecord) -> None:
    """Store (or replace) the retraining record of trial ``record.trial`` with its search."""
    study.set_user_attr(f"{RETRAIN_PREFIX}{int(record.trial)}", record.to_attr())


def read_retrains(user_attrs: Mapping[str, Any]) -> dict[int, RetrainRecord]:
    """The retraining records in a study's user attributes, by trial number."""
    out = {}
    for key, value in user_attrs.items():
        number = key[len(RETRAIN_PREFIX) :]
        if key.startswith(RETRAIN_PREFIX) and number.isdigit() and isinstance(value, Mapping):
            out[int(number)] = RetrainRecord.from_attr(value)
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- baselines

BASELINES_KEY = "fusion_nas_baselines"  # study user attribute marking a baseline collection
BASELINE_KEY = "fusion_nas_baseline"  # trial user attribute holding one baseline's record
BASELINES_PREFIX = "baselines:"  # collection study names: baselines:<space>:<dataset>


def collection_name(space_name: str, dataset: str) -> str:
    """The study name of the baselines of space ``space_name`` on ``dataset``."""
    return f"{BASELINES_PREFIX}{space_name}:{dataset}"


@dataclass(frozen=True)
class BaselineSetRecord:
    """What a baseline collection was trained for: a space's input on one dataset.

    Stored as the study attribute ``fusion_nas_baselines``; a study holding it is a collection
    of baselines, never a search (it has no ``fusion_nas`` attribute).
    """

    space_name: str
    space_toml: str
    dataset: str
    kind: str
    channels: int
    size: tuple[int, ...]
    classes: int
    data_dir: str | None = None
    version: str = ""
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )

    def input_key(self) -> tuple[str, int, tuple[int, ...], int]:
        """``(kind, channels, size, classes)``: which searches the baselines compare with."""
        return (self.kind, int(self.channels), tuple(int(s) for s in self.size), int(self.classes))

    def to_attr(self) -> dict[str, Any]:
        """The JSON-able dict stored as the study's ``fusion_nas_baselines`` attribute."""
        out = asdict(self)
        out["size"] = list(self.size)
        return out

    @classmethod
    def from_attr(cls, data: Mapping[str, Any]) -> BaselineSetRecord:
        """Inverse of :meth:`to_attr`; keys this version does not know are ignored."""
        values = _known_fields(cls, data)
        values["size"] = tuple(values.get("size") or ())
        return cls(**values)


def baseline_set_record(user_attrs: Mapping[str, Any]) -> BaselineSetRecord | None:
    """The collection record in a study's user attributes, or ``None`` for any other study."""
    data = user_attrs.get(BASELINES_KEY)
    return BaselineSetRecord.from_attr(data) if isinstance(data, Mapping) else None


def write_baseline_set(study: optuna.Study, record: BaselineSetRecord) -> None:
    """Store (or replace) the collection record of ``study``."""
    study.set_user_attr(BASELINES_KEY, record.to_attr())


@dataclass(frozen=True)
class BaselineRecord:
    """One reference network trained with the protocol of searched networks.

    ``val_acc`` is the proxy score (validation split of the training data, the search's proxy
    settings and seed), comparable with a search's trials; ``test_acc`` comes from the final
    schedule of ``retrain`` (``epochs`` on train + validation, then the test split once).
    ``arch`` is the toolkit architecture, ``None`` for a network written outside the toolkit.
    """

    name: str
    description: str
    arch: dict[str, Any] | None
    arch_desc: str
    macs: int
    params: int
    val_acc: float | None
    test_acc: float | None
    epochs: int
    proxy: dict[str, Any]
    seed: int
    threads: int
    seconds: float  # proxy and final training together
    created: str
    arch_id: str | None = None
    curve: list[float] = field(default_factory=list)  # proxy validation accuracy per epoch
    proxy_seconds: float | None = None
    train_samples: int | None = None
    test_samples: int | None = None
    # The final schedule's settings (as a retrain record's; None in older records).
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    device: str | None = None  # where it trained, beside ``threads`` (None: older records)

    def to_attr(self) -> dict[str, Any]:
        """The JSON-able dict stored as the trial's ``fusion_nas_baseline`` attribute."""
        return asdict(self)

    @classmethod
    def from_attr(cls, data: Mapping[str, Any]) -> BaselineRecord:
        """Inverse of :meth:`to_attr`; keys this version does not know are ignored."""
        return cls(**_known_fields(cls, data))


def baseline_trial(record: BaselineRecord) -> FrozenTrial:
    """One baseline as a finished Optuna trial: values (val_acc, MACs), the record as attribute.

    Optuna-dashboard plots a collection like a search; a baseline without a validation
    accuracy is a FAIL trial.
    """
    complete = record.val_acc is not None
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE if complete else TrialState.FAIL,
        values=[float(record.val_acc), float(record.macs)] if complete else None,
        user_attrs={BASELINE_KEY: record.to_attr()},
    )


def read_baseline(t: FrozenTrial) -> BaselineRecord | None:
    """The baseline record of a trial of a collection, or ``None`` for any other trial."""
    data = t.user_attrs.get(BASELINE_KEY)
    return BaselineRecord.from_attr(data) if isinstance(data, Mapping) else None


def study_retrains(storage: optuna.storages.BaseStorage, study_id: int) -> dict[int, RetrainRecord]:
    """The retrain results stored with study ``study_id``, by trial number (one storage read)."""
    return read_retrains(storage.get_study_user_attrs(study_id))
