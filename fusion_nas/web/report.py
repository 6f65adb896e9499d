"""The offline pages: the Pareto report of ``fusion-nas pareto`` (:func:`report_html`) and the
look inside one trial of ``fusion-nas explain`` (:func:`explain_html`), each one self-contained
HTML file.

Built like every figure: :func:`report_data` gathers plain data (the figure of
:func:`fusion_nas.analysis.figures.pareto_figure` and one table row per search), then
``templates/report.html`` draws it. The page inlines the Plotly.js bundle of the installed
``plotly`` package and carries the figure as inert JSON; its Content-Security-Policy
(:data:`~fusion_nas.web.security.REPORT_CSP`) lets it load nothing, so it opens offline, and
Jinja escapes every name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
from markupsafe import Markup

from fusion_nas.analysis.figures import pareto_figure, pareto_figure_data
from fusion_nas.store.queries import STATUSES, hypervolume_text
from fusion_nas.store.records import BaselineRecord, SearchRecord
from fusion_nas.web.render import render
from fusion_nas.web.security import REPORT_CSP
from fusion_nas.web.serialize import json_text

if TYPE_CHECKING:
    from fusion_nas.analysis.explain import Explanation

__all__ = ["explain_html", "report_data", "report_html"]


def _knee_text(search: Mapping[str, Any]) -> str:
    knee = search["knee"]
    if knee is None:
        return "-"
    point = next(p for p in search["points"] if p["number"] == knee["number"])
    text = f"#{knee['number']}: {knee['val_acc']:.4f} at {knee['macs']:,.0f} MACs"
    return text + " (" + "; ".join(point["stages"]) + ")"


def report_data(
    frames: Mapping[str, pd.DataFrame],
    records: Mapping[str, SearchRecord] | None = None,
    *,
    title: str | None = None,
    baselines: Sequence[tuple[str, BaselineRecord]] | None = None,
) -> dict[str, Any]:
    """What the report shows, as plain data.

    Args:
        frames: search name -> its trials, in the order to list and colour them.
        records: search name -> its record (for the strategy column); optional.
        title: the page's heading; default ``Pareto front: NAME, NAME``.
        baselines: ``(label, record)`` pairs drawn as reference points and listed in a table
            (:meth:`fusion_nas.store.store.Store.baselines_for`); default none.

    Returns:
        ``{"heading", "figure" (go.Figure), "ref_macs", "ref_scope", "statuses", "rows",
        "baselines"}``; a row per search is ``{"name", "color", "strategy", "trials",
        "counts" (status -> number, every status of ``statuses``), "best", "front",
        "hypervolume", "hypervolume_label", "knee"}``, a baseline row ``{"label",
        "description", "macs", "params", "val_acc", "test_acc"}``, numbers formatted as text.
    """
    data = pareto_figure_data(frames, baselines=baselines)
    heading = title or "Pareto front: " + ", ".join(frames)
    scope = "this search" if len(frames) == 1 else "all searches in this report"
    rows = []
    for s in data["searches"]:
        record = (records or {}).get(s["name"])
        best = max((p["val_acc"] for p in s["points"]), default=None)
        rows.append(
            {
                "name": s["name"],
                "color": s["color"],
                "strategy": record.strategy if record is not None else "-",
                "trials": s["n_trials"],
                "counts": {status: s["counts"].get(status, 0) for status in STATUSES},
                "best": "-" if best is None else f"{best:.4f}",
                "front": len(s["front"]),
                "hypervolume": f"{s['hypervolume']:.4f}",
                "hypervolume_label": hypervolume_text(s["hypervolume"], s["ref_macs"], scope),
                "knee": _knee_text(s),
            }
        )
    baseline_rows = [
        {
            "label": b["label"],
            "description": b["description"],
            "macs": _fmt(b["macs"], "{:,}"),
            "params": _fmt(b["params"], "{:,}"),
            "val_acc": _fmt(b["val_acc"], "{:.4f}") + f" ({b['proxy_epochs']} epochs)",
            "test_acc": _fmt(b["test_acc"], "{:.4f}") + f" ({b['epochs']} epochs)",
        }
        for b in data["baselines"]
    ]
    return {
        "heading": heading,
        "figure": pareto_figure(data, title=heading),
        "ref_macs": data["ref_macs"],
        "ref_scope": scope,
        "statuses": list(STATUSES),
        "rows": rows,
        "baselines": baseline_rows,
    }


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def report_html(
    frames: Mapping[str, pd.DataFrame],
    records: Mapping[str, SearchRecord] | None = None,
    *,
    title: str | None = None,
    plotly_js: str | None = None,
    baselines: Sequence[tuple[str, BaselineRecord]] | None = None,
) -> str:
    """The report of :func:`report_data` as one self-contained HTML page.

    ``plotly_js`` is the Plotly.js bundle to inline; default the one of the installed
    ``plotly`` package (``plotly.offline.get_plotlyjs()``).
    """
    if plotly_js is None:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()
    data = report_data(frames, records, title=title, baselines=baselines)
    return render(
        "report.html",
        csp=REPORT_CSP,
        heading=data["heading"],
        ref_macs=f"{data['ref_macs']:,.0f}",
        ref_scope=data["ref_scope"],
        statuses=data["statuses"],
        rows=data["rows"],
        baselines=data["baselines"],
        # Both go into <script> elements as they are: the JSON has no "<", ">" or "&".
        figure_json=Markup(json_text(data["figure"].to_plotly_json())),
        plotly_js=Markup(plotly_js),
    )


def explain_html(expl: Explanation, *, title: str, plotly_js: str | None = None) -> str:
    """``expl`` as one self-contained HTML page (Plotly.js inlined; nothing is fetched).

    The figures are those of :func:`fusion_nas.analysis.explain_figures.explain_figures`;
    ``plotly_js`` is the bundle to inline, default the one of the installed ``plotly``.
    """
    # Here, not at the top: explain_figures imports the explainer, and with it torch.
    from fusion_nas.analysis.explain_figures import explain_figures

    if plotly_js is None:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()
    figures = {k: fig.to_plotly_json() for k, fig in explain_figures(expl).items()}
    return render(
        "explain.html",
        csp=REPORT_CSP,
        heading=title,
        source=expl.source,
        arch_desc=expl.meta.get("arch_desc") or "",
        accuracy="-" if expl.accuracy is None else f"{expl.accuracy:.4f}",
        val_samples=expl.val_samples,
        costs=expl.costs,
        total_macs=sum(c.macs for c in expl.costs),
        total_params=sum(c.params for c in expl.costs),
        # Inert JSON in a <script> element: json_text escapes "<", ">" and "&".
        figures_json=Markup(json_text(figures)),
        plotly_js=Markup(plotly_js),
    )
