"""Tabular benchmarks: every network of a space trained once per seed, looked up instead of trained.

A table is a CSV file (``benchmarks/tabular.py`` writes it) with one row per (architecture,
seed) and the columns of :data:`COLUMNS`, plus a sidecar JSON (:func:`meta_path`: same name,
``.json``) that records what the rows mean: the space TOML and its hash, the dataset, the proxy
settings, the seeds, the thread count and the package versions. A row's seed is the seed of
:class:`~fusion_nas.evaluation.base.EvalTask`: it draws the validation split *and* the initial
weights,
exactly as ``fusion-nas search --seed S`` does, so a row is what a search with that seed and
one thread would have measured.

``fusion-nas search --evaluator table:PATH`` answers every trial from the table
(:class:`TableEvaluator`, run by :class:`TablePool`, which answers the search loop's
``free``/``submit``/``collect`` calls like the training pools do):

- ``table:PATH``: the mean over the table's seeds of the validation accuracy, of the per-epoch
  curve and of the training seconds (seeds whose run failed are left out; all failed: the trial
  fails with the first reason); every network must have a row for every seed of the table;
- ``table:PATH@N``: seed ``N``'s row only.

A looked-up trial keeps the table's training seconds as its ``train_seconds`` and its note says
so (``looked up in TABLE ...``), so the store stays honest about what training cost. The
search refuses, before anything is written, a table whose space, dataset or proxy settings
differ from the search's, and a table that lacks architectures of the space.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fusion_nas.errors import FusionNasError, allowed, one_line
from fusion_nas.evaluation.base import EvalTask, Outcome
from fusion_nas.evaluation.pools import InlinePool
from fusion_nas.model.arch import Architecture
from fusion_nas.model.cost import Cost
from fusion_nas.model.space import SearchSpace, parse_space
from fusion_nas.store.records import TrialStatus
from fusion_nas.training.loop import ProxyConfig

# One row per (architecture, seed); `arch` is the architecture's JSON, `curve` the JSON list of
# validation accuracies after each epoch, `seconds` the proxy training time.
COLUMNS = (
    "arch_id",
    "arch",
    "desc",
    "macs",
    "params",
    "seed",
    "val_acc",
    "curve",
    "seconds",
    "threads",
    "status",
    "reason",
)
EVALUATOR_FORMS = ("train", "table:PATH", "table:PATH@SEED")
_TABLE_SPEC = re.compile(r"^table:(?P<path>.+?)(?:@(?P<seed>-?\d+))?$")


class TableError(FusionNasError):
    """A table or an ``--evaluator`` value is unusable (one line, naming the table)."""


def meta_path(csv_path: str | Path) -> Path:
    """The sidecar JSON of the table at ``csv_path`` (same name, ``.json``)."""
    return Path(csv_path).with_suffix(".json")


def space_sha256(space: SearchSpace) -> str:
    """Hash of the space's TOML text (recorded with a table)."""
    return hashlib.sha256(space.source.encode("utf-8")).hexdigest()


def space_key(space: SearchSpace) -> SearchSpace:
    """The space as parsed, without its text and description (comments do not count)."""
    return replace(space, source="", description="")


# --------------------------------------------------------------------------- evaluator spec


@dataclass(frozen=True)
class EvaluatorSpec:
    """A parsed ``--evaluator`` value: ``train``, or a table path with an optional seed."""

    kind: str  # "train" or "table"
    path: Path | None = None
    seed: int | None = None  # None: the mean over the table's seeds

    def __str__(self) -> str:
        if self.kind == "train":
            return "train"
        return f"table:{self.path}" + (f"@{self.seed}" if self.seed is not None else "")


def parse_evaluator(value: str) -> EvaluatorSpec:
    """Parse ``train``, ``table:PATH`` or ``table:PATH@SEED`` (the path made absolute)."""
    text = (value or "").strip()
    if text == "train":
        return EvaluatorSpec("train")
    match = _TABLE_SPEC.match(text)
    if match is None:
        raise TableError(f"unknown evaluator {value!r}; allowed: {allowed(EVALUATOR_FORMS)}")
    seed = match["seed"]
    path = Path(match["path"]).expanduser().resolve()
    return EvaluatorSpec("table", path, int(seed) if seed is not None else None)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class TableRow:
    """One (architecture, seed) row."""

    arch_id: str
    arch: str
    desc: str
    macs: int
    params: int
    seed: int
    val_acc: float | None
    curve: list[float] = field(default_factory=list)
    seconds: float = 0.0
    threads: int = 1
    status: str = TrialStatus.COMPLETE.value
    reason: str = ""

    @property
    def complete(self) -> bool:
        """Whether the run finished with a validation accuracy."""
        return self.status == TrialStatus.COMPLETE.value and self.val_acc is not None

    def to_csv(self) -> dict[str, Any]:
        """The row as CSV cells (floats rounded; the curve as a compact JSON list)."""
        return {
            "arch_id": self.arch_id,
            "arch": self.arch,
            "desc": self.desc,
            "macs": self.macs,
            "params": self.params,
            "seed": self.seed,
            "val_acc": "" if self.val_acc is None else f"{self.val_acc:.6g}",
            "curve": json.dumps([round(a, 6) for a in self.curve], separators=(",", ":")),
            "seconds": f"{self.seconds:.3f}",
            "threads": self.threads,
            "status": self.status,
            "reason": self.reason,
        }

    @classmethod
    def from_csv(cls, cells: Mapping[str, str]) -> TableRow:
        """Inverse of :meth:`to_csv`."""
        acc = cells["val_acc"]
        return cls(
            arch_id=cells["arch_id"],
            arch=cells["arch"],
            desc=cells["desc"],
            macs=int(cells["macs"]),
            params=int(cells["params"]),
            seed=int(cells["seed"]),
            val_acc=float(acc) if acc not in ("", None) else None,
            curve=[float(a) for a in json.loads(cells["curve"] or "[]")],
            seconds=float(cells["seconds"] or 0.0),
            threads=int(cells["threads"] or 1),
            status=cells["status"],
            reason=cells["reason"] or "",
        )


def read_rows(path: str | Path) -> list[TableRow]:
    """Every row of the CSV at ``path`` (a missing file has none)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise TableError(
                    f"table {str(path)!r} is not a fusion-nas table: columns "
                    f"{allowed(missing)} missing"
                )
            rows = []
            for cells in reader:
                if cells.get("arch_id"):
                    rows.append(_checked_row(cells, f"table {str(path)!r} row {reader.line_num}"))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, KeyError, TypeError) as exc:
        raise TableError(f"table {str(path)!r} cannot be read: {exc}") from None


def _checked_row(cells: Mapping[str, str], where: str) -> TableRow:
    """The row of ``cells``, refused in one line (naming ``where`` and the column) when a value
    is not a number the table may hold."""

    def bad(column: str, value: object, want: str) -> TableError:
        return TableError(f"{where} column {column!r}: bad value {value!r}; allowed: {want}")

    for column in ("macs", "params"):
        text = (cells.get(column) or "").strip()
        if not re.fullmatch(r"\d+", text):
            raise bad(column, cells.get(column), "an integer >= 0")
    for column in ("val_acc", "seconds"):
        text = (cells.get(column) or "").strip()
        if column == "val_acc" and text == "":
            continue
        try:
            value = float(text or "0")
        except ValueError:
            value = math.nan
        low_high = (0.0, 1.0) if column == "val_acc" else (0.0, math.inf)
        if not (math.isfinite(value) and low_high[0] <= value <= low_high[1]):
            want = "a number in [0, 1]" if column == "val_acc" else "a finite number >= 0"
            raise bad(column, cells.get(column), want)
    try:
        curve = json.loads(cells.get("curve") or "[]")
    except ValueError:
        curve = None
    if not isinstance(curve, list) or not all(
        isinstance(a, (int, float)) and math.isfinite(a) and 0 <= a <= 1 for a in curve
    ):
        raise bad("curve", cells.get("curve"), "a JSON list of numbers in [0, 1]")
    try:
        return TableRow.from_csv(cells)
    except (ValueError, KeyError, TypeError) as exc:
        raise TableError(f"{where} cannot be read: {one_line(exc)}") from None


def append_rows(path: str | Path, rows: Iterable[TableRow]) -> None:
    """Append ``rows`` to the CSV at ``path`` (header first if the file is new), flushed."""
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow(row.to_csv())
        f.flush()


class Table:
    """A loaded table: its sidecar record and its rows by architecture id and seed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.label = self.path.name
        if not self.path.is_file():
            raise TableError(f"table {str(self.path)!r} does not exist")
        side = meta_path(self.path)
        try:
            self.meta: dict[str, Any] = json.loads(side.read_text(encoding="utf-8"))
            self.space = parse_space(self.meta["space_toml"], source=f"<table {self.label}>")
            # an old table's bf16 as its precision; a setting it predates: its old value
            self.proxy = ProxyConfig.from_dict(self.meta["proxy"])
            self.dataset: str = self.meta["dataset"]
        except (OSError, ValueError, KeyError, TypeError, FusionNasError) as exc:
            raise TableError(
                f"table {str(self.path)!r}: its record {str(side)!r} is missing or unreadable "
                f"({exc})"
            ) from None
        self.rows: dict[str, dict[int, TableRow]] = {}
        for row in read_rows(self.path):
            self.rows.setdefault(row.arch_id, {})[row.seed] = row
        self.threads = int(self.meta.get("threads") or 1)
        self._costs: dict[str, Cost] | None = None

    def costs(self) -> dict[str, Cost]:
        """arch_id -> MACs and params, as counted by ``arch_cost`` when the table was made."""
        if self._costs is None:
            self._costs = {}
            for arch_id, by_seed in self.rows.items():
                row = next(iter(by_seed.values()))
                self._costs[arch_id] = Cost(row.macs, row.params)
        return self._costs

    @property
    def seeds(self) -> list[int]:
        """Every seed that has a row."""
        return sorted({s for by_seed in self.rows.values() for s in by_seed})

    def check(self, space: SearchSpace, dataset: str, proxy: ProxyConfig, seed: int | None) -> None:
        """Refuse (one line) a search this table cannot answer."""
        where = f"table {str(self.path)!r}"
        if space_key(space) != space_key(self.space):
            raise TableError(
                f"{where} was made for space {self.space.name!r}, not for the search's space "
                f"{space.name!r} (the spaces' choices differ); use that space or another table"
            )
        if dataset != self.dataset:
            raise TableError(
                f"{where} was trained on dataset {self.dataset!r}, not {dataset!r}; "
                f"pass --dataset {self.dataset}"
            )
        # throughput switches aside, augmentation settled for the dataset
        mine = self.proxy.settled(self.dataset).fingerprint()
        theirs = proxy.settled(dataset).fingerprint()
        if mine != theirs:
            diff = [f"{k}={v!r}" for k, v in mine.items() if theirs.get(k) != v]
            raise TableError(
                f"{where} was trained with other proxy settings; the table has "
                f"{', '.join(diff)}: pass the same settings"
            )
        if seed is not None and seed not in self.seeds:
            raise TableError(f"{where} has no seed {seed}; allowed: {allowed(self.seeds)}")
        archs = space.enumerate(limit=1_000_000)
        lacking = [a for a in archs if a.arch_id not in self.rows]
        if lacking:
            raise TableError(
                f"{where} lacks {len(lacking)} of the {len(archs)} architectures of space "
                f"{space.name!r} (first: {lacking[0].describe()}); complete it with "
                "benchmarks/tabular.py"
            )
        # The mean must average the same seeds for every network; one seed needs only its own.
        need = [seed] if seed is not None else self.seeds
        short = [a for a in archs if any(s not in self.rows[a.arch_id] for s in need)]
        if short:
            first = next(s for s in need if s not in self.rows[short[0].arch_id])
            raise TableError(
                f"{where} lacks seed {first} for {len(short)} of the {len(archs)} architectures "
                f"(first: {short[0].describe()}); complete it with benchmarks/tabular.py, or "
                f"use one complete seed: table:PATH@SEED"
            )

    def outcome(self, arch: Architecture, seed: int | None = None) -> Outcome:
        """The stored result of ``arch`` (mean over seeds, or seed ``seed``); never raises."""
        by_seed = self.rows.get(arch.arch_id, {})
        if seed is None:
            rows = sorted(by_seed.values(), key=lambda r: r.seed)
            which = "mean of seeds " + ", ".join(str(r.seed) for r in rows if r.complete)
        else:
            rows = [by_seed[seed]] if seed in by_seed else []
            which = f"seed {seed}"
        if not rows:
            what = f" for seed {seed}" if seed is not None else ""
            return Outcome(
                TrialStatus.FAILED,
                reason=f"not in table {self.label}{what}: {arch.describe()} ({arch.arch_id})",
            )
        ok = [r for r in rows if r.complete]
        if not ok:
            first = rows[0]
            return Outcome(
                TrialStatus.FAILED,
                seconds=first.seconds,
                reason=f"failed in table {self.label} (seed {first.seed}): {first.reason}",
            )
        n = min(len(r.curve) for r in ok)
        curve = [sum(r.curve[i] for r in ok) / len(ok) for i in range(n)]
        acc = sum(float(r.val_acc) for r in ok) / len(ok)  # type: ignore[arg-type]
        seconds = sum(r.seconds for r in ok) / len(ok)
        note = f"looked up in table {self.label} ({which}); train_seconds as trained there"
        return Outcome(TrialStatus.COMPLETE, acc, curve, seconds, reason=note)

    def front(self, seed: int | None = None) -> tuple[list[float], list[float]]:
        """(accuracies, MACs) of every architecture as the table answers it."""
        acc, macs = [], []
        for by_seed in self.rows.values():
            row = next(iter(by_seed.values()))
            out = self.outcome(Architecture.from_json(row.arch), seed)
            if out.status == TrialStatus.COMPLETE and out.val_acc is not None:
                acc.append(float(out.val_acc))
                macs.append(float(row.macs))
        return acc, macs


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, size: int) -> Table:
    return Table(path)


def load_table(path: str | Path) -> Table:
    """The table at ``path``, read once while the file is unchanged."""
    p = Path(path)
    try:
        stat = p.stat()
        side = meta_path(p).stat()
    except OSError:
        return Table(p)  # raises the one-line error naming what is missing
    return _cached(str(p), stat.st_mtime_ns + side.st_mtime_ns, stat.st_size)


class TableEvaluator:
    """An :class:`~fusion_nas.evaluation.base.Evaluator` that looks every result up in a table.

    ``seed``: that seed's row only; ``None``: the mean over the table's seeds. Picklable (the
    table is read again, once, in a worker process).
    """

    def __init__(self, table: Table, seed: int | None = None) -> None:
        self.table, self.seed = table, seed

    def __reduce__(self) -> tuple[Any, ...]:
        return (_table_evaluator, (str(self.table.path), self.seed))

    @property
    def threads(self) -> int:
        """Threads the table's runs trained with."""
        return self.table.threads

    def evaluate(self, task: EvalTask) -> Outcome:
        """The stored outcome of ``task``'s architecture; never raises.

        A task that stops early (successive halving) gets the stored curve up to its epoch,
        the accuracy at that epoch and the share of the stored seconds its epochs took.
        """
        try:
            arch = Architecture.from_json(task.arch_json)
        except Exception as exc:  # an unreadable task fails its trial, as training would
            return Outcome(TrialStatus.FAILED, reason=one_line(exc))
        out = self.table.outcome(arch, self.seed)
        stop = task.stop_after
        if out.status == TrialStatus.COMPLETE and stop is not None and stop < len(out.curve):
            out = replace(
                out,
                val_acc=out.curve[stop - 1],
                curve=out.curve[:stop],
                state=f"epoch {stop}".encode(),  # nothing to keep: the table has every epoch
            )
        if out.status == TrialStatus.COMPLETE and (task.start_epoch or stop is not None):
            done = len(out.curve) - task.start_epoch  # epochs this task covered
            out = replace(out, seconds=out.seconds * done / self.table.proxy.epochs)
        return out


def _table_evaluator(path: str, seed: int | None) -> TableEvaluator:
    return TableEvaluator(load_table(path), seed)


class TablePool(InlinePool):
    """Answers the search loop's pool calls from a table: a submitted task is answered at once.

    An :class:`~fusion_nas.evaluation.pools.InlinePool` over a :class:`TableEvaluator` whose
    ``threads`` are the table's, so the search tells every result before its next ask.
    """

    def __init__(self, table: Table, seed: int | None = None) -> None:
        super().__init__("cpu", TableEvaluator(table, seed))
        self.table, self.seed = table, seed

    @property
    def threads(self) -> int:
        """Threads the table's runs trained with."""
        return self.table.threads
