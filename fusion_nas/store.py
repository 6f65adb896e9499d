"""Results store: Optuna's RDB storage (SQLAlchemy), so ``optuna-dashboard`` opens it as is.

One search = one Optuna study with two objectives (validation accuracy up, MACs down).
The study's user attribute ``fusion_nas`` holds the search record (space TOML, dataset, proxy
settings, strategy, seed, package version, requested trial count); each trial's user
attributes hold the architecture JSON, cost, validation curve, timing, status and failure
reason. Statuses: ``complete``, ``failed``, ``infeasible`` (over budget, never trained) and
``running``.

Default location: SQLite at ``results/fusion_nas.db`` under the current directory; override
with ``--store URL`` or the ``FUSION_NAS_STORE`` environment variable (any SQLAlchemy URL,
e.g. ``postgresql://user@host/db``).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from fusion_nas.errors import StoreError, allowed
from fusion_nas.pareto import hypervolume, pareto_mask

DEFAULT_STORE = "sqlite:///results/fusion_nas.db"
STORE_ENV = "FUSION_NAS_STORE"
META_KEY = "fusion_nas"
DIRECTIONS = ("maximize", "minimize")  # (validation accuracy, MACs)
STATUSES = ("complete", "failed", "infeasible", "running")
_DRIVERS = ("sqlite", "postgresql", "mysql")

TRIAL_COLUMNS = [
    "number",
    "status",
    "val_acc",
    "macs",
    "params",
    "arch_id",
    "arch",
    "arch_desc",
    "curve",
    "train_seconds",
    "threads",
    "fail_reason",
    "duplicate_of",
    "on_front",
    "datetime_start",
    "datetime_complete",
]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def resolve_url(url: str | None = None) -> str:
    """The store URL to use: ``url``, else ``$FUSION_NAS_STORE``, else the SQLite default."""
    url = url or os.environ.get(STORE_ENV) or DEFAULT_STORE
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:
        raise StoreError(
            f"invalid store URL {url!r}; expected a SQLAlchemy URL such as "
            f"{DEFAULT_STORE!r} or 'postgresql://user@host/db'"
        ) from None
    if parsed.get_backend_name() not in _DRIVERS:
        raise StoreError(
            f"unsupported store URL {url!r}: database {parsed.get_backend_name()!r}; "
            f"allowed: {allowed(_DRIVERS)}"
        )
    return url


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for pages, messages and exports)."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^/@\s]*?:)[^/@\s]*@", r"\1***@", url)


def _sqlite_path(url: str) -> Path | None:
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


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
        # SQLite: wait for a busy writer instead of failing at once (several workers).
        connect = {"timeout": 60} if path is not None else {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.storage = optuna.storages.RDBStorage(
                    self.url, engine_kwargs={"connect_args": connect} if connect else {}
                )
        except Exception as exc:  # SQLAlchemy/driver errors: one line, no traceback
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot open the results store {self.url!r}: {first}") from None

    # ------------------------------------------------------------------ searches

    def search_names(self) -> list[str]:
        """Names of the fusion-nas searches in the store, oldest first."""
        studies = self.storage.get_all_studies()
        return [s.study_name for s in studies if META_KEY in s.user_attrs]

    def has_search(self, name: str) -> bool:
        """Whether a search called ``name`` exists."""
        return name in self.search_names()

    def open_study(self, name: str) -> optuna.Study:
        """The Optuna study of search ``name``; unknown names list the known ones."""
        if not self.has_search(name):
            known = self.search_names()
            hint = f"; known searches: {allowed(known)}" if known else "; the store has no searches"
            raise StoreError(f"no search named {name!r} in {self.url}{hint}")
        return optuna.load_study(study_name=name, storage=self.storage)

    def create_study(
        self, name: str, meta: dict[str, Any], sampler: optuna.samplers.BaseSampler | None = None
    ) -> optuna.Study:
        """Create the study of a new search and store its record in one step."""
        study = optuna.create_study(
            study_name=name, storage=self.storage, directions=list(DIRECTIONS), sampler=sampler
        )
        study.set_user_attr(META_KEY, meta)
        return study

    def delete_search(self, name: str) -> None:
        """Remove a search and its trials."""
        self.open_study(name)
        optuna.delete_study(study_name=name, storage=self.storage)

    def search_meta(self, name: str) -> dict[str, Any]:
        """The search record (space TOML, dataset, proxy, strategy, seed, version, ...)."""
        return dict(self.open_study(name).user_attrs[META_KEY])

    # ------------------------------------------------------------------ trials

    def trials(self, name: str) -> pd.DataFrame:
        """All trials of search ``name``, one row each (columns: :data:`TRIAL_COLUMNS`)."""
        study = self.open_study(name)
        return trials_frame(study.get_trials(deepcopy=False))

    def trial(self, name: str, number: int) -> dict[str, Any]:
        """One trial of search ``name`` as a dict; unknown numbers list the valid range."""
        df = self.trials(name)
        row = df[df["number"] == number]
        if row.empty:
            span = f"0..{int(df['number'].max())}" if len(df) else "none yet"
            raise StoreError(f"search {name!r} has no trial {number}; trials: {span}")
        return row.iloc[0].to_dict()

    def summary(self, ref_macs: float | None = None) -> pd.DataFrame:
        """One row per search: progress, best validation accuracy, front size, hypervolume.

        Hypervolumes use one shared reference point (``ref_macs``, default 10x the largest
        MACs over all listed searches) so they are comparable between rows.
        """
        rows, frames = [], {}
        for name in self.search_names():
            frames[name] = self.trials(name)
        all_macs = [m for df in frames.values() for m in df.loc[df.status == "complete", "macs"]]
        ref = ref_macs if ref_macs is not None else (10.0 * max(all_macs) if all_macs else 1.0)
        for name, df in frames.items():
            meta = self.search_meta(name)
            done = df[df.status.isin(["complete", "failed", "infeasible"])]
            ok = df[df.status == "complete"]
            rows.append(
                {
                    "name": name,
                    "space": meta.get("space_name"),
                    "dataset": meta.get("dataset"),
                    "strategy": meta.get("strategy"),
                    "requested": meta.get("n_trials"),
                    "done": len(done),
                    "failed": int((df.status == "failed").sum()),
                    "infeasible": int((df.status == "infeasible").sum()),
                    "running": int((df.status == "running").sum()),
                    "best_val_acc": float(ok.val_acc.max()) if len(ok) else None,
                    "front_size": int(ok.on_front.sum()),
                    "hypervolume": hypervolume(list(ok.val_acc), list(ok.macs), ref)
                    if len(ok)
                    else 0.0,
                    "created": meta.get("created"),
                }
            )
        return pd.DataFrame(rows, columns=_SUMMARY_COLUMNS)


_SUMMARY_COLUMNS = [
    "name",
    "space",
    "dataset",
    "strategy",
    "requested",
    "done",
    "failed",
    "infeasible",
    "running",
    "best_val_acc",
    "front_size",
    "hypervolume",
    "created",
]


def trial_status(t: FrozenTrial) -> str:
    """fusion-nas status of an Optuna trial (see :data:`STATUSES`)."""
    if t.state == TrialState.RUNNING or t.state == TrialState.WAITING:
        return "running"
    if t.state == TrialState.COMPLETE:
        return "infeasible" if t.user_attrs.get("status") == "infeasible" else "complete"
    return "failed"


def trials_frame(trials: list[FrozenTrial]) -> pd.DataFrame:
    """Trials as a DataFrame; ``on_front`` marks the Pareto front of the complete trials."""
    rows = []
    for t in trials:
        ua = t.user_attrs
        status = trial_status(t)
        reason = ua.get("fail_reason")
        if status == "failed" and not reason:
            reason = f"trial ended in state {t.state.name}"
        rows.append(
            {
                "number": t.number,
                "status": status,
                "val_acc": ua.get("val_acc") if status == "complete" else None,
                "macs": ua.get("macs"),
                "params": ua.get("params"),
                "arch_id": ua.get("arch_id"),
                "arch": ua.get("arch"),
                "arch_desc": ua.get("arch_desc"),
                "curve": ua.get("curve", []),
                "train_seconds": ua.get("train_seconds"),
                "threads": ua.get("threads"),
                "fail_reason": reason,
                "duplicate_of": ua.get("duplicate_of"),
                "on_front": False,
                "datetime_start": t.datetime_start,
                "datetime_complete": t.datetime_complete,
            }
        )
    df = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    ok = df.index[df.status == "complete"]
    if len(ok):
        mask = pareto_mask(df.loc[ok, "val_acc"].astype(float), df.loc[ok, "macs"].astype(float))
        df.loc[ok[mask], "on_front"] = True
    return df
