"""The query layer: what every front end (CLI, dashboard, export, retrain) asks of stored trials.

- :func:`trials_frame`: trial records as one table, the Pareto front marked (``on_front``);
- :func:`trial_row`: the one trial lookup by number; :func:`pick_trial`: by number or by a pick
  rule (``knee``, ``best``, ``max-flops:X``), on validation accuracy only;
- :func:`reference_macs`: the one reference point for hypervolumes that are compared;
- :func:`search_hypervolume`: the one hypervolume of a search's complete trials, with the
  reference MACs it used; :func:`hypervolume_text` labels it with that reference;
- :func:`status_counts`: trials per :class:`~fusion_nas.store.records.TrialStatus` (every view
  counts the same statuses under the same names);
- :func:`search_summary`: one search at a glance (the CLI's list, the dashboard's list);
- :func:`safe_filename`, :func:`download_filename`: the one file-name sanitiser;

Statuses are :class:`~fusion_nas.store.records.TrialStatus` values; the table holds their strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from optuna.trial import FrozenTrial

from fusion_nas.errors import FusionNasError, StoreError, allowed
from fusion_nas.pareto import default_ref_macs, hypervolume, knee_index, pareto_mask
from fusion_nas.store.records import TRIAL_FIELDS, SearchRecord, TrialRecord, TrialStatus

__all__ = [
    "PICKS",
    "SUMMARY_ATTRS",
    "SUMMARY_COLUMNS",
    "TABLE_COLUMNS",
    "TRIAL_COLUMNS",
    "STATUSES",
    "download_filename",
    "hypervolume_text",
    "pick_trial",
    "reference_macs",
    "safe_filename",
    "search_state",
    "search_hypervolume",
    "search_summary",
    "status_counts",
    "trial_note",
    "trial_row",
    "trials_frame",
]

# The record's fields plus ``on_front``, kept before the two timestamps as tables always showed.
_TIMES = ("datetime_start", "datetime_complete")
TRIAL_COLUMNS = (*(f for f in TRIAL_FIELDS if f not in _TIMES), "on_front", *_TIMES)
# What a trial table shows of each trial (the CLI and the dashboard add their own marks).
TABLE_COLUMNS = ("number", "status", "val_acc", "macs", "params", "arch_desc", "train_seconds")
PICKS = ("knee", "best", "max-flops:X")
STATUSES = tuple(s.value for s in TrialStatus)
"""Every trial status, in the order views list them (complete, failed, infeasible, ...)."""
# Statuses a summary counts in their own column besides ``done`` (the finished trials).
_COUNTED = tuple(TrialStatus)
SUMMARY_COLUMNS = (
    "name",
    "space",
    "dataset",
    "strategy",
    "requested",
    "done",
    *(s.value for s in _COUNTED),  # complete, failed, infeasible, interrupted, stopped, running
    "best_val_acc",
    "front_size",
    "hypervolume",
    "ref_macs",
    "created",
)
SUMMARY_ATTRS = ("status", "val_acc", "macs", "latency_ms")
"""The trial attributes a summary (:func:`search_summary`) reads: the stored status (which
tells infeasible from complete, interrupted from failed), and a complete trial's accuracy and
costs. :meth:`Store.summaries <fusion_nas.store.store.Store.summaries>` reads only these."""
_COMPLETE = TrialStatus.COMPLETE.value
_FINISHED = tuple(s.value for s in TrialStatus if s.finished)


# --------------------------------------------------------------------------- trials


def trials_frame(records: Iterable[TrialRecord | FrozenTrial], cost: str = "macs") -> pd.DataFrame:
    """Trials as a table (columns :data:`TRIAL_COLUMNS`, status as plain strings).

    ``on_front`` marks the Pareto front (accuracy up, ``cost`` down: ``macs``, or
    ``latency_ms`` for a search on latency) of the complete trials.
    Optuna ``FrozenTrial`` objects are read through :meth:`TrialRecord.from_trial`.
    """
    rows = []
    for rec in records:
        if isinstance(rec, FrozenTrial):
            rec = TrialRecord.from_trial(rec)
        # the record's fields as they are (a frozen record: no deep copy as ``as_row`` makes)
        row = {f: getattr(rec, f) for f in TRIAL_FIELDS}
        row["status"] = rec.status.value
        row["on_front"] = False
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))
    ok = df.index[df.status == _COMPLETE]
    if len(ok):
        mask = pareto_mask(df.loc[ok, "val_acc"].astype(float), df.loc[ok, cost].astype(float))
        df.loc[ok[mask], "on_front"] = True
    return df


def trial_note(row: Mapping[str, Any]) -> str:
    """A table's note on a trial: the reused result it copies, else why it did not complete."""
    dup = row.get("duplicate_of")
    if dup is not None and pd.notna(dup):  # NaN in a float column: no duplicate
        return f"same network as #{int(dup)}"
    reason = row.get("fail_reason")
    note = reason if isinstance(reason, str) else ""
    retry = row.get("retry_of")
    if retry is not None and pd.notna(retry):
        note = f"retry of #{int(retry)}" + (f"; {note}" if note else "")
    pre = row.get("prescreen")
    if isinstance(pre, Mapping) and isinstance(pre.get("score"), int | float):
        why = f"pre-screened: {pre.get('proxy')} {pre['score']:.4g}, pick {pre.get('place')}"
        note = why + (f"; {note}" if note else "")
    start = row.get("start_from")
    if isinstance(start, Mapping) and isinstance(start.get("member"), str):
        why = f"zoo member {start['member']} (--start-from)"
        note = why + (f"; {note}" if note else "")
    return note


def _span(df: pd.DataFrame) -> str:
    return f"0..{int(df['number'].max())}" if len(df) else "none yet"


def trial_row(df: pd.DataFrame, number: int, search: str | None = None) -> dict[str, Any]:
    """The row (as a dict) of trial ``number``; an unknown number names the valid range."""
    row = df[df["number"] == number]
    if row.empty:
        where = f" in search {search!r}" if search is not None else ""
        raise StoreError(f"trial {number} does not exist{where}; trials: {_span(df)}")
    return row.iloc[0].to_dict()


def _best(ok: pd.DataFrame) -> dict[str, Any]:
    # Highest validation accuracy; ties go to fewer MACs.
    return ok.sort_values(["val_acc", "macs"], ascending=[False, True]).iloc[0].to_dict()


def pick_trial(
    df: pd.DataFrame, trial: int | None = None, pick: str | None = None, search: str | None = None
) -> dict[str, Any]:
    """The row of ``trial``, or of the ``pick`` rule over the complete trials (exactly one).

    ``search`` names the search in the error of an unknown trial number.

    Rules: ``knee`` (knee point of the Pareto front), ``best`` (highest validation accuracy,
    ties to fewer MACs), ``max-flops:X`` (the most accurate trial with at most X MACs). Only
    validation accuracy is used: the test split never chooses an architecture.
    """
    if (trial is None) == (pick is None):
        raise FusionNasError("give exactly one of --trial N or --pick knee|best|max-flops:X")
    if trial is not None:
        return trial_row(df, trial, search)
    ok = df[df.status == _COMPLETE].reset_index(drop=True)
    if ok.empty:
        raise StoreError("the search has no complete trial to pick from")
    if pick == "knee":
        index = knee_index(list(ok.val_acc), list(ok.macs))
        return ok.iloc[index].to_dict()
    if pick == "best":
        return _best(ok)
    if pick and pick.startswith("max-flops:"):
        raw = pick.split(":", 1)[1]
        try:
            limit = float(raw)
        except ValueError:
            raise FusionNasError(f"--pick max-flops:X needs a number, got {raw!r}") from None
        fit = ok[ok.macs <= limit]
        if fit.empty:
            cheapest = int(ok.macs.min())
            raise StoreError(
                f"no complete trial has at most {limit:,.0f} MACs; the cheapest has {cheapest:,}"
            )
        return _best(fit)
    raise FusionNasError(f"unknown pick {pick!r}; allowed: {allowed(PICKS)}")


# --------------------------------------------------------------------------- searches


def _complete_macs(df: pd.DataFrame) -> list[float]:
    macs = df.loc[df.status == _COMPLETE, "macs"]
    return [float(m) for m in macs if m is not None and m == m]


def reference_macs(
    frames_or_macs: pd.DataFrame | Iterable[pd.DataFrame] | Iterable[float],
) -> float:
    """The reference MACs of hypervolumes compared side by side: 10x the largest MACs.

    Takes one trials table, several (their complete trials count), or plain MACs values;
    ``1.0`` when there is nothing to measure.
    """
    if isinstance(frames_or_macs, pd.DataFrame):
        return default_ref_macs(_complete_macs(frames_or_macs))
    if isinstance(frames_or_macs, Mapping):
        frames_or_macs = frames_or_macs.values()
    macs: list[float] = []
    for item in frames_or_macs:
        if isinstance(item, pd.DataFrame):
            macs.extend(_complete_macs(item))
        elif item is not None and item == item:
            macs.append(float(item))
    return default_ref_macs(macs)


def status_counts(df: pd.DataFrame) -> dict[str, int]:
    """Trials per status: every :data:`STATUSES` key (zero if none), then any unknown status."""
    counts = {s: 0 for s in STATUSES}
    for status, n in df["status"].astype(str).value_counts().items():
        counts[str(status)] = counts.get(str(status), 0) + int(n)
    return counts


def search_hypervolume(df: pd.DataFrame, ref_macs: float | None = None) -> tuple[float, float]:
    """``(hypervolume, ref_macs)`` of the complete trials of ``df`` (those with MACs).

    The one hypervolume every view shows (:func:`fusion_nas.pareto.hypervolume`: accuracy x
    log10 MACs up to ``(accuracy 0, ref_macs)``). ``ref_macs`` defaults to
    :func:`reference_macs` of ``df`` (this search alone); pass a shared one to compare searches.
    The reference used is returned alongside, so a view can label the value with it.
    """
    ref = float(ref_macs if ref_macs is not None else reference_macs(df))
    ok = df[(df.status == _COMPLETE) & df.macs.notna() & df.val_acc.notna()]
    if ok.empty:
        return 0.0, ref
    acc = [float(a) for a in ok.val_acc]
    return hypervolume(acc, [float(m) for m in ok.macs], ref), ref


def hypervolume_text(value: float, ref_macs: float, scope: str = "this search") -> str:
    """``2.0483 (ref: acc 0, 10x max MACs of this search = 123,456)``: a labelled hypervolume.

    ``scope`` names the trials whose largest MACs set the reference (:func:`reference_macs`).
    """
    return f"{value:.4f} (ref: acc 0, 10x max MACs of {scope} = {ref_macs:,.0f})"


def search_state(done: int, requested: int | None, running: int) -> str:
    """``running`` (trials in flight), ``done`` (all requested trials finished) or ``stopped``."""
    if running:
        return TrialStatus.RUNNING.value
    if requested is not None and done >= requested:
        return "done"
    return "stopped"


def search_summary(
    name: str, record: SearchRecord, df: pd.DataFrame, ref_macs: float | None = None
) -> dict[str, Any]:
    """One search at a glance: progress per status, best accuracy, front size, hypervolume.

    ``ref_macs`` is the shared reference of :func:`reference_macs` when searches are compared;
    ``None`` uses this search's own. Keys: :data:`SUMMARY_COLUMNS` (a count per status, the
    hypervolume of :func:`search_hypervolume` and its ``ref_macs``) plus ``status``,
    ``trials``, ``epochs``, ``max_flops`` and ``max_params``.
    """
    counts = status_counts(df)
    ok = df[df.status == _COMPLETE]
    hv, ref = search_hypervolume(df, ref_macs)
    done = int(sum(counts.get(s, 0) for s in _FINISHED))
    running = int(counts.get(TrialStatus.RUNNING.value, 0))
    return {
        "name": name,
        "space": record.space_name,
        "dataset": record.dataset,
        "strategy": record.strategy,
        "requested": record.n_trials,
        "done": done,
        **{s.value: int(counts.get(s.value, 0)) for s in _COUNTED},
        "best_val_acc": float(ok.val_acc.max()) if len(ok) else None,
        "front_size": int(ok.on_front.sum()),
        "hypervolume": hv,
        "ref_macs": ref,
        "created": record.created,
        "status": search_state(done, record.n_trials, running),
        "trials": len(df),
        "epochs": record.proxy.get("epochs") if isinstance(record.proxy, Mapping) else None,
        "max_flops": record.max_flops,
        "max_params": record.max_params,
    }


# --------------------------------------------------------------------------- text


def safe_filename(text: str, fallback: str = "search", limit: int | None = 80) -> str:
    """``text`` reduced to ``[A-Za-z0-9._-]`` (runs of anything else become ``_``).

    Leading/trailing ``.``, ``_`` and ``-`` are dropped (no hidden files, no options), the
    result is cut to ``limit`` characters (``None``: no cut) and ``fallback`` replaces an
    empty result.
    """
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    if limit is not None:
        out = out[:limit].rstrip("._-")
    return out or fallback


def download_filename(search: str, number: int, suffix: str) -> str:
    """``fusion_<search>_<trial><suffix>`` with the search name made file-name safe."""
    return f"fusion_{safe_filename(search)}_{int(number)}{suffix}"
