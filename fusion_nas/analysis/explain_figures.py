"""Figures of :mod:`fusion_nas.analysis.explain` as ``plotly.graph_objects.Figure``.

Each ``*_figure`` function draws one part of an :class:`~fusion_nas.analysis.explain.Explanation`;
:func:`explain_figures` returns them all in page order (the dashboard's trial panel sends them
as ``fig.to_plotly_json()``), and :func:`fusion_nas.web.report.explain_html` writes them into
one self-contained HTML page like ``fusion-nas pareto`` does. Labels come from the
operator registry and are HTML-escaped before they reach a figure, as in
:mod:`fusion_nas.analysis.figures`.
"""

from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fusion_nas.analysis.explain import AttentionMap, Explanation

__all__ = [
    "attention_figure",
    "class_figure",
    "cost_figure",
    "explain_figures",
    "fusion_figure",
    "saliency_figure",
]

_TEMPLATE = "plotly_white"
_NAMES = {
    "a": "conv weight a",
    "b": "attention weight b",
    "g": "gate g (conv side)",
    "s": "gate scale s",
    "conv_share": "conv share of the fused update",
    "temporal_share": "share from the branch across frames (video)",
}
_COLORS = {
    "a": "#1f77b4",
    "b": "#d62728",
    "g": "#2ca02c",
    "s": "#7f7f7f",
    "conv_share": "#9467bd",
    "temporal_share": "#17becf",
}
_PART_COLORS = {
    "transition": "#7f7f7f",
    "conv": "#1f77b4",
    "attention": "#d62728",
    "mlp": "#ff7f0e",
    "gate": "#2ca02c",
    "fusion": "#9467bd",
    "other": "#8c564b",
}


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title},
        "margin": {"l": 70, "r": 20, "t": 60, "b": 50},
        "template": _TEMPLATE,
        **extra,
    }


def _empty(title: str, text: str) -> go.Figure:
    fig = go.Figure(layout=_layout(title))
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def fusion_figure(expl: Explanation) -> go.Figure:
    """Per fused block: mean of each fusion weight, error bars one standard deviation.

    ``a``, ``b`` and ``s`` spread over channels (they are fixed parameters); ``g`` and the conv
    share spread over the validation samples. On video the temporal share too (the share of
    the update from the branch that reaches across frames, named under the block's label).
    """
    title = "Fusion weights per block (error bars: ±1 std)"
    if not expl.fusion:
        return _empty(title, "no parallel or gated block in this network")
    labels = [
        html.escape(f"{f.label} [across frames: {f.temporal}]" if f.temporal else f.label)
        for f in expl.fusion
    ]
    fig = go.Figure(layout=_layout(title, barmode="group", yaxis={"title": {"text": "value"}}))
    for key, name in _NAMES.items():
        ys = [f.weights[key].mean if key in f.weights else None for f in expl.fusion]
        if all(y is None for y in ys):
            continue
        err = [f.weights[key].std if key in f.weights else None for f in expl.fusion]
        fig.add_bar(
            x=labels,
            y=ys,
            name=name,
            marker_color=_COLORS[key],
            error_y={"type": "data", "array": err, "visible": True},
            hovertemplate=f"{name}: %{{y:.3f}}<extra>%{{x}}</extra>",
        )
    return fig


def class_figure(expl: Explanation) -> go.Figure:
    """Per class, the mean of each input-dependent fusion value (gate g, conv share, and on
    video the temporal share).

    One row per (block, value); the row label carries ``eta2``, the share of the value's
    variance the class explains (marked ``*`` where it differs per class).
    """
    title = "Per class: gate and conv share (class mean)"
    if any(f.temporal for f in expl.fusion):
        title = "Per class: gate, conv share and temporal share (class mean)"
    rows, z = [], []
    for f in expl.fusion:
        for key, means in f.per_class.items():
            mark = " *" if f.differs(key) else ""
            rows.append(html.escape(f"{f.label} {key} (eta2 {f.eta2[key]:.2f}){mark}"))
            z.append(means)
    if not rows:
        return _empty(title, "no input-dependent fusion value")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(c) for c in range(expl.classes)],
            y=rows,
            colorscale="Viridis",
            zmin=0.0,  # gates and shares are fractions: one fixed scale for every row
            zmax=1.0,
            hovertemplate="class %{x}<br>%{y}<br>mean %{z:.3f}<extra></extra>",
        ),
        layout=_layout(title, xaxis={"title": {"text": "class"}, "type": "category"}),
    )
    fig.update_layout(height=max(300, 120 + 40 * len(rows)), margin={"l": 320})
    return fig


def cost_figure(expl: Explanation) -> go.Figure:
    """MACs (batch of one) and parameters per stage, stacked by part."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("MACs per sample", "parameters"))
    names = [html.escape(f"{c.name} ({c.operator})") for c in expl.costs]
    parts = list(dict.fromkeys(p for c in expl.costs for p in c.parts))
    for part in parts:
        for col, idx in ((1, 0), (2, 1)):
            fig.add_bar(
                x=names,
                y=[c.parts.get(part, (0, 0))[idx] for c in expl.costs],
                name=part,
                legendgroup=part,
                showlegend=col == 1,
                marker_color=_PART_COLORS.get(part, "#17becf"),
                row=1,
                col=col,
            )
    for col, idx in ((1, 0), (2, 1)):  # stem and head have no parts: one bar of their own
        fig.add_bar(
            x=names,
            y=[(c.macs, c.params)[idx] if not c.parts else 0 for c in expl.costs],
            name="whole",
            legendgroup="whole",
            showlegend=col == 1,
            marker_color="#bcbd22",
            row=1,
            col=col,
        )
    fig.update_layout(**_layout("Where the cost goes", barmode="stack"))
    return fig


def saliency_figure(expl: Explanation) -> go.Figure:
    """Grad-CAM of a few validation samples: the input beside its map (images), or the
    signal with Grad-CAM and input-gradient saliency under it (sequences), or a strip of frames
    per sample, the input's frames over their Grad-CAM (video)."""
    sal = expl.saliency
    title = "Where the network looks"
    if sal is None or not sal.maps:
        return _empty(title, "no samples")
    k = len(sal.maps)
    names = [f"label {y}, predicted {p}" for y, p in zip(sal.labels, sal.predicted)]
    title = f"Grad-CAM on stage {sal.stage} for the predicted class (validation samples)"
    if sal.kind == "video":
        return _video_saliency(sal.inputs, sal.maps, names, title)
    if sal.kind == "image":
        fig = make_subplots(
            rows=2,
            cols=k,
            subplot_titles=[*names, *(["Grad-CAM"] * k)],
            vertical_spacing=0.12,
        )
        for i in range(k):
            fig.add_heatmap(
                z=sal.inputs[i][0], colorscale="Greys", showscale=False, row=1, col=i + 1
            )
            fig.add_heatmap(
                z=sal.maps[i],
                colorscale="Inferno",
                zmin=0,
                zmax=1,
                showscale=i == 0,
                row=2,
                col=i + 1,
            )
        fig.update_yaxes(autorange="reversed", scaleanchor=None, showticklabels=False)
        fig.update_xaxes(showticklabels=False)
        fig.update_layout(**_layout(title, height=520))
        return fig
    fig = make_subplots(rows=k, cols=1, subplot_titles=names, shared_xaxes=True,
                        specs=[[{"secondary_y": True}]] * k)  # fmt: skip
    for i in range(k):
        first = i == 0
        for c, channel in enumerate(sal.inputs[i]):
            fig.add_scatter(y=channel, mode="lines", name=f"input channel {c}", showlegend=first,
                            line={"color": "#444", "width": 1}, row=i + 1, col=1)  # fmt: skip
        fig.add_scatter(y=sal.maps[i], mode="lines", name="Grad-CAM", fill="tozeroy",
                        line={"color": "#d62728"}, showlegend=first, legendgroup="cam",
                        row=i + 1, col=1, secondary_y=True)  # fmt: skip
        if sal.input_grad is not None:
            fig.add_scatter(y=sal.input_grad[i], mode="lines", name="input gradient",
                            line={"color": "#1f77b4", "dash": "dot"}, showlegend=first,
                            legendgroup="grad", row=i + 1, col=1, secondary_y=True)  # fmt: skip
    fig.update_yaxes(range=[0, 1.05], secondary_y=True, showgrid=False)
    fig.update_layout(**_layout(title, height=max(360, 170 * k)))
    return fig


def _video_saliency(inputs: list, maps: list, names: list[str], title: str) -> go.Figure:
    """Per sample two rows of ``T`` frames: the input (channel 0) and its Grad-CAM."""
    k, T = len(maps), len(maps[0])
    titles = []
    for name in names:
        titles += [f"{name}: frame {t}" if t == 0 else f"frame {t}" for t in range(T)]
        titles += [f"Grad-CAM frame {t}" for t in range(T)]
    fig = make_subplots(rows=2 * k, cols=T, subplot_titles=titles, vertical_spacing=0.04)
    for i in range(k):
        for t in range(T):
            fig.add_heatmap(z=inputs[i][0][t], colorscale="Greys", showscale=False,
                            row=2 * i + 1, col=t + 1)  # fmt: skip
            fig.add_heatmap(z=maps[i][t], colorscale="Inferno", zmin=0, zmax=1,
                            showscale=i == 0 and t == 0, row=2 * i + 2, col=t + 1)  # fmt: skip
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(**_layout(title, height=max(400, 260 * k)))
    fig.update_annotations(font={"size": 10})
    return fig


def attention_figure(amap: AttentionMap) -> go.Figure:
    """One attention mixer: its token-token map (query x key) beside the attention each token
    receives, or its per-channel weights (squeeze-excitation), or on video a frame-to-frame
    map (query frame x key frame, ``what = "frames"``) beside what each frame receives."""
    title = html.escape(f"{amap.label}: {amap.note}")
    if amap.what == "channels":
        fig = go.Figure(
            go.Bar(y=amap.received, x=list(range(len(amap.received))), marker_color="#d62728"),
            layout=_layout(title, xaxis={"title": {"text": "channel"}}, yaxis={"range": [0, 1]}),
        )
        return fig
    if amap.what == "frames":
        fig = make_subplots(
            rows=1, cols=2, column_widths=[0.6, 0.4],
            subplot_titles=("query frame x key frame", "attention each frame receives"),
        )  # fmt: skip
        frames = [str(t) for t in range(amap.size[0])]
        fig.add_heatmap(z=amap.matrix, x=frames, y=frames, colorscale="Viridis", zmin=0,
                        hovertemplate="query frame %{y}, key frame %{x}: %{z:.3f}<extra></extra>",
                        row=1, col=1)  # fmt: skip
        fig.add_bar(x=frames, y=amap.received, marker_color="#17becf", showlegend=False,
                    row=1, col=2)  # fmt: skip
        fig.update_xaxes(type="category", title={"text": "frame"})
        fig.update_yaxes(type="category", autorange="reversed", row=1, col=1)
        fig.update_layout(**_layout(title, height=420))
        fig.update_layout(title={"font": {"size": 13}})
        return fig
    received = amap.received if len(amap.size) == 2 else [amap.received]
    if len(amap.size) == 3:  # video token map: one row of H*W positions per frame
        received = [[v for row in frame for v in row] for frame in amap.received]
    if amap.matrix is None:
        return go.Figure(
            go.Heatmap(z=received, colorscale="Viridis"),
            layout=_layout(title, yaxis={"autorange": "reversed"}),
        )
    fig = make_subplots(
        rows=1, cols=2, column_widths=[0.6, 0.4],
        subplot_titles=("query token x key token", "attention each token receives"),
    )  # fmt: skip
    fig.add_heatmap(z=amap.matrix, colorscale="Viridis", showscale=False, row=1, col=1,
                    hovertemplate="query %{y}, key %{x}: %{z:.3f}<extra></extra>")  # fmt: skip
    fig.add_heatmap(z=received, colorscale="Viridis", row=1, col=2)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(**_layout(title, height=460))
    fig.update_layout(title={"font": {"size": 13}})
    return fig


def explain_figures(expl: Explanation) -> dict[str, go.Figure]:
    """Every figure of ``expl`` in page order: ``fusion``, ``classes``, ``cost``, ``saliency``,
    then ``attention:<block>`` per attention mixer (a block's further maps, the two parts of
    divided attention or a derived frame-to-frame map, ``attention:<block>:<variant>:<what>``)."""
    figures = {
        "fusion": fusion_figure(expl),
        "classes": class_figure(expl),
        "cost": cost_figure(expl),
        "saliency": saliency_figure(expl),
    }
    for amap in expl.attention:
        key = f"attention:s{amap.stage}.b{amap.block}"
        if key in figures:
            key = f"{key}:{amap.variant}:{amap.what}"
        figures[key] = attention_figure(amap)
    return figures
