"""``fusion-nas results``: list searches, or the trials of one with the front marked."""

from __future__ import annotations

import json
import math
from enum import Enum
from typing import Annotated, Any

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from fusion_nas.cli.common import StoreOption, console, user_errors
from fusion_nas.store.queries import (
    STATUSES,
    TABLE_COLUMNS,
    hypervolume_text,
    search_hypervolume,
    status_counts,
    trial_note,
)
from fusion_nas.store.store import Store, redact_url


class Format(str, Enum):
    """Output formats of ``results``."""

    table = "table"
    csv = "csv"
    json = "json"


_COUNTS = (
    "number",
    "macs",
    "params",
    "threads",
    "duplicate_of",
    "done",
    "requested",
    "ref_macs",
    *STATUSES,
)


TABLE_LIMIT = 200
"""Trials the table format shows besides the Pareto-optimal ones: a terminal table of 10,000
rows takes seconds to draw and cannot be read."""


def _shown(df: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The rows the table shows: every front trial and the last ``limit`` others (0: all)."""
    if not limit or len(df) <= limit:
        return df
    recent = df.number >= df.number.sort_values().iloc[-limit]
    return df[df.on_front.astype(bool) | recent]


def _fmt(value: Any, count: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if count and isinstance(value, float):  # a count column holds floats once a row is empty
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _emit(
    df: pd.DataFrame, fmt: Format, title: str, columns: list[str], caption: str | None = None
) -> None:
    if fmt is Format.csv:
        out = df.copy()
        for col in out.columns:
            if out[col].map(lambda v: isinstance(v, (dict, list))).any():
                out[col] = out[col].map(json.dumps)
        typer.echo(out.to_csv(index=False), nl=False)
        return
    if fmt is Format.json:
        typer.echo(df.to_json(orient="records", date_format="iso", indent=2))
        return
    table = Table(title=title, caption=caption)
    for col in columns:
        table.add_column(col)
    for row in df[columns].itertuples(index=False):
        table.add_row(*(escape(_fmt(v, c in _COUNTS)) for c, v in zip(columns, row)))
    console.print(table)


def results(
    name: Annotated[
        str | None,
        typer.Argument(help="A search name; omit to list every search.", show_default=False),
    ] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            min=0,
            help="Table format: the Pareto-optimal trials and the last LIMIT others "
            "(0: every trial). CSV and JSON hold every trial.",
        ),
    ] = TABLE_LIMIT,
    store: StoreOption = None,
) -> None:
    """List searches, or print the trials of NAME with the Pareto-optimal ones marked."""
    with user_errors():
        st = Store(store, create=False)
        if name is None:
            df = st.summary()
            ref = df["ref_macs"].iloc[0] if len(df) else None
            caption = (
                f"hypervolume: accuracy x log10 MACs up to acc 0 and ref_macs {ref:,.0f} "
                "(10x max MACs of all searches listed)"
                if ref is not None and ref == ref
                else None
            )
            _emit(
                df,
                format,
                f"Searches in {redact_url(st.url)}",
                [c for c in df.columns if c != "created"],
                caption,
            )
            return
        df = st.trials(name)
        if format is not Format.table:
            _emit(df, format, "", list(df.columns))
            return
        shown = _shown(df, limit)
        view = shown.assign(
            front=shown.on_front.map(lambda f: "*" if f else ""),
            note=[trial_note(row) for row in shown.to_dict("records")],
        )
        number, *rest = TABLE_COLUMNS
        counts = ", ".join(f"{s} {n}" for s, n in status_counts(df).items())
        hv, ref = search_hypervolume(df)
        left = len(df) - len(shown)
        more = (
            f"; {left:,} earlier trials not shown (--limit 0 or --format csv shows every trial)"
            if left
            else ""
        )
        _emit(
            view,
            format,
            f"Search {name} ({len(df)} trials; * = Pareto-optimal: accuracy up, MACs down)",
            [number, "front", *rest, "note"],
            f"{counts}; hypervolume {hypervolume_text(hv, ref)}{more}",
        )
