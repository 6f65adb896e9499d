"""``fusion-nas export`` and ``fusion-nas retrain``: the chosen architecture as code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fusion_nas.analysis.retrain import default_out_dir, proxy_weights, retrain
from fusion_nas.cli.common import StoreOption, console, err_console, user_errors
from fusion_nas.deploy.export import write_export
from fusion_nas.errors import ExportError
from fusion_nas.settings import HOME_ENV
from fusion_nas.store.store import Store
from fusion_nas.training.devices import DEVICE_HELP, resolve_device

TrialOption = Annotated[
    int | None, typer.Option("--trial", "-t", help="Trial number.", show_default=False)
]
PickOption = Annotated[
    str | None,
    typer.Option(
        "--pick",
        help="knee (Pareto knee point), best (highest validation accuracy) or max-flops:X "
        "(most accurate with at most X MACs).",
        show_default=False,
    ),
]


def export(
    name: Annotated[str, typer.Argument(help="Search name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .py file to write.")],
    trial: TrialOption = None,
    pick: PickOption = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Also save the proxy-trained weights (state_dict) here.", show_default=False
        ),
    ] = None,
    onnx: Annotated[
        Path | None,
        typer.Option(help="Also write ONNX here (needs the onnx extra).", show_default=False),
    ] = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="'dynamic': save int8 weights (torch dynamic quantisation of the Linear "
            "layers) to --weights; the module docstring says how to load them.",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Export a trial's architecture as standalone, readable PyTorch code (imports only torch).

    With --weights the trial's proxy training is re-run with the search's seed and settings
    (deterministic) and the weights are saved as a state_dict the exported class loads.
    With --quantize dynamic those weights are saved as the int8 state dict instead.
    """
    with user_errors():
        if out.suffix != ".py":
            raise ExportError(f"--out must name a .py file, got {str(out)!r}")
        if quantize is not None:
            from fusion_nas.deploy.quantize import check_mode

            check_mode(quantize)
            if weights is None:
                raise ExportError("--quantize needs --weights FILE for the int8 weights")
            if onnx is not None:
                raise ExportError("--quantize writes PyTorch int8 weights; drop --onnx")
        from fusion_nas.outputs import check_outputs

        check_outputs({"--out": out, "--weights": weights, "--onnx": onnx})  # before any work
        search = Store(store, create=False).search(name)
        chosen = search.pick(trial=trial, pick=pick)
        row = chosen.record
        arch = chosen.architecture()
        space = search.space
        state = None
        if weights is not None or onnx is not None:
            if not chosen.complete:
                raise ExportError(
                    f"trial {row.number} is {row.status}: it has no trained weights; "
                    "export the code without --weights/--onnx"
                )
            with console.status("Re-running the trial's proxy training for its weights..."):
                state, val_acc = proxy_weights(search, chosen)
            if val_acc != row.val_acc:
                err_console.print(
                    f"[yellow]Note:[/] re-trained validation accuracy {val_acc:.4f} differs "
                    f"from the recorded {row.val_acc:.4f} (other thread count or hardware)."
                )
        meta = {
            "search": name,
            "trial": row.number,
            "val_accuracy": row.val_acc,
            "store_url": search.store.url,
            "weights_file": weights.name if weights else None,
        }
        int8 = ""
        if quantize is not None:
            from fusion_nas.deploy.quantize import write_quantized_export

            change = write_quantized_export(
                arch, space, out, state_dict=state, weights=weights, meta=meta
            )["max_abs_logit_change"]
            int8 = f" (int8, max logit change {change:.3g})"
        else:
            write_export(arch, space, out, meta=meta, state_dict=state, weights=weights, onnx=onnx)
        console.print(
            f"Trial {row.number} ({escape(row.arch_desc or arch.describe())}; "
            f"{row.macs:,} MACs, {row.params:,} params) -> [bold]{escape(str(out))}[/]"
            + (f", weights {escape(str(weights))}{int8}" if weights else "")
            + (f", ONNX {escape(str(onnx))}" if onnx else "")
        )


def retrain_command(
    name: Annotated[str, typer.Argument(help="Search name.")],
    trial: TrialOption = None,
    pick: PickOption = None,
    epochs: Annotated[int, typer.Option(help="Training epochs (a longer schedule).")] = 60,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Peak learning rate. Default: the search's proxy setting.", show_default=False
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Batch size. Default: the search's proxy setting.", show_default=False),
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(
            help="AdamW weight decay. Default: the search's proxy setting.", show_default=False
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help=f"Output directory. Default: ${HOME_ENV}/retrain/NAME-trialN "
            "(results/retrain/NAME-trialN).",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
) -> None:
    """Retrain a trial's architecture from scratch on all training data and report TEST accuracy.

    The only command that touches the test split. Saves code, weights and a JSON record (also
    stored with the search).
    """
    with user_errors():
        import math

        from fusion_nas.errors import FusionNasError

        for flag, value, low in (("--lr", lr, 0.0), ("--weight-decay", weight_decay, 0.0)):
            if value is not None and not (math.isfinite(value) and value >= low):
                raise FusionNasError(f"{flag} {value} is not usable; allowed: a finite number >= 0")
        if lr == 0:
            raise FusionNasError("--lr 0.0 is not usable; allowed: a finite number > 0")
        for flag, value in (("--epochs", epochs), ("--batch-size", batch_size)):
            if value is not None and value < 1:
                raise FusionNasError(f"{flag} {value} is too small; allowed: integers >= 1")
        where = resolve_device(device)
        search = Store(store, create=False).search(name)
        chosen = search.pick(trial=trial, pick=pick)
        chosen.architecture()  # no architecture: refused before any training
        out_dir = out or default_out_dir(name, chosen.number)
        from fusion_nas.analysis.retrain import check_out_dir
        from fusion_nas.search.signals import Terminated, terminate_as_interrupt

        check_out_dir(out_dir)  # before the training: an unwritable place loses nothing
        try:
            with (
                terminate_as_interrupt(),
                console.status(f"Retraining trial {chosen.number} for {epochs} epochs..."),
            ):
                rec = retrain(
                    search,
                    chosen,
                    epochs=epochs,
                    out_dir=out_dir,
                    lr=lr,
                    batch_size=batch_size,
                    weight_decay=weight_decay,
                    device=where,
                )
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
            by = exc.signal_name if isinstance(exc, Terminated) else "Ctrl-C"
            err_console.print(
                f"[bold yellow]Stopped[/] by {by}: retraining of trial {chosen.number} "
                "stopped; nothing was saved."
            )
            raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
        console.print(
            f"Trial {rec.trial}: {escape(rec.arch_desc)}\n"
            f"MACs {rec.macs:,}, params {rec.params:,}; proxy validation accuracy "
            f"{rec.proxy_val_acc if rec.proxy_val_acc is None else round(rec.proxy_val_acc, 4)}\n"
            f"[bold]Test accuracy {rec.test_acc:.4f}[/] ({rec.test_samples} test samples; trained "
            f"{rec.epochs} epochs on {rec.train_samples} samples at lr {rec.lr:g}, batch "
            f"{rec.batch_size}, weight decay {rec.weight_decay:g}, in {rec.seconds:.1f} s "
            f"on {escape(rec.device or where)})\n"
            f"Saved {escape(rec.files['code'])}, {escape(rec.files['weights'])}, "
            f"{escape(rec.files['record'])}"
        )
