"""``fusion-nas spaces`` and ``fusion-nas space show``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fusion_nas.cli.common import console, user_errors

if TYPE_CHECKING:
    from fusion_nas.model.space import SearchSpace, StageSpec

space_app = typer.Typer(help="Inspect search spaces.", no_args_is_help=True)


def _input_text(space: SearchSpace) -> str:
    shape = "x".join(str(s) for s in space.size)
    return f"{space.kind} {shape}x{space.channels}, {space.classes} classes"


def list_spaces() -> None:
    """List the built-in search spaces: input, stages and number of architectures."""
    from fusion_nas.model.space import builtin_spaces, load_space

    with user_errors():
        table = Table(title="Built-in search spaces (search_spaces/)")
        for col in ("name", "input", "stages", "architectures", "description"):
            table.add_column(col, justify="right" if col == "architectures" else "left")
        for name in builtin_spaces():
            space = load_space(name)
            table.add_row(
                escape(space.name),
                _input_text(space),
                str(len(space.stages)),
                f"{space.num_architectures():,}"
                + (f" ({len(space.zoo_members)} zoo)" if space.zoo_members else ""),
                escape(space.description),
            )
        console.print(table)


def _other_text(st: StageSpec) -> str:
    """The vocabulary fields a stage sets away from the defaults: ``act gelu|relu; se 0.25``."""
    from fusion_nas.model.configs import nets_view

    defaults = nets_view().BlockCfg("conv", 1)
    parts = [
        f"{f} {'|'.join(f'{v:g}' if isinstance(v, float) else str(v) for v in getattr(st, f))}"
        for f in ("act", "norm", "expand", "pos", "tkernel")
        if getattr(st, f) != (getattr(defaults, f),)
    ]
    parts += [
        f"{f} {v:g}" if isinstance(v, float) else f"{f} {v}"
        for f, v in st.settings
        if v != getattr(defaults, f)
    ]
    return "; ".join(parts) or "-"


@space_app.command("show")
def show(
    space: Annotated[str, typer.Argument(help="Built-in space name or path to a .toml file.")],
) -> None:
    """Show a space's input, stem and the choices of every stage."""
    from fusion_nas.model.space import load_space

    with user_errors():
        sp = load_space(space)
        console.print(f"[bold]{escape(sp.name)}[/]: {escape(sp.description)}")
        head = sp.head.kind + (f" width {sp.head.width}" if sp.head.width else "")
        head += " distilled" if sp.head.distill else ""
        console.print(
            f"input {_input_text(sp)}; stem {sp.stem.kind} k{sp.stem.kernel} stride "
            f"{sp.stem.stride} -> {sp.stem.width} ch ({sp.stem.act}); head {head}; "
            f"MLP ratio {sp.mlp_ratio:g}; {sp.num_architectures():,} architectures"
        )
        table = Table()
        for col in (
            "stage",
            "size",
            "operator",
            "kernel",
            "heads",
            "attention",
            "mlp ratio",
            "width",
            "depth",
            "window",
            "downsample",
            "other",
            "choices",
        ):
            table.add_column(col)
        for i, (st, size) in enumerate(zip(sp.stages, sp.stage_sizes())):
            table.add_row(
                str(i),
                "x".join(map(str, size)),
                ", ".join(st.operator),
                ", ".join(map(str, st.kernel)),
                ", ".join(map(str, st.heads)),
                ", ".join(st.attention),
                ", ".join(f"{r:g}" for r in st.mlp_ratio),
                ", ".join(map(str, st.width)),
                ", ".join(map(str, st.depth)),
                str(st.window),
                ", ".join(st.downsample),
                _other_text(st),
                f"{st.count():,}",
            )
        console.print(table)
        if sp.zoo_members:
            console.print(_members_table(sp))


def _members_table(sp: SearchSpace) -> Table:
    """The space's zoo members, scaled to its input, and their exact cost."""
    from fusion_nas.model.cost import arch_cost

    table = Table(
        title=f"Zoo members (width x{sp.zoo.get('width', 1.0):g}, depth "
        f"x{sp.zoo.get('depth', 1.0):g}; --start-from NAME queues one)",
        title_justify="left",
    )
    for col in ("member", "stem stride", "downsampling stages", "MACs", "params"):
        table.add_column(col, justify="left" if col == "member" else "right")
    for name in sp.zoo_members:
        member = sp.member_space(name)
        cost = arch_cost(sp.member_arch(name), sp)
        downs = sum(st.downsample[0] != "none" for st in member.stages)
        table.add_row(
            escape(name),
            str(member.stem.stride),
            f"{downs} of {len(member.stages)}",
            f"{cost.macs:,}",
            f"{cost.params:,}",
        )
    return table
