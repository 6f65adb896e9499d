"""``fusion-nas baselines``: train the reference networks of a space and store them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import torch
import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fusion_nas.cli.common import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LR,
    DEFAULT_VAL_FRACTION,
    AugmentOption,
    BatchSizeOption,
    ChannelsLastOption,
    CompileOption,
    CropPaddingOption,
    CutoutOption,
    DataDirOption,
    DatasetOption,
    DeviceOption,
    LabelSmoothingOption,
    LrOption,
    MixupOption,
    PrecisionOption,
    SpaceArgument,
    StoreOption,
    TrainSubsetOption,
    ValFractionOption,
    console,
    dataset_of,
    user_errors,
)
from fusion_nas.errors import FusionNasError
from fusion_nas.model.space import SearchSpace, load_space
from fusion_nas.store.records import BaselineRecord
from fusion_nas.store.store import Store, redact_url
from fusion_nas.training.augment import check_augment
from fusion_nas.training.devices import check_precision, resolve_device
from fusion_nas.training.loop import ProxyConfig
from fusion_nas.training.protocol import RETRAIN_EPOCHS, TrainingProtocol

if TYPE_CHECKING:
    from fusion_nas.analysis.baselines import Baseline

_DEFAULTS = ProxyConfig()


def _names(only: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; ``None`` for all; an empty selection is refused."""
    if only is None:
        return None
    names = [n.strip() for n in only.split(",") if n.strip()]
    if not names:
        from fusion_nas.analysis.baselines import BASELINES
        from fusion_nas.errors import FusionNasError, allowed

        raise FusionNasError(
            f"--only {only!r} selects no baseline; allowed: a comma-separated list of "
            f"{allowed(BASELINES)} (leave --only out for all)"
        )
    return names


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _list_table(space: SearchSpace, zoo: bool = False) -> Table:
    from fusion_nas.analysis.baselines import Baseline, baselines_for, select_zoo

    kind = "Zoo baselines" if zoo else "Baselines"
    table = Table(title=f"{kind} of space {escape(space.name)}", title_justify="left")
    for column, justify in (("name", "left"), ("MACs", "right"), ("params", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("network", overflow="fold")
    for b in select_zoo(space) if zoo else baselines_for(space):
        if isinstance(b, Baseline):
            table.add_row(b.name, f"{b.macs:,}", f"{b.params:,}", escape(b.describe()))
        else:
            table.add_row(b.name, "-", "-", escape(f"not available: {b.reason}"))
    return table


def _results_table(rows: list[BaselineRecord], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("name", "MACs", "params", "val acc", "test acc", "seconds"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for r in rows:
        table.add_row(
            r.name,
            f"{r.macs:,}",
            f"{r.params:,}",
            _acc(r.val_acc),
            _acc(r.test_acc),
            f"{r.seconds:.1f}",
        )
    return table


def baselines(
    space: SpaceArgument,
    dataset: DatasetOption = None,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="Comma-separated baseline names (default: every one the space offers).",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[
        int, typer.Option(help="Epochs of the final training (as 'fusion-nas retrain').")
    ] = RETRAIN_EPOCHS,
    proxy_epochs: Annotated[
        int, typer.Option(help="Proxy training epochs (as 'fusion-nas search --epochs').")
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
    final_lr: Annotated[
        float | None,
        typer.Option(
            help="Peak learning rate of the final training (as 'retrain --lr'). "
            "Default: the proxy's.",
            show_default=False,
        ),
    ] = None,
    final_batch_size: Annotated[
        int | None,
        typer.Option(
            help="Batch size of the final training (as 'retrain --batch-size'). "
            "Default: the proxy's.",
            show_default=False,
        ),
    ] = None,
    final_weight_decay: Annotated[
        float | None,
        typer.Option(
            help="AdamW weight decay of the final training (as 'retrain --weight-decay'). "
            "Default: the proxy's.",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and of training.")] = 0,
    data_dir: DataDirOption = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Threads to train with (default: torch's, as a one-process search); recorded.",
            show_default=False,
        ),
    ] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    channels_last: ChannelsLastOption = False,
    compile_: CompileOption = False,
    list_: Annotated[
        bool,
        typer.Option("--list", help="Show the baselines of SPACE and their cost; train nothing."),
    ] = False,
    zoo: Annotated[
        bool,
        typer.Option(
            "--zoo",
            help="Train the zoo members of SPACE (its [zoo] members, scaled to its input), "
            "named zoo:<member>, instead of the built-in baselines; --only picks among them.",
        ),
    ] = False,
) -> None:
    """Train the reference networks of SPACE with the protocol of searched networks.

    Each baseline gets the proxy score of a search trial (validation accuracy, same split,
    seed and proxy settings) and the test accuracy of 'fusion-nas retrain' (EPOCHS on all
    training data, then the test split once). Results are stored beside the searches, in the
    study 'baselines:SPACE:DATASET'; 'pareto' and the dashboard show them as reference points.
    """
    from fusion_nas.analysis.baselines import select, select_zoo

    with user_errors():
        sp = load_space(space)
        if list_:
            console.print(_list_table(sp, zoo))
            return
        if zoo:
            chosen, skipped = select_zoo(sp, _names(only)), []
        else:
            chosen, skipped = select(sp, _names(only))
        dataset = dataset_of(sp, dataset)
        protocol = TrainingProtocol(
            dataset=dataset,
            space=sp,
            proxy=ProxyConfig(
                epochs=proxy_epochs,
                batch_size=batch_size,
                lr=lr,
                train_subset=train_subset,
                val_fraction=val_fraction,
                precision=precision,
                channels_last=channels_last,
                compile=compile_,
                augment=augment,
                crop_padding=crop_padding,
                cutout=cutout,
                mixup=mixup,
                label_smoothing=label_smoothing,
            ),
            seed=seed,
            data_dir=data_dir,
            final_lr=final_lr,
            final_batch_size=final_batch_size,
            final_weight_decay=final_weight_decay,
            device=resolve_device(device),
        )
        protocol.schedule(epochs)  # a bad --epochs fails here, not after the proxy runs
        check_precision(precision, protocol.device)  # fp16 where it cannot run: one line now
        check_augment(protocol.proxy, sp.kind)  # image transforms on sequences: refused now
        if threads is not None and threads < 1:
            raise FusionNasError(f"--threads must be a positive integer, got {threads!r}")
        protocol.proxy_splits()  # a bad dataset fails here, before the store is touched
        st = Store(store)
        for b in skipped:
            console.print(f"[yellow]Skipped[/] {b.name}: {escape(b.reason)}")
        if not chosen:
            console.print(f"No baseline to train for space {escape(sp.name)}.")
            return
        if threads is not None:
            torch.set_num_threads(threads)  # the accuracies depend on it: it is recorded
        _train(chosen, protocol, st, epochs)


def _train(chosen: list[Baseline], protocol: TrainingProtocol, store: Store, epochs: int) -> None:
    """Train and store each baseline in turn under a progress bar, then print the table."""
    from fusion_nas.analysis.baselines import train_baselines

    start = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs  {task.fields[now]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    per = protocol.proxy.epochs + epochs  # epochs of one baseline: proxy, then final
    task = progress.add_task("baselines", total=per * len(chosen), now="")
    done: list[BaselineRecord] = []

    def tick(i: int, b: Baseline, phase: str, epoch: int) -> None:
        of = protocol.proxy.epochs if phase == "proxy" else epochs
        now = f"{b.name} ({i + 1}/{len(chosen)}) {phase} {epoch + 1}/{of}"
        progress.update(task, advance=1, now=now)

    def ended(i: int, b: Baseline, rec: BaselineRecord | None, reason: str | None) -> None:
        if rec is None:
            progress.console.print(f"[red]{escape(b.name)} failed[/]: {escape(reason or '')}")
            progress.update(task, completed=(i + 1) * per)
            return
        done.append(rec)
        progress.console.print(
            escape(
                f"{rec.name:<14} {rec.macs:>12,} MACs  val {_acc(rec.val_acc)}  "
                f"test {_acc(rec.test_acc)}  {rec.seconds:.1f} s"
            )
        )

    try:
        progress.start()
        run = train_baselines(
            chosen, protocol, store, epochs=epochs, on_epoch=tick, on_result=ended
        )
    except KeyboardInterrupt:
        progress.stop()
        console.print(
            f"[bold yellow]Stopped[/]: {len(done)} baseline(s) finished and stored; "
            "the one in training is not."
        )
        raise typer.Exit(130) from None
    finally:
        progress.stop()
    failed = [name for name, _ in run.failed]
    study = run.study
    threads = done[0].threads if done else "-"
    title = f"Baselines of {escape(protocol.space.name)} on {escape(protocol.dataset)}"
    console.print(_results_table(done, title))
    final = protocol.schedule(epochs)
    console.print(
        f"Proxy {protocol.proxy.epochs} epochs (val acc); final {epochs} epochs on train + val "
        f"(lr {final.lr:g}, batch {final.batch_size}), then the test split once (test acc); "
        f"seed {protocol.seed}; {threads} thread(s)."
    )
    note = f"; failed: {', '.join(failed)} (not stored)" if failed else ""
    console.print(
        f"[bold green]Done[/] in {time.perf_counter() - start:.1f} s: {len(done)} baseline(s)"
        f"{escape(note)}."
    )
    if study:
        console.print(f"Store: {escape(redact_url(store.url))} (study {escape(study)})")
