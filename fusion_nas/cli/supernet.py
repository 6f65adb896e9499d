"""``fusion-nas supernet``: train a weight-sharing supernet once, search it, confirm the front."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fusion_nas.cli.common import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LR,
    DEFAULT_VAL_FRACTION,
    AugmentOption,
    BatchSizeOption,
    CropPaddingOption,
    CutoutOption,
    DataDirOption,
    DatasetOption,
    DeviceOption,
    LabelSmoothingOption,
    LrOption,
    MixupOption,
    SpaceArgument,
    StoreOption,
    TrainSubsetOption,
    ValFractionOption,
    console,
    dataset_of,
    user_errors,
)
from fusion_nas.errors import FusionNasError
from fusion_nas.model.space import load_space
from fusion_nas.model.supernet import MAX_PARAMS
from fusion_nas.search.supernet import CALIB_BATCHES, search_supernet, train_supernet
from fusion_nas.training.augment import check_augment
from fusion_nas.training.loop import ProxyConfig

_DEFAULTS = ProxyConfig()


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _search(*args, **kwargs):
    """:func:`search_supernet`; Ctrl-C or SIGTERM ends with the search's usual message."""
    from fusion_nas.search.signals import Terminated, terminate_as_interrupt

    try:
        with terminate_as_interrupt():
            return search_supernet(*args, **kwargs)
    except KeyboardInterrupt as exc:
        by = exc.signal_name if isinstance(exc, Terminated) else "Ctrl-C"
        console.print(
            f"[bold yellow]Stopped[/] by {by}: open confirmation trials are recorded as "
            "interrupted; run the same command again to train the rest."
        )
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None


def supernet(
    space: SpaceArgument,
    dataset: DatasetOption = None,
    epochs: Annotated[
        int, typer.Option(help="Supernet training epochs (one sampled path per batch).")
    ] = 30,
    evaluations: Annotated[
        int,
        typer.Option("--evaluations", "-n", help="NSGA-II evaluations over inherited accuracies."),
    ] = 200,
    confirm: Annotated[
        int,
        typer.Option(
            help="Front networks trained from scratch as a search in the store (0: none)."
        ),
    ] = 5,
    confirm_epochs: Annotated[
        int, typer.Option(help="Proxy training epochs of each confirmed network.")
    ] = _DEFAULTS.epochs,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    lr: LrOption = DEFAULT_LR,
    train_subset: TrainSubsetOption = None,
    val_fraction: ValFractionOption = DEFAULT_VAL_FRACTION,
    augment: AugmentOption = None,
    crop_padding: CropPaddingOption = _DEFAULTS.crop_padding,
    cutout: CutoutOption = _DEFAULTS.cutout,
    mixup: MixupOption = _DEFAULTS.mixup,
    label_smoothing: LabelSmoothingOption = _DEFAULTS.label_smoothing,
    population: Annotated[int, typer.Option(help="NSGA-II population size.")] = 12,
    calib_batches: Annotated[
        int, typer.Option(help="Training batches that recalibrate BatchNorm before a score.")
    ] = CALIB_BATCHES,
    supernet_max_params: Annotated[
        int, typer.Option(help="Refuse a supernet holding more parameters than this.")
    ] = MAX_PARAMS,
    name: Annotated[
        str | None,
        typer.Option(
            help="Name of the confirmation search (same name resumes). "
            "Default: SPACE-DATASET-supernet.",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = None,
    seed: Annotated[int, typer.Option(help="Seed of sampling, the split and training.")] = 0,
    data_dir: DataDirOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Train SPACE's supernet once (uniform path sampling), search it, confirm the front."""
    with user_errors():
        sp = load_space(space)
        dataset = dataset_of(sp, dataset)
        for flag, value, low in (
            ("--epochs", epochs, 1),
            ("--evaluations", evaluations, 1),
            ("--confirm", confirm, 0),
            ("--confirm-epochs", confirm_epochs, 1),
            ("--population", population, 2),
            ("--calib-batches", calib_batches, 1),
            ("--supernet-max-params", supernet_max_params, 1),
        ):
            if value < low:
                raise FusionNasError(f"{flag} {value} is too small; allowed: integers >= {low}")
        size = sp.product_size()
        if evaluations > size:  # more would only repeat networks already scored
            from fusion_nas.cli.common import err_console

            err_console.print(
                f"[yellow]Note:[/] --evaluations {evaluations:,} capped at {size:,}, the number "
                f"of networks in space {escape(repr(sp.name))}.",
                soft_wrap=True,
            )
            evaluations = size
        common = dict(
            batch_size=batch_size,
            lr=lr,
            train_subset=train_subset,
            val_fraction=val_fraction,
            augment=augment,
            crop_padding=crop_padding,
            cutout=cutout,
            mixup=mixup,
            label_smoothing=label_smoothing,
        )
        proxy = ProxyConfig(epochs=epochs, **common)
        check_augment(proxy, sp.kind)  # image transforms on sequences: refused before training
        confirm_proxy = ProxyConfig(epochs=confirm_epochs, **common)
        name = name or f"{sp.name}-{dataset.replace(':', '_').replace('/', '_')}-supernet"
        from fusion_nas.store.store import Store, redact_url

        st = Store(store) if confirm else None
        progress = _bar()
        with progress:
            task = progress.add_task("supernet", total=None, info="")

            def on_step(step: int, total: int, loss: float) -> None:
                progress.update(task, completed=step, total=total, info=f"loss {loss:.3f}")

            trained = train_supernet(
                sp,
                dataset,
                proxy,
                seed=seed,
                data_dir=data_dir,
                device=device,
                max_params=supernet_max_params,
                on_step=on_step,
            )
            scoring = progress.add_task("inherited", total=evaluations, info="")

            def on_eval(i: int, cand) -> None:
                progress.update(
                    scoring, completed=i, info=f"{cand.inherited_acc:.4f}  {cand.macs:,} MACs"
                )

            confirming = progress.add_task("confirm", total=confirm, info="", visible=False)

            def on_trial(p) -> None:
                progress.update(confirming, visible=True, completed=p.done, info=p.last_desc)

            start = time.perf_counter()
            result = _search(
                trained,
                evaluations,
                confirm,
                name=name,
                store=st,
                confirm_proxy=confirm_proxy,
                seed=seed,
                population=population,
                calib_batches=calib_batches,
                device=device,
                data_dir=data_dir,
                on_eval=on_eval,
                on_trial=on_trial,
            )
    confirm_s = time.perf_counter() - start - result.seconds
    console.print(
        f"Supernet: {trained.supernet.n_params:,} parameters, {trained.epochs} epochs in "
        f"{trained.seconds:.1f} s; {len(result.candidates)} distinct networks scored in "
        f"{result.seconds:.1f} s"
        + (f"; {len(result.picks)} confirmed in {confirm_s:.1f} s." if result.picks else ".")
    )
    table = Table(title="Inherited front (confirmed: trained from scratch)")
    for col in ("inherited acc", "MACs", "params", "network", "confirmed acc"):
        table.add_column(col, justify="right" if col != "network" else "left")
    confirmed = {}
    if result.trials is not None and len(result.trials):
        ok = result.trials.dropna(subset=["val_acc"])
        confirmed = dict(zip(ok.arch_id, ok.val_acc))
    for c in result.front:
        got = confirmed.get(c.arch.arch_id)
        table.add_row(
            f"{c.inherited_acc:.4f}",
            f"{c.macs:,}",
            f"{c.params:,}",
            escape(c.arch.describe()),
            f"{got:.4f}" if got is not None else "-",
        )
    console.print(table)
    if st is not None:
        quoted = escape(name if " " not in name else repr(name))
        console.print(f"Store: {escape(redact_url(st.url))}")
        console.print(
            f"View: [bold]fusion-nas results {quoted}[/] | [bold]fusion-nas pareto {quoted} "
            "--open[/] | [bold]fusion-nas serve[/]"
        )
