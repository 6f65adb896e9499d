"""``fusion-nas pareto``: the Pareto plot of one or more searches as one offline HTML file."""

from __future__ import annotations

import hashlib
import webbrowser
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fusion_nas.cli.common import StoreOption, console, user_errors
from fusion_nas.errors import FusionNasError
from fusion_nas.settings import home
from fusion_nas.store.handles import StoredSearch
from fusion_nas.store.queries import safe_filename
from fusion_nas.store.records import BaselineRecord
from fusion_nas.store.store import Store

_MAX_STEM = 120


def default_report_path(names: list[str]) -> Path:
    """``HOME/pareto-<names>.html`` (:func:`fusion_nas.settings.home`), names made file-safe.

    The names are joined by ``+``; long name lists are cut and suffixed with a short hash, so
    distinct lists keep distinct files.
    """
    stem = "+".join(safe_filename(n, limit=None) for n in names)
    if len(stem) > _MAX_STEM:
        digest = hashlib.sha1("\0".join(names).encode()).hexdigest()[:8]
        stem = f"{stem[: _MAX_STEM - 9]}-{digest}"
    return home() / f"pareto-{stem}.html"


def _baselines(store: Store, searches: dict[str, StoredSearch]) -> list[tuple[str, BaselineRecord]]:
    """The stored baselines of every search's dataset and input, each label once."""
    out: dict[str, BaselineRecord] = {}
    for search in searches.values():
        for label, baseline in store.baselines_for(search):
            out.setdefault(label, baseline)
    return list(out.items())


def pareto(
    names: Annotated[
        list[str], typer.Argument(help="One or more search names (overlaid in distinct colours).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="HTML file to write. Default: $FUSION_NAS_HOME/pareto-<names>.html "
            "(FUSION_NAS_HOME defaults to ./results).",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    open_: Annotated[
        bool, typer.Option("--open", help="Open the file in the default web browser.")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Write the Pareto plot (validation accuracy vs. MACs) of NAMES as one offline HTML file.

    Baselines stored for the searches' dataset and input ('fusion-nas baselines') are drawn
    as labelled reference points.
    """
    from fusion_nas.outputs import atomic_output, check_outputs
    from fusion_nas.web.report import report_html

    with user_errors():
        unique = list(dict.fromkeys(names))
        path = out if out is not None else default_report_path(unique)
        check_outputs({"--out": path})  # a folder or an unwritable place: refused before reading
        st = Store(store, create=False)
        searches = {name: st.search(name) for name in unique}
        frames = {name: search.frame() for name, search in searches.items()}
        records = {name: search.record for name, search in searches.items()}
        baselines = _baselines(st, searches)
        page = report_html(frames, records, baselines=baselines)
        try:
            with atomic_output(path) as part:  # whole or not at all
                part.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise FusionNasError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    total = sum(len(df) for df in frames.values())
    extra = f", {len(baselines)} baseline(s)" if baselines else ""
    console.print(f"Wrote {escape(str(path))} ({len(unique)} search(es), {total} trials{extra})")
    if open_:
        webbrowser.open(path.resolve().as_uri())
