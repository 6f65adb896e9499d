"""``fusion-nas explain``: inside one trained trial, in the terminal and as an offline HTML page."""

from __future__ import annotations

import os
import webbrowser
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fusion_nas.analysis.explain import DEFAULT_SAMPLES, Explanation
from fusion_nas.cli.common import StoreOption, console, user_errors
from fusion_nas.cli.export import PickOption, TrialOption
from fusion_nas.errors import FusionNasError, OutputError
from fusion_nas.settings import home
from fusion_nas.store.queries import safe_filename
from fusion_nas.store.store import Store


def default_explain_path(name: str, number: int) -> Path:
    """``HOME/explain-<search>-trial<N>.html`` (:func:`fusion_nas.settings.home`)."""
    return home() / f"explain-{safe_filename(name)}-trial{int(number)}.html"


def _tables(expl: Explanation) -> list[Table]:
    """The terminal summary: cost per stage, fusion per block, attention and saliency."""
    cost = Table(title="Where the cost goes (MACs per sample)")
    for col in ("part", "operator", "MACs", "share", "params", "breakdown (MACs)"):
        cost.add_column(col, justify="right" if col in ("MACs", "share", "params") else "left")
    total = sum(c.macs for c in expl.costs) or 1
    for c in expl.costs:
        parts = ", ".join(f"{k} {m:,}" for k, (m, _) in c.parts.items() if m)
        cost.add_row(c.name, c.operator, f"{c.macs:,}", f"{c.macs / total:.0%}", f"{c.params:,}",
                     parts)  # fmt: skip
    tables = [cost]
    if expl.fusion:
        fusion = Table(title="Fusion per block (mean ± std; a, b, s over channels; g over samples)")
        keys = ["a", "b", "g", "s", "conv_share"]
        video = any(f.temporal for f in expl.fusion)  # video: which branch reaches across frames
        cols = ["block", "a", "b", "g", "s", "conv share"]
        if video:
            keys.append("temporal_share")
            cols += ["across frames", "temporal share"]
        for col in (*cols, "differs per class"):
            fusion.add_column(col)
        for f in expl.fusion:
            w = f.weights
            cells = [f"{w[k].mean:.3f} ± {w[k].std:.3f}" if k in w else "-" for k in keys]
            if video:
                cells.insert(5, f.temporal or "-")
            differs = [f"{k} (eta2 {f.eta2[k]:.2f})" for k in f.eta2 if f.differs(k)]
            fusion.add_row(escape(f.label), *cells, ", ".join(differs) or "no")
        tables.append(fusion)
    if expl.attention:
        att = Table(title="Attention maps")
        for col in ("block", "heads", "map", "shown"):
            att.add_column(col)
        for a in expl.attention:
            att.add_row(escape(a.label), str(a.heads), "x".join(map(str, a.size)), escape(a.note))
        tables.append(att)
    sal = expl.saliency
    if sal is not None:
        title = f"Grad-CAM on stage {sal.stage} (validation samples)"
        table = Table(title=title)
        for col in ("sample", "label", "predicted", "peak at"):
            table.add_column(col)
        for i, cam in enumerate(sal.maps):
            frame = ""
            if sal.kind == "video":  # (T, H, W): the frame of the peak, then its place
                t = max(range(len(cam)), key=lambda j: max(map(max, cam[j])))
                frame, cam = f"frame {t}, ", cam[t]
            flat = [v for row in cam for v in (row if isinstance(row, list) else [row])]
            peak = max(range(len(flat)), key=flat.__getitem__)
            where = str(peak) if sal.kind == "sequence" else f"{frame}row {peak // len(cam[0])}, " \
                f"col {peak % len(cam[0])}"  # fmt: skip
            table.add_row(str(i), str(sal.labels[i]), str(sal.predicted[i]), where)
        tables.append(table)
    return tables


def explain(
    name: Annotated[str, typer.Argument(help="Search name.")],
    trial: TrialOption = None,
    pick: PickOption = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="A state_dict of the trial's network. Default: the 'retrain' weights of the "
            "trial if any, else the trial's proxy training re-run (seeded, as 'export --weights').",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    samples: Annotated[
        int, typer.Option(help="Validation samples for Grad-CAM and attention maps.", min=1)
    ] = DEFAULT_SAMPLES,
    stage: Annotated[
        int | None,
        typer.Option(help="Stage whose map Grad-CAM reads. Default: the last.", show_default=False),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="HTML file to write. Default: $FUSION_NAS_HOME/explain-<name>-trial<N>.html.",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    open_: Annotated[
        bool, typer.Option("--open", help="Open the file in the default web browser.")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Look inside a trained trial: fusion weights and gates, cost per stage, Grad-CAM/saliency
    and attention maps, on validation samples only.
    """
    from fusion_nas.analysis.explain import explain_trial
    from fusion_nas.outputs import atomic_output, check_outputs
    from fusion_nas.web.report import explain_html

    with user_errors():
        if out is not None and out.suffix.lower() not in (".html", ".htm"):
            raise FusionNasError(f"--out must name an .html file, got {str(out)!r}")
        search = Store(store, create=False).search(name)
        chosen = search.pick(trial=trial, pick=pick)
        path = out if out is not None else default_explain_path(name, chosen.number)
        # before the work (which may train the network): a folder, an unwritable place or
        # the weights file itself is refused
        check_outputs({"--out": path})
        if weights is not None and os.path.realpath(weights) == os.path.realpath(path):
            raise OutputError(
                f"--out {str(path)!r} is the weights file (--weights); allowed: another path"
            )
        with console.status("Explaining...") as status:
            expl = explain_trial(
                search, chosen, weights=weights, samples=samples, stage=stage,
                on_status=status.update,
            )  # fmt: skip
        page = explain_html(expl, title=f"Inside trial {chosen.number} of {name}")
        try:
            with atomic_output(path) as part:  # whole or not at all
                part.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise FusionNasError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    console.print(
        f"Trial {chosen.number}: {escape(str(chosen.record.arch_desc or ''))}\n"
        f"Weights: {escape(expl.source)}; validation accuracy {expl.accuracy:.4f} on "
        f"{expl.val_samples} samples"
    )
    for table in _tables(expl):
        console.print(table)
    console.print(f"Wrote {escape(str(path))}")
    if open_:
        webbrowser.open(path.resolve().as_uri())
