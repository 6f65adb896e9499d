"""Figures of searches as ``plotly.graph_objects.Figure``: first plain data, then the figure.

Every figure is built in two steps, as in ``optuna.visualization``:

1. a data function (:func:`pareto_figure_data`, :func:`hypervolume_curve`,
   :func:`operator_frequencies`) turns trials into plain data: what is a point, what is on the
   front, which point is the knee; tests check this data;
2. a ``*_figure`` function draws that data as a :class:`plotly.graph_objects.Figure`:
   ``fig.show()`` in a notebook, ``fig.to_plotly_json()`` for the dashboard of
   ``fusion-nas serve`` (handed to ``Plotly.react``) and for the offline report of
   ``fusion-nas pareto``.

    frames = {name: store.trials(name) for name in ("nsga2", "random")}
    pareto_figure(pareto_figure_data(frames)).show()

Plotly renders a small HTML subset in trace names and hover text, so every user-provided string
(search names, failure messages) is passed through :func:`html.escape` before it reaches a
figure: Plotly then shows it literally, as text. The operators of the "operators per stage"
chart are those of the registry (:func:`fusion_nas.model.registry.list_ops`), so a new operator
shows up without an edit here.

Baselines (:mod:`fusion_nas.analysis.baselines`) join the Pareto plot as labelled reference points:
pass
``baselines=store.baselines_for(search_record)`` to :func:`pareto_figure_data`. Their proxy
validation accuracy sits on the same axis as the trials' (same protocol); they take no part in
the front, the knee or the hypervolume.
"""

from __future__ import annotations

import colorsys
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from fusion_nas.model.registry import list_ops
from fusion_nas.pareto import front_indices, hypervolume, knee_index
from fusion_nas.store.queries import reference_macs, search_hypervolume, status_counts
from fusion_nas.store.records import BaselineRecord, TrialStatus

__all__ = [
    "BASELINE_COLOR",
    "PALETTE",
    "RUG_ROWS",
    "curve_figure",
    "hypervolume_curve",
    "hypervolume_figure",
    "operator_figure",
    "operator_frequencies",
    "pareto_figure",
    "pareto_figure_data",
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

_COMPLETE = TrialStatus.COMPLETE.value
RUG_ROWS = tuple(s.value for s in TrialStatus if s is not TrialStatus.COMPLETE)
"""Rows of the strip under the Pareto plot: trials without a plotted accuracy, one row per
status (failed, infeasible, interrupted, stopped, running), each named by its status.

A status this version does not know goes to the ``failed`` row, its own status in the hover.
"""

BASELINE_COLOR = "#222222"
"""Colour of the baselines' markers and labels (searches take :data:`PALETTE`)."""

_RUG_LABEL = {s: s for s in RUG_ROWS}  # one vocabulary: a row is named by its status
_RUG_SYMBOL = dict(
    zip(RUG_ROWS, ("x", "triangle-down", "x-open", "square-open", "circle-open"), strict=True)
)
_TEMPLATE = "plotly_white"


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
    """One plain-text line per stage: operator, kernel, heads, attention, MLP ratio, width,
    depth, downsampling (each where the architecture holds it).

    Example: ``stage 1: gated, kernel 3, heads 2, window, mlp 0, width 16, down conv``; a
    skipped stage is ``stage 1: skipped``. The values come from the stored architecture; the
    caller escapes the lines for HTML.
    """
    lines = []
    for i, st in enumerate(_stages(arch)):
        if st.get("depth") == 0:
            lines.append(f"stage {i}: skipped")
            continue
        parts = [str(st.get("operator", "?"))]
        if st.get("kernel") is not None:
            parts.append(f"kernel {st['kernel']}")
        if st.get("heads") is not None:
            parts.append(f"heads {st['heads']}")
        if st.get("attention") is not None:
            parts.append(str(st["attention"]))
        ratio = _num(st.get("mlp_ratio"))
        if ratio is not None:
            parts.append(f"mlp {ratio:g}")
        if st.get("width") is not None:
            parts.append(f"width {st['width']}")
        if st.get("depth") not in (None, 1):
            parts.append(f"depth {st['depth']}")
        if st.get("downsample") is not None:
            parts.append(f"down {st['downsample']}")
        lines.append(f"stage {i}: " + ", ".join(parts))
    return lines


def _hover(
    search: str, row: Mapping[str, Any], note: str | None = None, stages: list[str] | None = None
) -> str:
    """Hover text of one trial (Plotly's HTML subset; user text escaped); ``stages``:
    :func:`stage_lines` of its architecture, if already made."""
    e = html.escape
    acc = _num(row.get("val_acc"))
    lines = [f"<b>{e(search)}</b> trial #{_int(row.get('number'))}"]
    if note:
        lines[0] += f" ({e(note)})"
    stages = stage_lines(row.get("arch")) if stages is None else stages
    lines += [e(line) for line in stages]
    lines.append(f"MACs {_fmt_int(row.get('macs'))}, params {_fmt_int(row.get('params'))}")
    lines.append(f"val acc {acc:.4f}" if acc is not None else f"status {e(str(row['status']))}")
    reason = row.get("fail_reason")
    if isinstance(reason, str) and reason and row.get("status") != _COMPLETE:
        short = reason if len(reason) <= 120 else reason[:117] + "..."
        lines.append(e(short))
    return "<br>".join(lines)


def _layout(title: str, revision: str | None, **axes: Any) -> dict[str, Any]:
    """The layout every figure shares: title, margins, white template, kept zoom on update."""
    layout: dict[str, Any] = {
        "title": {"text": title},
        "margin": {"l": 70, "r": 20, "t": 50, "b": 50},
        "template": _TEMPLATE,
        **axes,
    }
    if revision is not None:
        layout["uirevision"] = revision  # Plotly.react keeps the user's zoom while polling
    return layout


# --------------------------------------------------------------------------- Pareto plot


def pareto_figure_data(
    frames: Mapping[str, pd.DataFrame],
    *,
    ref_macs: float | None = None,
    baselines: Sequence[tuple[str, BaselineRecord]] | None = None,
) -> dict[str, Any]:
    """The Pareto plot of one or more searches as plain data.

    Args:
        frames: search name -> its trials (:meth:`fusion_nas.store.store.Store.trials`), in the
        order
            the searches should be listed and coloured.
        ref_macs: hypervolume reference MACs shared by all searches; default
            :func:`fusion_nas.store.queries.reference_macs` of all frames.
        baselines: ``(label, record)`` pairs to draw as reference points
            (:meth:`fusion_nas.store.store.Store.baselines_for`); default none.

    Returns:
        ``{"searches": [...], "baselines": [...], "ref_macs": float, "macs_range": [lo, hi] |
        None}``; a baseline is ``{"label", "name", "description", "val_acc", "test_acc",
        "macs", "params", "epochs", "proxy_epochs", "stages", "hover"}`` (those without a
        validation accuracy are left out; they do not change the reference). Each search
        is ``{"name", "color", "n_trials", "counts", "points", "front", "knee", one list per
        :data:`RUG_ROWS` status, "hypervolume", "ref_macs"}``. ``points`` holds the complete
        trials (accuracy and MACs), the :data:`RUG_ROWS` lists the others; together they hold
        every trial exactly once. ``counts`` is
        :func:`fusion_nas.store.queries.status_counts`; ``hypervolume`` is
        :func:`fusion_nas.store.queries.search_hypervolume` at ``ref_macs``. Each entry is
        ``{"number", "status", "val_acc", "macs", "params", "on_front",
        "knee", "stages", "hover"}`` (``stages``: :func:`stage_lines`, plain text).
        ``front`` lists the front's trial numbers by MACs ascending (accuracy
        non-decreasing); ``knee`` is ``{"number", "val_acc", "macs"}`` or ``None``.
    """
    ref = ref_macs if ref_macs is not None else reference_macs(frames)
    known = [
        float(m) for df in frames.values() for m in df["macs"] if _num(m) is not None and m > 0
    ]
    searches = [_search_data(i, name, df, ref) for i, (name, df) in enumerate(frames.items())]
    return {
        "searches": searches,
        "baselines": [_baseline(label, rec) for label, rec in baselines or () if _plottable(rec)],
        "ref_macs": float(ref),
        "macs_range": [min(known), max(known)] if known else None,
    }


def _search_data(index: int, name: str, df: pd.DataFrame, ref: float) -> dict[str, Any]:
    """One search of :func:`pareto_figure_data`."""
    rows = df[list(_POINT_COLUMNS)].sort_values("number").to_dict("records")
    ok = [r for r in rows if r["status"] == _COMPLETE and _num(r["macs"]) is not None]
    acc = [float(r["val_acc"]) for r in ok]
    macs = [float(r["macs"]) for r in ok]
    front = front_indices(acc, macs) if ok else []
    knee = knee_index(acc, macs) if ok else None
    on_front = set(front)
    points = []
    for i, r in enumerate(ok):
        note = "knee point" if i == knee else ("Pareto-optimal" if i in on_front else None)
        points.append(_entry(name, r, on_front=i in on_front, knee=i == knee, note=note))
    rug: dict[str, list[dict[str, Any]]] = {s: [] for s in RUG_ROWS}
    plotted = {int(r["number"]) for r in ok}
    for r in rows:
        if int(r["number"]) in plotted:
            continue
        status = str(r["status"])
        row = status if status in RUG_ROWS else TrialStatus.FAILED.value
        rug[row].append(_entry(name, r, note=status))
    hv, ref = search_hypervolume(df, ref)
    return {
        "name": name,
        "color": search_color(index),
        "n_trials": len(rows),
        "counts": status_counts(df),
        "points": points,
        "front": [int(ok[i]["number"]) for i in front],
        "knee": None
        if knee is None
        else {"number": int(ok[knee]["number"]), "val_acc": acc[knee], "macs": macs[knee]},
        **rug,
        "hypervolume": hv,
        "ref_macs": ref,
    }


_POINT_COLUMNS = ("number", "status", "val_acc", "macs", "params", "arch", "fail_reason")
"""The trial columns a point of the Pareto plot shows (:func:`_entry`, :func:`_hover`)."""


def _entry(
    search: str,
    row: Mapping[str, Any],
    *,
    on_front: bool = False,
    knee: bool = False,
    note: str | None = None,
) -> dict[str, Any]:
    stages = stage_lines(row.get("arch"))
    return {
        "number": int(row["number"]),
        "status": str(row["status"]),
        "val_acc": _num(row.get("val_acc")),
        "macs": _int(row.get("macs")),
        "params": _int(row.get("params")),
        "on_front": on_front,
        "knee": knee,
        "stages": stages,
        "hover": _hover(search, row, note, stages),
    }


def _plottable(rec: BaselineRecord) -> bool:
    macs = _num(rec.macs)
    return _num(rec.val_acc) is not None and macs is not None and macs > 0


def _baseline(label: str, rec: BaselineRecord) -> dict[str, Any]:
    """One baseline point of :func:`pareto_figure_data`, with its hover text."""
    e = html.escape
    proxy_epochs = _int((rec.proxy or {}).get("epochs"))
    test = _num(rec.test_acc)
    stages = stage_lines(rec.arch)
    lines = [f"<b>{e(label)}</b> (baseline)", e(rec.description)]
    lines += [e(line) for line in stages]
    lines.append(f"MACs {_fmt_int(rec.macs)}, params {_fmt_int(rec.params)}")
    lines.append(f"val acc {float(rec.val_acc):.4f} (proxy, {proxy_epochs} epochs)")
    if test is not None:
        lr = f", lr {rec.lr:g}" if rec.lr is not None else ""
        lines.append(f"test acc {test:.4f} (retrained {rec.epochs} epochs{lr})")
    return {
        "label": label,
        "name": rec.name,
        "description": rec.description,
        "val_acc": float(rec.val_acc),
        "test_acc": test,
        "macs": _int(rec.macs),
        "params": _int(rec.params),
        "epochs": rec.epochs,
        "proxy_epochs": proxy_epochs,
        "stages": stages,
        "hover": "<br>".join(lines),
    }


def _baseline_trace(points: Sequence[Mapping[str, Any]]) -> go.Scatter:
    """The baselines: labelled diamonds, no ``customdata`` (a click opens no trial)."""
    return go.Scatter(
        name="baselines",
        mode="markers+text",
        x=[p["macs"] for p in points],
        y=[p["val_acc"] for p in points],
        text=[html.escape(p["label"]) for p in points],
        textposition="top center",
        textfont={"color": BASELINE_COLOR, "size": 11},
        hovertext=[p["hover"] for p in points],
        hoverinfo="text",
        marker={
            "symbol": "diamond",
            "size": 11,
            "color": "#ffffff",
            "line": {"color": BASELINE_COLOR, "width": 2},
        },
        meta={"role": "baselines"},
        legendgroup="baselines",
    )


WEBGL_POINTS = 2000
"""A marker trace of more points than this is drawn with WebGL (``go.Scattergl``)."""


def _pareto_traces(s: Mapping[str, Any], group: str, lo: float) -> list[go.Scatter | go.Scattergl]:
    """Markers, front line and strip rows of one search of :func:`pareto_figure_data`."""
    name, color, pts = s["name"], s["color"], s["points"]
    label = html.escape(name)

    def trace(
        role: str, text: str, entries: list[dict[str, Any]], **kw: Any
    ) -> go.Scatter | go.Scattergl:
        # Entries sit at (MACs, accuracy) unless kw places them; markers carry the trial
        # numbers (for clicks) and hover texts.
        if kw["mode"] == "markers":
            kw["customdata"] = [[p["number"]] for p in entries]
            kw["hovertext"] = [p["hover"] for p in entries]
        kw.setdefault("x", [p["macs"] for p in entries])
        kw.setdefault("y", [p["val_acc"] for p in entries])
        many = kw["mode"] == "markers" and len(entries) > WEBGL_POINTS
        if many:
            # Plotly checks every element of every per-point list (a second of CPU at 10,000
            # points); these lists are built above, so the checks of small traces cover them.
            kw["_validate"] = False
        return (go.Scattergl if many else go.Scatter)(
            name=f"{label}: {text}",
            legendgroup=group,
            meta={"search": name, "role": role},
            hoverinfo="text" if kw["mode"] == "markers" else "skip",
            **kw,
        )

    by_number = {p["number"]: p for p in pts}
    marker = {
        "color": color,
        "size": [16 if p["knee"] else 10 if p["on_front"] else 8 for p in pts],
        "symbol": ["star" if p["knee"] else "circle" for p in pts],
        "opacity": [1.0 if p["on_front"] else 0.55 for p in pts],
        "line": {"color": "#222222", "width": [1.5 if p["on_front"] else 0.0 for p in pts]},
    }
    traces: list[go.Scatter | go.Scattergl] = [
        trace("trials", "trials", pts, mode="markers", marker=marker),
        trace(
            "front",
            "Pareto front",
            [by_number[n] for n in s["front"]],
            mode="lines",
            line={"color": color, "shape": "hv", "width": 2},
        ),
    ]
    for status in RUG_ROWS:
        rug = s[status]
        if rug:
            traces.append(
                trace(
                    status,
                    _RUG_LABEL[status],
                    rug,
                    mode="markers",
                    x=[p["macs"] if p["macs"] else lo for p in rug],  # unknown MACs: left edge
                    y=[_RUG_LABEL[status]] * len(rug),
                    xaxis="x",
                    yaxis="y2",
                    marker={"color": color, "size": 9, "symbol": _RUG_SYMBOL[status]},
                )
            )
    return traces


def _knee_note(s: Mapping[str, Any]) -> dict[str, Any]:
    knee, color = s["knee"], s["color"]
    return {
        "x": math.log10(max(knee["macs"], 1.0)),  # annotations on a log axis take log10(x)
        "y": knee["val_acc"],
        "xref": "x",
        "yref": "y",
        "text": f"knee #{knee['number']}",
        "showarrow": True,
        "arrowhead": 2,
        "ax": 30,
        "ay": 30,
        "font": {"color": color},
        "arrowcolor": color,
    }


def pareto_figure(data: Mapping[str, Any], *, title: str | None = None) -> go.Figure:
    """Draw :func:`pareto_figure_data`: validation accuracy against MACs.

    Complete trials are markers (MACs on a log x axis, validation accuracy on y; front points
    outlined, the knee a star with an arrow), the front a step line (``line.shape = "hv"``),
    and the other trials sit in a strip below the plot at their MACs (left edge when unknown),
    one row and legend entry per status (:data:`RUG_ROWS`: failed, infeasible, interrupted,
    stopped, running). One colour per search. Every marker's ``customdata`` is
    ``[trial number]`` and its trace's ``meta`` is ``{"search": name, "role": ...}``, so a
    click handler can open the trial. Exactly one marker is drawn per trial. Baselines, if
    any, are one more trace of labelled diamonds (``meta = {"role": "baselines"}``).
    The layout's ``meta`` carries each search's ``{"name", "counts", "hypervolume",
    "ref_macs"}``, so a page holding the figure holds the numbers its table shows.
    """
    searches = data["searches"]
    lo = (data.get("macs_range") or [1.0, 1.0])[0]
    traces = [t for i, s in enumerate(searches) for t in _pareto_traces(s, f"s{i}", lo)]
    if data.get("baselines"):
        traces.append(_baseline_trace(data["baselines"]))
    has_rug = any(s[k] for s in searches for k in RUG_ROWS)
    layout = _layout(
        html.escape(title) if title else "Validation accuracy vs. MACs",
        "pareto",
        xaxis={"type": "log", "title": {"text": "MACs per sample (log scale)"}},
        yaxis={"title": {"text": "validation accuracy"}, "domain": [0.22 if has_rug else 0, 1]},
        hovermode="closest",
        legend={"orientation": "h", "y": -0.18},
        annotations=[_knee_note(s) for s in searches if s["knee"] is not None],
    )
    layout["margin"]["b"] = 40
    layout["meta"] = {
        "searches": [
            {k: s.get(k) for k in ("name", "counts", "hypervolume", "ref_macs")} for s in searches
        ]
    }
    if has_rug:
        layout["xaxis"]["anchor"] = "y2"
        layout["yaxis2"] = {
            "domain": [0, 0.14],
            "type": "category",
            "categoryorder": "array",
            "categoryarray": [_RUG_LABEL[s] for s in RUG_ROWS],
            "fixedrange": True,
        }
    big = any(isinstance(t, go.Scattergl) for t in traces)  # checked as built (see above)
    return go.Figure(data=traces, layout=layout, _validate=not big)


# --------------------------------------------------------------------------- hypervolume


def hypervolume_curve(df: pd.DataFrame, ref_macs: float | None = None) -> dict[str, Any]:
    """Hypervolume after each trial: the front of the complete trials among the first k.

    One reference point for the whole curve (accuracy 0, ``ref_macs``; default
    :func:`fusion_nas.store.queries.reference_macs` of the search), so the curve never decreases.

    Returns:
        ``{"numbers": [...], "hypervolume": [...], "ref_macs": float}``, one entry per trial in
        trial-number order (a failed trial repeats the previous value).
    """
    rows = df[["number", "status", "val_acc", "macs"]].sort_values("number")
    ref = ref_macs if ref_macs is not None else reference_macs(df)
    numbers, values = [], []
    # The front so far: the hypervolume of every trial so far is that of its front, and a
    # trial some front point dominates (or equals) changes neither. Linear in the trials,
    # not quadratic: 10,000 trials take milliseconds.
    acc: list[float] = []
    macs: list[float] = []
    value = 0.0
    for row in rows.itertuples(index=False):
        if row.status == _COMPLETE and _num(row.macs) is not None:
            a, m = float(row.val_acc), float(row.macs)
            if not any(fa >= a and fm <= m for fa, fm in zip(acc, macs)):
                acc.append(a)
                macs.append(m)
                keep = front_indices(acc, macs)
                acc, macs = [acc[i] for i in keep], [macs[i] for i in keep]
                value = hypervolume(acc, macs, ref)
        numbers.append(int(row.number))
        values.append(value)
    return {"numbers": numbers, "hypervolume": values, "ref_macs": float(ref)}


def hypervolume_figure(curve: Mapping[str, Any]) -> go.Figure:
    """Draw :func:`hypervolume_curve` as a step line over trial numbers.

    Only the trials where the value changes (and the first and last) are drawn: the same
    steps (``line.shape = "hv"``), without one SVG marker per trial of a long search.
    """
    ref = curve["ref_macs"]
    numbers, values = list(curve["numbers"]), list(curve["hypervolume"])
    kept = [
        i for i in range(len(values)) if i in (0, len(values) - 1) or values[i] != values[i - 1]
    ]
    trace = go.Scatter(
        mode="lines+markers",
        x=[numbers[i] for i in kept],
        y=[values[i] for i in kept],
        line={"shape": "hv", "color": PALETTE[0]},
        marker={"size": 5},
        hovertemplate="after trial #%{x}: %{y:.4f}<extra></extra>",
        name="hypervolume",
    )
    layout = _layout(
        f"Hypervolume over trials (reference: acc 0, {_compact(ref)} MACs)",
        "hypervolume",
        xaxis={"title": {"text": "trial number"}},
        yaxis={"title": {"text": "hypervolume (accuracy x log10 MACs)"}},
    )
    return go.Figure(data=[trace], layout=layout)


# --------------------------------------------------------------------------- operators


def operator_frequencies(df: pd.DataFrame, n_stages: int | None = None) -> dict[str, Any]:
    """How often each operator appears in each stage, on the front and in all trials.

    "All trials" are those with a recorded architecture (any status); "front" the complete
    trials on the Pareto front (``df.on_front``). The operators are the registered ones
    (:func:`fusion_nas.model.registry.list_ops`, in registration order), then any other the
    trials name.

    Returns:
        ``{"operators": [...], "n_all": int, "n_front": int, "stages": [{"stage": i,
        "all": {op: count}, "front": {op: count}}, ...]}``; per stage, the ``all`` counts sum
        to the trials whose architecture has that stage, the ``front`` counts likewise.
    """
    pairs = zip(df["arch"].tolist(), df["on_front"].tolist())
    archs = [(st, bool(front)) for st, front in ((_stages(a), f) for a, f in pairs) if st]
    if n_stages is None:
        n_stages = max((len(st) for st, _ in archs), default=0)
    seen = [str(stage.get("operator")) for st, _ in archs for stage in st]
    operators = list(dict.fromkeys([*list_ops(), *seen]))
    stages = []
    for i in range(n_stages):
        counts = {"all": dict.fromkeys(operators, 0), "front": dict.fromkeys(operators, 0)}
        for st, front in archs:
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


def operator_figure(freq: Mapping[str, Any]) -> go.Figure:
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
    bars = [
        go.Bar(
            name=labels[key],
            x=[x_stage, x_op],  # two-level categories: stage, then operator
            y=share[key],
            customdata=count[key],
            marker={"color": colors[key]},
            hovertemplate="%{x}: %{y:.0%} (%{customdata})<extra>" + labels[key] + "</extra>",
        )
        for key in ("all", "front")
    ]
    layout = _layout(
        "Operators per stage: Pareto front vs. all trials",
        "operators",
        barmode="group",
        yaxis={"title": {"text": "share of trials"}, "tickformat": ".0%", "range": [0, 1]},
        legend={"orientation": "h", "y": -0.25},
    )
    layout["margin"]["b"] = 40
    return go.Figure(data=bars, layout=layout)


# --------------------------------------------------------------------------- one trial


def curve_figure(curve: Sequence[float] | None) -> go.Figure:
    """Per-epoch validation accuracy of one trial as a line (epochs counted from 1)."""
    ys = [_num(v) for v in (curve or [])]
    trace = go.Scatter(
        mode="lines+markers",
        x=list(range(1, len(ys) + 1)),
        y=ys,
        name="validation accuracy",
        line={"color": PALETTE[0]},
        hovertemplate="epoch %{x}: %{y:.4f}<extra></extra>",
    )
    layout = _layout(
        "Validation accuracy per epoch",
        None,
        xaxis={"title": {"text": "epoch"}, "dtick": 1},
        yaxis={"title": {"text": "validation accuracy"}},
    )
    return go.Figure(data=[trace], layout=layout)
