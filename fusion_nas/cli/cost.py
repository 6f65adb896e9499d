"""``fusion-nas cost``: exact MACs and parameters of one network; ``--compare`` adds thop's and
PyTorch's ``flop_counter``'s counts beside the exact one, module by module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.markup import escape
from rich.table import Table

from fusion_nas.cli.common import StoreOption, console, user_errors
from fusion_nas.errors import ArchitectureError, FusionNasError
from fusion_nas.model.arch import Architecture
from fusion_nas.model.nets import FusionNet, NetCfg

_HOW = (
    "pass --arch JSON (or a .json file) for a space, or --search NAME --trial N for a trial "
    "of a stored search"
)


def _arch_arg(text: str) -> Architecture:
    """``--arch``: JSON text, or the path of a JSON file."""
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise ArchitectureError(f"--arch must be JSON or a .json file, got {text!r}")
        text = path.read_text(encoding="utf-8")
    return Architecture.from_json(text)


def _target(
    target: str | None,
    arch: str | None,
    search: str | None,
    trial: int | None,
    store: str | None,
) -> tuple[str, NetCfg]:
    """The label and network config to count."""
    from fusion_nas.deploy.counters import exported_config
    from fusion_nas.model.space import load_space

    if target is not None and target.endswith(".py"):
        if arch is not None or search is not None:
            raise FusionNasError(f"{target!r} is an exported file: drop --arch/--search/--trial")
        cfg = exported_config(target)
        return target, cfg
    if arch is not None and search is not None:
        raise FusionNasError("give --arch or --search/--trial, not both")
    if search is not None:
        from fusion_nas.store.store import Store

        if trial is None:
            raise FusionNasError("--search needs --trial N")
        stored = Store(store, create=False).search(search)
        chosen = stored.trial(trial).architecture()
        space = stored.space
        if target is not None and target != space.name:
            raise FusionNasError(
                f"search {search!r} ran on space {space.name!r}, not {target!r}; drop the space"
            )
        return f"{search} trial {trial}: {chosen.describe()}", space.net_cfg(chosen)
    if trial is not None:
        raise FusionNasError("--trial needs --search NAME")
    if target is None:
        raise FusionNasError(f"name a space or an exported .py file; {_HOW}")
    space = load_space(target)
    if arch is None:
        raise FusionNasError(f"space {space.name!r} holds many networks; {_HOW}")
    chosen = _arch_arg(arch)
    return f"{space.name}: {chosen.describe()}", space.net_cfg(chosen)


def _table(comparison) -> Table:
    table = Table(title="MACs per module (self: its submodules excluded), batch 1")
    for col in ("module", "type", "exact", "thop", "flop_counter (FLOPs/2)", "differs"):
        table.add_column(col, justify="left" if col in ("module", "type", "differs") else "right")
    for r in comparison.rows:
        note = []
        if r.thop != r.exact:
            note.append(f"thop {r.thop - r.exact:+,}")
        if r.flop_counter != r.exact:
            note.append(f"flop_counter {r.flop_counter - r.exact:+,}")
        table.add_row(
            escape(r.name or "(model)"),
            escape(r.type),
            f"{r.exact:,}",
            f"{r.thop:,}",
            f"{r.flop_counter:,}",
            "; ".join(note),
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        f"{comparison.exact:,}",
        f"{comparison.thop:,}",
        f"{comparison.flop_counter:,}",
        "",
    )
    return table


def _where(comparison) -> list[str]:
    """Sentences on where thop and flop_counter part from the exact count."""
    lines = []
    for counter in ("thop", "flop_counter"):
        more = [r for r in comparison.rows if getattr(r, counter) > r.exact]
        less = [r for r in comparison.rows if getattr(r, counter) < r.exact]
        for rows, word in ((more, "counts more"), (less, "counts less")):
            if not rows:
                continue
            diff = sum(abs(getattr(r, counter) - r.exact) for r in rows)
            kinds = ", ".join(sorted({r.type for r in rows}))
            lines.append(
                f"{counter} {word} in {len(rows)} module(s) ({diff:,} MACs in all): {kinds}"
            )
    return lines


def cost(
    target: Annotated[
        str | None,
        typer.Argument(
            help="A search space (built-in name or TOML file) or a .py file written by "
            "'fusion-nas export'.",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(help="Architecture JSON, or a .json file, of the space.", show_default=False),
    ] = None,
    search: Annotated[
        str | None,
        typer.Option(help="A stored search; use with --trial.", show_default=False),
    ] = None,
    trial: Annotated[
        int | None, typer.Option("--trial", "-t", help="Trial number.", show_default=False)
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Per module, the exact count beside thop's and torch.utils.flop_counter's.",
        ),
    ] = False,
    store: StoreOption = None,
) -> None:
    """Exact MACs (what thop-style tables call FLOPs) and parameters of one network.

    --compare prints, per module, the exact count beside thop's (which counts normalisation and
    pooling, and sees no attention matmul) and torch.utils.flop_counter's (FLOPs, 2 per MAC,
    shown halved), with the totals and where they differ.
    """
    with user_errors():
        from fusion_nas.deploy.counters import compare_counts
        from fusion_nas.model.cost import count_cost

        label, cfg = _target(target, arch, search, trial, store)
        shape = (1, cfg.in_channels, *cfg.size)
        if not compare:
            with torch.device("meta"):  # shapes only: nothing is allocated
                model = FusionNet(cfg)
                c = count_cost(model, torch.empty(shape))
            console.print(
                f"{escape(label)}\n[bold]{c.macs:,} MACs[/] per sample (reported as FLOPs by "
                f"thop-style tables), {c.params:,} parameters"
            )
            return
        torch.manual_seed(0)  # counts do not depend on the weights; keep the run repeatable
        model = FusionNet(cfg)
        comparison = compare_counts(model, torch.zeros(shape))
        console.print(escape(label))
        console.print(_table(comparison))
        console.print(
            f"Totals per sample: exact [bold]{comparison.exact:,}[/] MACs; thop "
            f"{comparison.thop:,}; flop_counter {comparison.flop_counter_flops:,} FLOPs = "
            f"{comparison.flop_counter:,} MACs; {comparison.params:,} parameters."
        )
        for line in _where(comparison) or ["All three counts agree on every module."]:
            console.print(escape(line))
        console.print(
            "thop counts normalisation (2 per value, 4 when affine) and average pooling, and "
            "nothing computed by functions (attention matmuls, nn.MultiheadAttention); "
            "flop_counter has no formula for the CPU scaled-dot-product-attention kernel."
        )
