"""The dashboard's JSON endpoints and downloads: what ``static/app.js`` fetches.

==================================  =====================================================
``/api/searches``                   every search at a glance (:func:`results.search_summary`)
``/api/search?name=N``              summary, figures (baselines of the search's dataset on
                                    the Pareto plot), trial table, baselines
                                    (``&since=VERSION``: ``unchanged`` while nothing changed;
                                    ``&after=N&running=3,7``: only newer and running trials;
                                    ``&page=P&size=S``: one page of the table)
``/api/trial?search=N&number=K``    one trial: record, stages, validation-curve figure
``/api/explain?search=N&number=K``  inside the trial's network (:mod:`fusion_nas.analysis.explain`):
                                    its figures, computed on demand (it may re-run the
                                    trial's proxy training) and cached
``/download/code?search=N&...``     the trial as standalone PyTorch source (``export_code``)
``/download/json?search=N&...``     the trial record as JSON
``/static/plotly.min.js``           Plotly.js from the installed ``plotly`` package
==================================  =====================================================

Figures are those of :mod:`fusion_nas.analysis.figures`, sent as ``fig.to_plotly_json()``.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import pandas as pd
from starlette.requests import Request
from starlette.responses import Response

from fusion_nas.analysis.figures import (
    curve_figure,
    hypervolume_curve,
    hypervolume_figure,
    operator_figure,
    operator_frequencies,
    pareto_figure,
    pareto_figure_data,
    stage_lines,
)
from fusion_nas.errors import one_line
from fusion_nas.store.handles import StoredSearch, StoredTrial
from fusion_nas.store.queries import (
    TRIAL_COLUMNS,
    download_filename,
    hypervolume_text,
    search_summary,
    trial_note,
)
from fusion_nas.store.records import BaselineRecord, SearchRecord
from fusion_nas.store.store import redact_url
from fusion_nas.web.params import (
    NotFound,
    int_param,
    link,
    numbers_param,
    query_param,
    store_of,
    stored_search,
    stored_trial_of,
    trial_of,
)
from fusion_nas.web.serialize import SafeJSONResponse, json_text

__all__ = [
    "api_search",
    "api_explain",
    "api_searches",
    "api_trial",
    "download_code",
    "download_json",
    "plotly_js",
]

log = logging.getLogger(__name__)

_TABLE_COLUMNS = (
    "number",
    "status",
    "val_acc",
    "macs",
    "params",
    "arch_desc",
    "train_seconds",
    "on_front",
)
"""Columns of the search page's trial table (plus ``note`` and ``url``)."""

PAGE_SIZE = 100
"""Rows of one page of the trial table, when ``/api/search`` is asked for a ``page``."""


_BASELINE_COLUMNS = ("label", "description", "macs", "params", "val_acc", "test_acc", "epochs")
"""Fields of a baseline in ``/api/search`` (beside its point in the Pareto figure)."""


def _note(row: Mapping[str, Any]) -> str:
    """The table's note (:func:`fusion_nas.store.queries.trial_note`): a reused result, a retry, a
    pre-screen pick, or why a trial failed, was stopped early or cut short."""
    return trial_note(row)


def _escaped_operators(freq: dict[str, Any]) -> dict[str, Any]:
    """:func:`operator_frequencies` with the operator names HTML-escaped: Plotly draws axis
    labels as HTML (``<a href>`` becomes a link), and a store may hold any name."""
    # &, <, > only: Plotly decodes &lt; and &gt; but shows &quot; as it is; injective, so
    # names stay distinct.
    esc = {op: html.escape(op, quote=False) for op in freq["operators"]}
    stages = [
        {**st, **{key: {esc[op]: n for op, n in st[key].items()} for key in ("all", "front")}}
        for st in freq["stages"]
    ]
    return {**freq, "operators": list(esc.values()), "stages": stages}


def _version(
    df: pd.DataFrame, record: SearchRecord, baselines: Sequence[tuple[str, BaselineRecord]] = ()
) -> str:
    """Changes whenever a trial is added, changes status or gets its accuracy, or a baseline
    is stored."""
    key = [record.n_trials, *df[["number", "status", "val_acc"]].astype(str).values.ravel()]
    key += [f"{label}@{b.created}" for label, b in baselines]
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]


def api_searches(request: Request) -> Response:
    """Every search's summary (:meth:`Store.summaries`), oldest first, with its page's URL."""
    store = store_of(request)
    rows = [{**row, "url": link("/search", name=row["name"])} for row in store.summaries()]
    return SafeJSONResponse({"store": redact_url(store.url), "searches": rows})


_NOTE_COLUMNS = ("duplicate_of", "fail_reason", "retry_of", "prescreen", "start_from")
"""Columns :func:`fusion_nas.store.queries.trial_note` reads."""


def _table_rows(name: str, df: pd.DataFrame) -> list[dict[str, Any]]:
    """The trial table's rows of the trials in ``df``, by number.

    Only the table's and the note's columns are read (10,000 rows in a fraction of a second).
    """
    df = df.sort_values("number")
    shown = [df[key].tolist() for key in _TABLE_COLUMNS]
    notes = [df[key].tolist() for key in _NOTE_COLUMNS]
    trial_url = link("/trial", search=name, number=0)[: -len("0")]  # ...&number=
    rows = []
    for values, extra in zip(zip(*shown), zip(*notes)):
        item = dict(zip(_TABLE_COLUMNS, values))
        item["note"] = _note(dict(zip(_NOTE_COLUMNS, extra)))
        item["url"] = f"{trial_url}{int(item['number'])}"
        rows.append(item)
    return rows


def api_search(request: Request) -> Response:
    """Summary, figures and trial table of one search.

    Query parameters besides ``name``: ``since`` (a version: answer ``unchanged`` if it is
    still current); ``after=N`` and ``running=3,7`` (the page holds trials ``0..N`` and shows
    3 and 7 as running: only trials numbered above N and those two come back, ``partial`` is
    true, and ``front`` lists the numbers now on the front, for the rows already held);
    ``page`` and ``size`` (from 0: only that page of the table, ``total`` rows in all).
    """
    name = query_param(request, "name")
    store = store_of(request)
    search = stored_search(store, name)
    df, record = store.search_frame(search), search.record
    baselines = store.baselines_for(search)
    version = _version(df, record, baselines)
    if request.query_params.get("since") == version:
        return SafeJSONResponse({"name": name, "version": version, "unchanged": True})
    after = int_param(request, "after")
    running = set(numbers_param(request, "running"))
    page, size = int_param(request, "page"), int_param(request, "size", PAGE_SIZE)
    if size is None or size < 1 or (page is not None and page < 0):
        raise NotFound("'page' must be 0 or more and 'size' 1 or more")
    summary = search_summary(name, record, df)
    # the page shows which reference its hypervolume has (the list page's shares one)
    summary["hypervolume_label"] = hypervolume_text(summary["hypervolume"], summary["ref_macs"])
    pareto = pareto_figure_data({name: df}, ref_macs=summary["ref_macs"], baselines=baselines)
    curve = hypervolume_curve(df, ref_macs=summary["ref_macs"])
    shown = df
    if after is not None:
        shown = df[(df.number > after) | df.number.isin(running)]
    elif page is not None:
        shown = df.sort_values("number").iloc[page * size : (page + 1) * size]
    knee = pareto["searches"][0]["knee"]
    figures = {
        "pareto": pareto_figure(pareto, title=f"{name}: validation accuracy vs. MACs"),
        "hypervolume": hypervolume_figure(curve),
        "operators": operator_figure(_escaped_operators(operator_frequencies(df))),
    }
    body = {
        "name": name,
        "version": version,
        "unchanged": False,
        "partial": after is not None,
        "total": len(df),
        "summary": {
            **summary,
            "url": link("/search", name=name),
            "knee": None if knee is None else knee["number"],
        },
        "figures": {key: fig.to_plotly_json() for key, fig in figures.items()},
        "trials": _table_rows(name, shown),
        "front": [int(n) for n in df.number[df.on_front.astype(bool)]],
        "baselines": [{k: b[k] for k in _BASELINE_COLUMNS} for b in pareto["baselines"]],
    }
    if page is not None and after is None:
        body.update(page=page, size=size)
    return SafeJSONResponse(body)


def _trial_record(name: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """One trial as the trial page and the JSON download show it."""
    record = {"search": name, **{key: row.get(key) for key in TRIAL_COLUMNS}}
    record["arch"] = row.get("arch") if isinstance(row.get("arch"), Mapping) else None
    record["curve"] = list(row.get("curve") or [])
    return record


def api_trial(request: Request) -> Response:
    """One trial's record, its stages as rows and its validation-curve figure."""
    name, _, row = trial_of(request)
    record = _trial_record(name, row)
    return SafeJSONResponse(
        {
            **record,
            "stages": record["arch"]["stages"] if record["arch"] else [],
            "stage_lines": stage_lines(record["arch"]),
            "search_url": link("/search", name=name),
            "figure": curve_figure(record["curve"]).to_plotly_json(),
        }
    )


_EXPLAINED: OrderedDict[tuple[str, str, int], dict[str, Any]] = OrderedDict()
_EXPLAIN_LOCK = threading.Lock()  # one explanation at a time: it may train a network
_EXPLAIN_CACHE = 16  # explanations kept per process


def _explained(search: StoredSearch, trial: StoredTrial) -> dict[str, Any]:
    """The explanation panel's JSON of a trial, computed once per process and trial."""
    from fusion_nas.analysis.explain import explain_trial
    from fusion_nas.analysis.explain_figures import explain_figures

    key = (search.store.url, search.name, trial.number)
    with _EXPLAIN_LOCK:
        if key in _EXPLAINED:
            _EXPLAINED.move_to_end(key)
            return _EXPLAINED[key]
        expl = explain_trial(search, trial)
        body = {
            "search": search.name,
            "number": trial.number,
            "source": expl.source,
            "accuracy": expl.accuracy,
            "val_samples": expl.val_samples,
            "figures": {k: f.to_plotly_json() for k, f in explain_figures(expl).items()},
        }
        _EXPLAINED[key] = body
        while len(_EXPLAINED) > _EXPLAIN_CACHE:
            _EXPLAINED.popitem(last=False)
        return body


def api_explain(request: Request) -> Response:
    """Fusion weights, cost per stage, Grad-CAM and attention maps of one trial, as figures.

    A trial without trained weights (failed, running) answers 409 with a one-line ``error``.
    """
    from fusion_nas.errors import FusionNasError

    search, trial = stored_trial_of(request)
    try:
        return SafeJSONResponse(_explained(search, trial))
    except FusionNasError as exc:
        return SafeJSONResponse({"error": one_line(exc)}, status_code=409)


# --------------------------------------------------------------------------- downloads


def _attachment(body: str, media_type: str, filename: str) -> Response:
    return Response(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def download_json(request: Request) -> Response:
    """The trial record as an indented JSON file."""
    name, number, row = trial_of(request)
    return _attachment(
        json_text(_trial_record(name, row), indent=2) + "\n",
        "application/json",
        download_filename(name, number, ".json"),
    )


def download_code(request: Request) -> Response:
    """The trial's architecture as standalone PyTorch source; the JSON if export fails."""
    from fusion_nas.deploy.export import export_code

    search, trial = stored_trial_of(request)
    name, number = search.name, trial.number
    if not isinstance(trial.record.arch, Mapping):
        raise NotFound(f"trial {number} of search {name!r} has no architecture")
    meta: dict[str, Any] = {"search": name, "trial": number}
    acc = trial.record.val_acc
    if trial.complete and acc is not None and math.isfinite(float(acc)):
        meta["val_accuracy"] = float(acc)
    try:
        source = export_code(trial.architecture(), search.space, meta=meta)
    except Exception as exc:  # the exporter is optional here: fall back to the JSON
        log.warning("code export of trial %s of %r failed: %s", number, name, one_line(exc))
        return download_json(request)
    return _attachment(
        source, "text/x-python; charset=utf-8", download_filename(name, number, ".py")
    )


def plotly_js(request: Request) -> Response:
    """Plotly.js from the installed plotly package (no CDN)."""
    return Response(
        _plotly_bundle(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@cache
def _plotly_bundle() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")
