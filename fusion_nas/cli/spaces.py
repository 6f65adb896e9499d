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
                f"{space.num_architectures():,}",
                escape(space.description),
            )
        console.print(table)


def _other_text(st: StageSpec) -> str:
    """The vocabulary fields a stage sets away from the defaults: ``act gelu|relu; se 0.25``."""
    from fusion_nas.model.configs import nets_view

    defaults = nets_view().BlockCfg("conv", 1)
    parts = [
        f"{f} {'|'.join(f'{v:g}' if isinstance(v, float) else str(v) for v in getattr(st, f))}"
        for f in ("act", "norm", "expand", "pos")
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
