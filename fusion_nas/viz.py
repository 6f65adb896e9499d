"""Figures of searches: first plain data (lists and dicts), then Plotly figure JSON.

Every figure is built in two steps, as in ``optuna.visualization``:

1. a ``*_data`` / ``*_curve`` / ``*_frequencies`` function turns trials into plain data (what is
   a point, what is on the front, which point is the knee, ...); tests check this data;
2. a ``*_figure`` function draws that data as a Plotly figure dict (``{"data", "layout"}``),
   JSON-able as is, so the same figure serves the offline HTML report of ``fusion-nas pareto``
   and the dashboard of ``fusion-nas serve`` (which hands it to ``Plotly.react``).

Plotly renders a small HTML subset in trace names and hover text, so every user-provided string
(search names, failure messages) is passed through :func:`html.escape` before it reaches a
figure: Plotly then shows it literally, as text.
"""

from __future__ import annotations

import colorsys
import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from fusion_nas.ops.registry import list_ops
from fusion_nas.pareto import default_ref_macs, front_indices, hypervolume, knee_index

__all__ = [
    "PALETTE",
    "curve_figure",
    "hypervolume_curve",
    "hypervolume_figure",
    "operator_figure",
    "operator_frequencies",
    "pareto_figure",
    "pareto_figure_data",
    "report_html",
    "search_color",
    "stage_lines",
]

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
)
"""Colours of the first ten searches in one figure (more get evenly spread hues)."""

OFF_FRONT = ("failed", "infeasible", "running")
"""Trial statuses drawn apart from the accuracy/MACs plane (they have no accuracy)."""

_RUG_LABEL = {"failed": "failed", "infeasible": "over budget", "running": "running"}
_RUG_SYMBOL = {"failed": "x", "infeasible": "triangle-down", "running": "circle-open"}
_OPERATOR_ORDER = ("conv", "attention", "parallel", "gated")


# --------------------------------------------------------------------------- helpers


def search_color(index: int) -> str:
    """Distinct colour of the ``index``-th search of a figure (stable for the same index)."""
    if index < len(PALETTE):
        return PALETTE[index]
    hue = (index * 0.618033988749895) % 1.0  # golden-ratio steps keep hues apart
    r, g, b = colorsys.hls_to_rgb(hue, 0.45, 0.65)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _num(value: Any) -> float | None:
    """``value`` as a float, or ``None`` for missing/NaN/non-numbers."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _int(value: Any) -> int | None:
    out = _num(value)
    return None if out is None or math.isinf(out) else int(out)


def _fmt_int(value: Any) -> str:
    out = _int(value)
    return "unknown" if out is None else f"{out:,}"


def _compact(value: float) -> str:
    """``2200640`` -> ``2.2M``."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _stages(arch: Any) -> list[dict[str, Any]]:
    if isinstance(arch, Mapping) and isinstance(arch.get("stages"), list):
        return [s for s in arch["stages"] if isinstance(s, Mapping)]
    return []


def stage_lines(arch: Mapping[str, Any] | None) -> list[str]:
    """One plain-text line per stage: operator, kernel, heads, attention, width, depth.

    Example: ``stage 1: gated, kernel 3, heads 2, window, width 16``. The values come from the
    stored architecture; the caller escapes the lines for HTML.
    """
    lines = []
    for i, st in enumerate(_stages(arch)):
        parts = [str(st.get("operator", "?"))]
        if st.get("kernel") is not None:
            parts.append(f"kernel {st['kernel']}")
        if st.get("heads") is not None:
            parts.append(f"heads {st['heads']}")
        if st.get("attention") is not None:
            parts.append(str(st["attention"]))
        if st.get("width") is not None:
            parts.append(f"width {st['width']}")
        if st.get("depth") not in (None, 1):
            parts.append(f"depth {st['depth']}")
        lines.append(f"stage {i}: " + ", ".join(parts))
    return lines


def _hover(search: str, row: Mapping[str, Any], note: str | None = None) -> str:
    """Hover text of one trial (Plotly's HTML subset; user text escaped)."""
    e = html.escape
    acc = _num(row.get("val_acc"))
    lines = [f"<b>{e(search)}</b> trial #{_int(row.get('number'))}"]
    if note:
        lines[0] += f" ({e(note)})"
    lines += [e(line) for line in stage_lines(row.get("arch"))]
    lines.append(f"MACs {_fmt_int(row.get('macs'))}, params {_fmt_int(row.get('params'))}")
    lines.append(f"val acc {acc:.4f}" if acc is not None else f"status {e(str(row['status']))}")
    reason = row.get("fail_reason")
    if isinstance(reason, str) and reason and row.get("status") != "complete":
        short = reason if len(reason) <= 120 else reason[:117] + "..."
        lines.append(e(short))
    return "<br>".join(lines)


# --------------------------------------------------------------------------- Pareto plot


def pareto_figure_data(
    frames: Mapping[str, pd.DataFrame], *, ref_macs: float | None = None
) -> dict[str, Any]:
    """The Pareto plot of one or more searches as plain data.

    Args:
        frames: search name -> its trials (:meth:`fusion_nas.store.Store.trials`), in the order
            the searches should be listed and coloured.
        ref_macs: hypervolume reference MACs shared by all searches; default 10x the largest
            MACs of any complete trial.

    Returns:
        ``{"searches": [...], "ref_macs": float, "macs_range": [lo, hi] | None}``; each search
        is ``{"name", "color", "n_trials", "points", "front", "knee", "failed", "infeasible",
        "running", "hypervolume"}``. ``points`` holds the complete trials (accuracy and MACs),
        the three status lists the others; together they hold every trial exactly once. Each
        entry is ``{"number", "status", "val_acc", "macs", "params", "on_front", "knee",
        "stages", "hover"}`` (``stages``: :func:`stage_lines`, plain text).
        ``front`` lists the front's trial numbers by MACs ascending (accuracy
        non-decreasing); ``knee`` is ``{"number", "val_acc", "macs"}`` or ``None``.
    """
    all_macs = [
        float(m)
        for df in frames.values()
        for m in df.loc[df.status == "complete", "macs"]
        if _num(m) is not None
    ]
    ref = ref_macs if ref_macs is not None else default_ref_macs(all_macs)
    known = [
        float(m) for df in frames.values() for m in df["macs"] if _num(m) is not None and m > 0
    ]
    searches = []
    for index, (name, df) in enumerate(frames.items()):
        rows = df.sort_values("number").to_dict("records")
        ok = [r for r in rows if r["status"] == "complete" and _num(r["macs"]) is not None]
        acc = [float(r["val_acc"]) for r in ok]
        macs = [float(r["macs"]) for r in ok]
        front = front_indices(acc, macs) if ok else []
        knee = knee_index(acc, macs) if ok else None
        on_front = set(front)
        points = []
        for i, r in enumerate(ok):
            note = "knee point" if i == knee else ("Pareto-optimal" if i in on_front else None)
            points.append(_entry(name, r, on_front=i in on_front, knee=i == knee, note=note))
        by_status: dict[str, list[dict[str, Any]]] = {s: [] for s in OFF_FRONT}
        plotted = {int(r["number"]) for r in ok}
        for r in rows:
            if int(r["number"]) in plotted:
                continue
            status = r["status"] if r["status"] in OFF_FRONT else "failed"
            by_status[status].append(_entry(name, r, note=_RUG_LABEL[status]))
        searches.append(
            {
                "name": name,
                "color": search_color(index),
                "n_trials": len(rows),
                "points": points,
                "front": [int(ok[i]["number"]) for i in front],
                "knee": None
                if knee is None
                else {"number": int(ok[knee]["number"]), "val_acc": acc[knee], "macs": macs[knee]},
                **by_status,
                "hypervolume": hypervolume(acc, macs, ref) if ok else 0.0,
            }
        )
    return {
        "searches": searches,
        "ref_macs": float(ref),
        "macs_range": [min(known), max(known)] if known else None,
    }


def _entry(
    search: str,
    row: Mapping[str, Any],
    *,
    on_front: bool = False,
    knee: bool = False,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "number": int(row["number"]),
        "status": str(row["status"]),
        "val_acc": _num(row.get("val_acc")),
        "macs": _int(row.get("macs")),
        "params": _int(row.get("params")),
        "on_front": on_front,
        "knee": knee,
        "stages": stage_lines(row.get("arch")),
        "hover": _hover(search, row, note),
    }


def pareto_figure(data: Mapping[str, Any], *, title: str | None = None) -> dict[str, Any]:
    """Draw :func:`pareto_figure_data` as a Plotly figure dict.

    Complete trials are markers (MACs on a log x axis, validation accuracy on y; front points
    outlined, the knee a star with an arrow), the front a step line (``line.shape = "hv"``),
    and failed, over-budget and running trials sit in a strip below the plot at their MACs
    (left edge when unknown). One colour per search. Every marker's ``customdata`` is
    ``[trial number]`` and its trace's ``meta`` is ``{"search": name, "role": ...}``, so a
    click handler can open the trial. Exactly one marker is drawn per trial.
    """
    searches = data["searches"]
    lo = (data.get("macs_range") or [1.0, 1.0])[0]
    traces: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    has_rug = any(s[k] for s in searches for k in OFF_FRONT)
    for s in searches:
        name, color = s["name"], s["color"]
        label = html.escape(name)
        pts = s["points"]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"{label}: trials",
                "legendgroup": f"s{searches.index(s)}",
                "x": [p["macs"] for p in pts],
                "y": [p["val_acc"] for p in pts],
                "customdata": [[p["number"]] for p in pts],
                "hovertext": [p["hover"] for p in pts],
                "hoverinfo": "text",
                "meta": {"search": name, "role": "trials"},
                "marker": {
                    "color": color,
                    "size": [16 if p["knee"] else 10 if p["on_front"] else 8 for p in pts],
                    "symbol": ["star" if p["knee"] else "circle" for p in pts],
                    "opacity": [1.0 if p["on_front"] else 0.55 for p in pts],
                    "line": {
                        "color": "#222222",
                        "width": [1.5 if p["on_front"] else 0.0 for p in pts],
                    },
                },
            }
        )
        by_number = {p["number"]: p for p in pts}
        front = [by_number[n] for n in s["front"]]
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"{label}: Pareto front",
                "legendgroup": f"s{searches.index(s)}",
                "x": [p["macs"] for p in front],
                "y": [p["val_acc"] for p in front],
                "line": {"color": color, "shape": "hv", "width": 2},
                "hoverinfo": "skip",
                "meta": {"search": name, "role": "front"},
            }
        )
        if s["knee"] is not None:
            annotations.append(
                {
                    "x": math.log10(max(s["knee"]["macs"], 1.0)),
                    "y": s["knee"]["val_acc"],
                    "xref": "x",
                    "yref": "y",
                    "text": f"knee #{s['knee']['number']}",
                    "showarrow": True,
                    "arrowhead": 2,
                    "ax": 30,
                    "ay": 30,
                    "font": {"color": color},
                    "arrowcolor": color,
                }
            )
        for status in OFF_FRONT:
            rug = s[status]
            if not rug:
                continue
            traces.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "name": f"{label}: {_RUG_LABEL[status]}",
                    "legendgroup": f"s{searches.index(s)}",
                    "x": [p["macs"] if p["macs"] else lo for p in rug],
                    "y": [_RUG_LABEL[status]] * len(rug),
                    "customdata": [[p["number"]] for p in rug],
                    "hovertext": [p["hover"] for p in rug],
                    "hoverinfo": "text",
                    "xaxis": "x",
                    "yaxis": "y2",
                    "meta": {"search": name, "role": status},
                    "marker": {"color": color, "size": 9, "symbol": _RUG_SYMBOL[status]},
                }
            )
    layout: dict[str, Any] = {
        "title": {"text": html.escape(title) if title else "Validation accuracy vs. MACs"},
        "xaxis": {"type": "log", "title": {"text": "MACs per sample (log scale)"}},
        "yaxis": {"title": {"text": "validation accuracy"}, "domain": [0.22 if has_rug else 0, 1]},
        "hovermode": "closest",
        "legend": {"orientation": "h", "y": -0.18},
        "annotations": annotations,
        "margin": {"l": 70, "r": 20, "t": 50, "b": 40},
        "uirevision": "pareto",
        "template": "plotly_white",
    }
    if has_rug:
        layout["xaxis"]["anchor"] = "y2"
        layout["yaxis2"] = {
            "domain": [0, 0.14],
            "type": "category",
            "categoryorder": "array",
            "categoryarray": [_RUG_LABEL[s] for s in OFF_FRONT],
            "fixedrange": True,
        }
    return {"data": traces, "layout": layout}


# --------------------------------------------------------------------------- hypervolume


def hypervolume_curve(df: pd.DataFrame, ref_macs: float | None = None) -> dict[str, Any]:
    """Hypervolume after each trial: the front of the complete trials among the first k.

    One reference point for the whole curve (accuracy 0, ``ref_macs``; default 10x the largest
    MACs of the search's complete trials), so the curve never decreases.

    Returns:
        ``{"numbers": [...], "hypervolume": [...], "ref_macs": float}``, one entry per trial in
        trial-number order (a failed trial repeats the previous value).
    """
    rows = df.sort_values("number")
    ok = rows[(rows.status == "complete") & rows.macs.notna()]
    ref = ref_macs if ref_macs is not None else default_ref_macs([float(m) for m in ok.macs])
    numbers, values = [], []
    acc: list[float] = []
    macs: list[float] = []
    for row in rows.itertuples(index=False):
        if row.status == "complete" and _num(row.macs) is not None:
            acc.append(float(row.val_acc))
            macs.append(float(row.macs))
        numbers.append(int(row.number))
        values.append(hypervolume(acc, macs, ref) if acc else 0.0)
    return {"numbers": numbers, "hypervolume": values, "ref_macs": float(ref)}


def hypervolume_figure(curve: Mapping[str, Any]) -> dict[str, Any]:
    """Draw :func:`hypervolume_curve` as a step line over trial numbers."""
    ref = curve["ref_macs"]
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "x": list(curve["numbers"]),
                "y": list(curve["hypervolume"]),
                "line": {"shape": "hv", "color": PALETTE[0]},
                "marker": {"size": 5},
                "hovertemplate": "after trial #%{x}: %{y:.4f}<extra></extra>",
                "name": "hypervolume",
            }
        ],
        "layout": {
            "title": {"text": f"Hypervolume over trials (reference: acc 0, {_compact(ref)} MACs)"},
            "xaxis": {"title": {"text": "trial number"}},
            "yaxis": {"title": {"text": "hypervolume (accuracy x log10 MACs)"}},
            "margin": {"l": 70, "r": 20, "t": 50, "b": 50},
            "uirevision": "hypervolume",
            "template": "plotly_white",
        },
    }


# --------------------------------------------------------------------------- operators


def operator_frequencies(df: pd.DataFrame, n_stages: int | None = None) -> dict[str, Any]:
    """How often each operator appears in each stage, on the front and in all trials.

    "All trials" are those with a recorded architecture (any status); "front" the complete
    trials on the Pareto front (``df.on_front``).

    Returns:
        ``{"operators": [...], "n_all": int, "n_front": int, "stages": [{"stage": i,
        "all": {op: count}, "front": {op: count}}, ...]}``; per stage, the ``all`` counts sum
        to the trials whose architecture has that stage, the ``front`` counts likewise.
    """
    archs = [(r.arch, bool(r.on_front)) for r in df.itertuples(index=False) if _stages(r.arch)]
    if n_stages is None:
        n_stages = max((len(_stages(a)) for a, _ in archs), default=0)
    seen = [str(st.get("operator")) for a, _ in archs for st in _stages(a)]
    operators = list(dict.fromkeys([*_OPERATOR_ORDER, *list_ops(), *seen]))
    stages = []
    for i in range(n_stages):
        counts = {"all": dict.fromkeys(operators, 0), "front": dict.fromkeys(operators, 0)}
        for arch, front in archs:
            st = _stages(arch)
            if i >= len(st):
                continue
            op = str(st[i].get("operator"))
            counts["all"][op] += 1
            if front:
                counts["front"][op] += 1
        stages.append({"stage": i, **counts})
    return {
        "operators": operators,
        "n_all": len(archs),
        "n_front": sum(front for _, front in archs),
        "stages": stages,
    }


def operator_figure(freq: Mapping[str, Any]) -> dict[str, Any]:
    """Draw :func:`operator_frequencies` as grouped bars: share per (stage, operator)."""
    x_stage, x_op = [], []
    share: dict[str, list[float]] = {"all": [], "front": []}
    count: dict[str, list[int]] = {"all": [], "front": []}
    for st in freq["stages"]:
        for op in freq["operators"]:
            x_stage.append(f"stage {st['stage']}")
            x_op.append(op)
            for key in ("all", "front"):
                total = sum(st[key].values())
                share[key].append(st[key][op] / total if total else 0.0)
                count[key].append(st[key][op])
    labels = {
        "all": f"all trials ({freq['n_all']})",
        "front": f"Pareto front ({freq['n_front']})",
    }
    colors = {"all": "#9aa5b1", "front": PALETTE[0]}
    return {
        "data": [
            {
                "type": "bar",
                "name": labels[key],
                "x": [x_stage, x_op],
                "y": share[key],
                "customdata": count[key],
                "marker": {"color": colors[key]},
                "hovertemplate": "%{x}: %{y:.0%} (%{customdata})<extra>" + labels[key] + "</extra>",
            }
            for key in ("all", "front")
        ],
        "layout": {
            "title": {"text": "Operators per stage: Pareto front vs. all trials"},
            "barmode": "group",
            "yaxis": {"title": {"text": "share of trials"}, "tickformat": ".0%", "range": [0, 1]},
            "legend": {"orientation": "h", "y": -0.25},
            "margin": {"l": 70, "r": 20, "t": 50, "b": 40},
            "uirevision": "operators",
            "template": "plotly_white",
        },
    }


# --------------------------------------------------------------------------- one trial


def curve_figure(curve: Sequence[float] | None) -> dict[str, Any]:
    """Per-epoch validation accuracy of one trial as a line (epochs counted from 1)."""
    ys = [_num(v) for v in (curve or [])]
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "x": list(range(1, len(ys) + 1)),
                "y": ys,
                "name": "validation accuracy",
                "line": {"color": PALETTE[0]},
                "hovertemplate": "epoch %{x}: %{y:.4f}<extra></extra>",
            }
        ],
        "layout": {
            "title": {"text": "Validation accuracy per epoch"},
            "xaxis": {"title": {"text": "epoch"}, "dtick": 1},
            "yaxis": {"title": {"text": "validation accuracy"}},
            "margin": {"l": 70, "r": 20, "t": 50, "b": 50},
            "template": "plotly_white",
        },
    }


# --------------------------------------------------------------------------- HTML report


def _script_json(value: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def report_html(
    frames: Mapping[str, pd.DataFrame],
    *,
    plotly_js: str,
    metas: Mapping[str, Mapping[str, Any]] | None = None,
    title: str | None = None,
) -> str:
    """One self-contained HTML page: the Pareto plot of ``frames`` and a table per search.

    ``plotly_js`` is the Plotly.js bundle to inline (``plotly.offline.get_plotlyjs()``), so the
    page loads nothing from the network; a Content-Security-Policy meta tag forbids it anyway.
    The figure travels as inert JSON; user text is HTML-escaped.
    """
    data = pareto_figure_data(frames)
    names = list(frames)
    heading = title or "Pareto front: " + ", ".join(names)
    figure = pareto_figure(data, title=heading)
    e = html.escape
    rows = []
    for s in data["searches"]:
        meta = (metas or {}).get(s["name"], {})
        best = max((p["val_acc"] for p in s["points"]), default=None)
        knee = s["knee"]
        knee_text = "-"
        if knee is not None:
            point = next(p for p in s["points"] if p["number"] == knee["number"])
            knee_text = f"#{knee['number']}: {knee['val_acc']:.4f} at {knee['macs']:,.0f} MACs"
            knee_text += " (" + "; ".join(point["stages"]) + ")"
        cells = [
            f'<span class="swatch" style="background:{s["color"]}"></span>{e(s["name"])}',
            e(str(meta.get("strategy", "-"))),
            str(s["n_trials"]),
            str(len(s["failed"])),
            str(len(s["infeasible"])),
            "-" if best is None else f"{best:.4f}",
            str(len(s["front"])),
            f"{s['hypervolume']:.4f}",
            e(knee_text),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    csp = (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; "
        "form-action 'none'"
    )
    head = (
        "search,strategy,trials,failed,over budget,best val acc,front size,hypervolume,knee point"
    ).split(",")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(heading)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
#pareto {{ width: 100%; height: 640px; }}
table {{ border-collapse: collapse; margin-top: 1rem; font-size: 0.9rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; }}
.swatch {{ display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; }}
.note {{ color: #666; font-size: 0.85rem; }}
</style>
</head>
<body>
<h1>{e(heading)}</h1>
<div id="pareto"></div>
<p class="note">Accuracy is validation accuracy of the proxy training; MACs per sample are
reported as FLOPs. Hypervolumes share one reference point (accuracy 0,
{data["ref_macs"]:,.0f} MACs) in (accuracy, log10 MACs) space. Failed, over-budget and
running trials are drawn in the strip below the plot.</p>
<table>
<thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
<script type="application/json" id="figure-data">{_script_json(figure)}</script>
<script>{plotly_js}</script>
<script>
(function () {{
  var fig = JSON.parse(document.getElementById("figure-data").textContent);
  Plotly.newPlot("pareto", fig.data, fig.layout, {{responsive: true, displaylogo: false}});
}})();
</script>
</body>
</html>
"""
