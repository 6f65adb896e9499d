"""``fusion-nas search``: run or resume a search with a live progress bar."""

from __future__ import annotations

import time
from typing import Annotated

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
    err_console,
    user_errors,
)
from fusion_nas.model.space import load_space
from fusion_nas.search.config import SearchConfig
from fusion_nas.search.loop import Progress as SearchProgress
from fusion_nas.search.session import prepare, run_search
from fusion_nas.search.signals import Terminated
from fusion_nas.search.strategies import STRATEGIES
from fusion_nas.store.records import TrialRecord, TrialStatus
from fusion_nas.store.store import Store, redact_url
from fusion_nas.training.loop import ProxyConfig

_DEFAULTS = ProxyConfig()
_STRATEGY_HELP = ", ".join(f"{name} ({spec.help})" for name, spec in STRATEGIES.items())


def _default_strategy() -> str:
    """The strategy of a new search that names none (see ``DEFAULT_STRATEGY``)."""
    from fusion_nas.search.config import DEFAULT_STRATEGY

    return DEFAULT_STRATEGY


def _takes(option: str) -> str:
    """The strategies that read ``option`` (for the option's help)."""
    return ", ".join(name for name, spec in STRATEGIES.items() if option in spec.options)


def search(
    space: SpaceArgument,
    dataset: DatasetOption = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            "-s",
            help=f"One of: {_STRATEGY_HELP}. Default: {_default_strategy()} for a new search "
            "(fewest trials to a good front, README 'Search efficiency'); an existing search "
            "resumes with the strategy it began with.",
            show_default=False,
        ),
    ] = None,
    trials: Annotated[int, typer.Option("--trials", "-n", help="Total trials of the search.")] = 20,
    epochs: Annotated[
        int, typer.Option(help="Proxy training epochs per trial.")
    ] = _DEFAULTS.epochs,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    lr: LrOption = DEFAULT_LR,
    train_subset: TrainSubsetOption = None,
    val_fraction: ValFractionOption = DEFAULT_VAL_FRACTION,
    precision: PrecisionOption = "fp32",
    augment: AugmentOption = None,
    crop_padding: CropPaddingOption = _DEFAULTS.crop_padding,
    cutout: CutoutOption = _DEFAULTS.cutout,
    mixup: MixupOption = _DEFAULTS.mixup,
    label_smoothing: LabelSmoothingOption = _DEFAULTS.label_smoothing,
    bf16: Annotated[
        bool, typer.Option("--bf16", help="Deprecated: the same as --precision bf16.")
    ] = False,
    channels_last: ChannelsLastOption = False,
    compile_: CompileOption = False,
    workers: Annotated[
        int, typer.Option("--workers", "-w", help="Trials trained at once (processes).")
    ] = 1,
    trials_per_device: Annotated[
        int | None,
        typer.Option(
            help="Trials trained at once on each GPU (CUDA only): at least GPUs x N worker "
            "processes, N on each GPU; a small proxy network leaves most of a GPU idle. "
            "Default: --workers alone decides.",
            show_default=False,
        ),
    ] = None,
    max_flops: Annotated[
        int | None,
        typer.Option(
            help="MACs budget per sample; bigger networks are never trained.", show_default=False
        ),
    ] = None,
    max_params: Annotated[
        int | None, typer.Option(help="Parameter budget.", show_default=False)
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Search name (same name resumes). Default: SPACE-DATASET-STRATEGY.",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the strategy, the split and training.")] = 0,
    trial_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds after which a trial fails as timed out.", show_default=False),
    ] = None,
    population: Annotated[
        int, typer.Option(help=f"Population size ({_takes('population')}).")
    ] = 12,
    sample_size: Annotated[
        int, typer.Option(help=f"Tournament size ({_takes('sample_size')}).")
    ] = 4,
    macs_weight: Annotated[
        float,
        typer.Option(
            help="Accuracy traded per decade of MACs in the one number NNI optimises: "
            f"val_acc - MACS_WEIGHT * log10(MACs); 0: accuracy only ({_takes('macs_weight')})."
        ),
    ] = 0.0,
    data_dir: DataDirOption = None,
    evaluator: Annotated[
        str,
        typer.Option(
            help="How trials get their score: 'train' (proxy-train each network) or "
            "'table:PATH' (look it up in a tabular benchmark made by benchmarks/tabular.py: "
            "the mean over the table's seeds; 'table:PATH@SEED' for one seed). A table must "
            "hold every network of the space, with the search's dataset and proxy settings; "
            "looked-up trials keep the table's training seconds.",
        ),
    ] = "train",
    device: DeviceOption = "auto",
    fidelity: Annotated[
        str,
        typer.Option(
            help="'full': every trial trains all --epochs. 'sh': successive halving over "
            "epochs (for 10 epochs: rungs 1, 3, 10); a network goes on to the next rung only "
            "while it is in the first 1/3 of its rung by non-dominated rank on (accuracy, "
            "MACs), the others are recorded as stopped. 'sh:1,3,10/3' sets the rungs and eta.",
        ),
    ] = "full",
    prescreen: Annotated[
        str | None,
        typer.Option(
            help="'K:M': score K untrained networks with a zero-cost proxy (one batch of "
            "training data, about a second each) and queue the best M, spread over the cost "
            "range (non-dominated on (score, MACs)), as the first trials; the strategy "
            "proposes the rest. Optuna strategies only.",
            show_default=False,
        ),
    ] = None,
    zero_cost: Annotated[
        str,
        typer.Option(help="Zero-cost proxy of --prescreen: naswot, synflow, grad_norm, snip."),
    ] = "naswot",
    start_from: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated zoo members of SPACE (its [zoo] members, scaled to its "
            "input) to queue as the first trials of a new search, before the strategy "
            "proposes; each is marked in 'results'. Optuna strategies except grid.",
            show_default=False,
        ),
    ] = None,
    objective: Annotated[
        str,
        typer.Option(
            help="Second objective beside validation accuracy: 'macs' (counted) or 'latency' "
            "(median batch-1 milliseconds of the model, measured here in one thread)."
        ),
    ] = "macs",
    max_latency_ms: Annotated[
        float | None,
        typer.Option(
            help="Latency budget (batch 1, ms): slower networks are never trained.",
            show_default=False,
        ),
    ] = None,
    latency: Annotated[
        str | None,
        typer.Option(
            help="Latency every trial records: 'eager' (torch, batch 1 and 64; default when "
            "training), 'all' (also onnxruntime, needs the onnx extra; seconds more per "
            "network), 'off' (default for table evaluators).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Search SPACE: sample architectures, proxy-train them, record every trial and the front."""
    with user_errors():
        if bf16:
            err_console.print("[yellow]Warning:[/] --bf16 is deprecated; use --precision bf16.")
        sp = load_space(space)
        dataset = dataset_of(sp, dataset)
        given = {"population": population, "sample_size": sample_size, "macs_weight": macs_weight}
        from fusion_nas.search.session import settle_strategy

        method = strategy or _default_strategy()  # in the default name
        spec = STRATEGIES.get(method)  # unknown names are refused by the search, in one line
        options = {k: v for k, v in given.items() if spec is not None and k in spec.options}
        config = SearchConfig(
            name=name
            or f"{sp.name}-{dataset.replace(':', '_').replace('/', '_')}-{method.split(':')[-1]}",
            space=sp,
            dataset=dataset,
            strategy=strategy,
            trials=trials,
            proxy=ProxyConfig(
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                train_subset=train_subset,
                val_fraction=val_fraction,
                precision=precision,
                bf16=bf16 or None,  # the deprecated switch; a contradiction is one line
                channels_last=channels_last,
                compile=compile_,
                augment=augment,
                crop_padding=crop_padding,
                cutout=cutout,
                mixup=mixup,
                label_smoothing=label_smoothing,
            ),
            seed=seed,
            max_flops=max_flops,
            max_params=max_params,
            trial_timeout=trial_timeout,
            workers=workers,
            data_dir=data_dir,
            strategy_options=options,
            evaluator=evaluator,
            device=device,
            trials_per_device=trials_per_device,
            fidelity=fidelity,
            prescreen=prescreen,
            prescreen_proxy=zero_cost,
            start_from=start_from,
            objective=objective,
            max_latency_ms=max_latency_ms,
            latency=latency,
        )
        # No --strategy: an existing search goes on with its stored strategy and options.
        config = settle_strategy(config, store)
        prepare(config)  # space, data, strategy and device first: bad input writes nothing
        from fusion_nas.cli.common import quiet_optuna

        quiet_optuna()
        st = Store(store)
        _run(config, st)


def _run(config: SearchConfig, store: Store) -> None:
    import warnings

    from fusion_nas.errors import FusionNasWarning

    start = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "best {task.fields[best]}  front {task.fields[front]}  failed {task.fields[failed]}"
        ),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task_id = None

    def on_start(done: int, total: int) -> None:
        nonlocal task_id
        if done:
            console.print(
                f"Resuming search [bold]{escape(config.name)}[/]: {done} of {total} trials done."
            )
        task_id = progress.add_task(
            escape(config.name),
            total=total,
            completed=min(done, total),
            best="-",
            front=0,
            failed=0,
        )
        progress.start()

    def on_progress(p: SearchProgress) -> None:
        if p.trial is not None:  # one line per finished trial, above the bar
            progress.console.print(_trial_line(p.trial), soft_wrap=True)
        progress.update(
            task_id,
            completed=p.done,
            best=f"{p.best_val_acc:.4f}" if p.best_val_acc is not None else "-",
            front=p.front_size,
            failed=p.failed + p.infeasible,
        )

    try:
        with warnings.catch_warnings():  # each fusion-nas warning: one line, before training
            warnings.simplefilter("always", FusionNasWarning)
            warnings.showwarning = _show_warning
            df = run_search(config, store, on_progress=on_progress, on_start=on_start)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        progress.stop()
        by = exc.signal_name if isinstance(exc, Terminated) else "Ctrl-C"
        console.print(
            f"[bold yellow]Stopped[/] by {by}: open trials are recorded as interrupted, "
            "finished ones are kept; run the same command again to resume."
        )
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
    finally:
        progress.stop()
    count = df.status.value_counts()
    ok = df[df.status == TrialStatus.COMPLETE]
    cut = int(count.get(TrialStatus.INTERRUPTED.value, 0))
    stopped = int(count.get(TrialStatus.STOPPED.value, 0))
    console.print(
        f"[bold green]Done[/] in {time.perf_counter() - start:.1f} s: {len(df)} trials "
        f"({len(ok)} complete, {int(count.get(TrialStatus.FAILED.value, 0))} failed, "
        f"{int(count.get(TrialStatus.INFEASIBLE.value, 0))} over budget"
        + (f", {stopped} stopped early" if stopped else "")
        + (f", {cut} interrupted" if cut else "")
        + "); "
        f"best validation accuracy {ok.val_acc.max():.4f}; front size {int(df.on_front.sum())}."
        if len(ok)
        else f"[bold yellow]Done[/]: {len(df)} trials, none complete."
    )
    quoted = escape(config.name if " " not in config.name else repr(config.name))
    url = escape(redact_url(store.url))
    console.print(f"Store: {url}")
    console.print(
        f"View: [bold]fusion-nas results {quoted}[/] | [bold]fusion-nas pareto {quoted} --open[/]"
        " | [bold]fusion-nas serve[/] (http://127.0.0.1:8765)"
        f" | optuna-dashboard {url}"
    )


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` of a search: each fusion-nas warning as one yellow line on
    stderr; any other as Python shows it."""
    import sys
    import warnings

    from fusion_nas.cli.common import err_console
    from fusion_nas.errors import FusionNasWarning

    if issubclass(category, FusionNasWarning) and isinstance(message, Warning):
        err_console.print(f"[yellow]Warning:[/] {escape(_warning_text(message))}", soft_wrap=True)
        return
    text = warnings.formatwarning(message, category, filename, lineno, line)
    (file if hasattr(file, "write") else sys.stderr).write(text)  # type: ignore[union-attr]


def _warning_text(warning: Warning) -> str:
    """One line for ``warning``; a short proxy with the CLI's options to change it."""
    from fusion_nas.errors import ShortProxyWarning, one_line

    if not isinstance(warning, ShortProxyWarning):
        return one_line(str(warning))
    i = warning.info
    advice = i["advice"]
    fix = f"--epochs {advice['epochs']}"
    if advice["batch_size"] is not None:
        fix = f"--batch-size {advice['batch_size']} or {fix}"
    return (
        f"each trial trains only {i['steps']} optimiser steps ({i['n_train']} training samples, "
        f"batch size {i['batch_size']}, {i['epochs']} epoch{'s' * (i['epochs'] != 1)}; "
        "ceil(samples / batch) * epochs), "
        f"fewer than {i['minimum']}: the networks may not learn and their scores may rank "
        f"nothing; {fix} reaches {i['minimum']}."
    )


def _trial_line(t: TrialRecord) -> str:
    """``#3  complete  0.9123  31,750 MACs  conv(k3)@8 | attention(h2)@16  (same as #1)``."""
    acc = f"{t.val_acc:.4f}" if t.val_acc is not None else "-"
    if t.status == TrialStatus.STOPPED and t.rungs:  # its accuracy at the rung it stopped at
        acc = f"{t.rungs[-1][1]:.4f}"
    macs = f"{t.macs:,} MACs" if t.macs is not None else ""
    note = f"  (same as #{t.duplicate_of})" if t.duplicate_of is not None else ""
    if t.status != TrialStatus.COMPLETE and t.fail_reason:
        note = f"  ({t.fail_reason})"
    return escape(f"#{t.number:<3} {t.status.value:<10} {acc:>6}  {macs:>16}  {t.arch_desc}{note}")
