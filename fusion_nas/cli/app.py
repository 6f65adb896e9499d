"""The ``fusion-nas`` command: one Typer app, one module per command group.

Command modules are imported only when their command runs (or shows its own ``--help``):
``fusion-nas --help`` lists the commands from :data:`COMMANDS` without importing torch,
SQLAlchemy, pandas or Optuna, and ``fusion-nas results`` imports none of the training stack.
"""

from __future__ import annotations

import importlib
from typing import Any

import click
import typer
from typer.core import TyperGroup

# name -> (module, attribute, one-line help shown by ``fusion-nas --help``), in help order.
# The attribute is a command function, or a Typer app for a command group.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "spaces": (
        "fusion_nas.cli.spaces",
        "list_spaces",
        "List the built-in search spaces: input, stages and number of architectures.",
    ),
    "search": (
        "fusion_nas.cli.search",
        "search",
        "Search SPACE: sample architectures, proxy-train them, record every trial and the front.",
    ),
    "supernet": (
        "fusion_nas.cli.supernet",
        "supernet",
        "Train SPACE's supernet once (uniform path sampling), search it, confirm the front.",
    ),
    "results": (
        "fusion_nas.cli.results",
        "results",
        "List searches, or print the trials of NAME with the Pareto-optimal ones marked.",
    ),
    "export": (
        "fusion_nas.cli.export",
        "export",
        "Export a trial's architecture as standalone, readable PyTorch code (imports only torch).",
    ),
    "explain": (
        "fusion_nas.cli.explain",
        "explain",
        "Look inside a trained trial: fusion weights and gates, cost per stage, Grad-CAM/saliency "
        "and attention maps, on validation samples only.",
    ),
    "retrain": (
        "fusion_nas.cli.export",
        "retrain_command",
        "Retrain a trial's architecture from scratch on all training data and report TEST "
        "accuracy.",
    ),
    "pareto": (
        "fusion_nas.cli.pareto",
        "pareto",
        "Write the Pareto plot (validation accuracy vs. MACs) of NAMES as one offline HTML file.",
    ),
    "cost": (
        "fusion_nas.cli.cost",
        "cost",
        "Exact MACs (what thop-style tables call FLOPs) and parameters of one network.",
    ),
    "baselines": (
        "fusion_nas.cli.baselines",
        "baselines",
        "Train the reference networks of SPACE with the protocol of searched networks.",
    ),
    "serve": (
        "fusion_nas.cli.serve",
        "serve",
        "Serve the results dashboard: searches, Pareto plots, trials, code downloads.",
    ),
    "space": ("fusion_nas.cli.spaces", "space_app", "Inspect search spaces."),
}
# Commands that never touch Optuna: the app callback does not import it for them.
_NO_OPTUNA = frozenset({"spaces", "space"})


def load_command(name: str) -> click.Command:
    """The click command of ``name`` (:data:`COMMANDS`), importing its module now."""
    module, attr, _ = COMMANDS[name]
    target = getattr(importlib.import_module(module), attr)
    if isinstance(target, typer.Typer):
        group = typer.main.get_group(target)
        group.name = name
        return group
    single = typer.Typer(add_completion=False)
    single.command(name)(target)
    command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """A Typer group whose commands are imported on first use.

    The group's own help lists every command with its one-line help from :data:`COMMANDS`
    (no import); running a command, or asking for its ``--help``, imports its module.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._loaded: dict[str, click.Command] = {}
        self._listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, in help order."""
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``: a help-only stub while listing, else the real one."""
        if cmd_name not in COMMANDS:
            return None
        if self._listing and cmd_name not in self._loaded:
            return click.Command(cmd_name, help=COMMANDS[cmd_name][2])
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = load_command(cmd_name)
        return self._loaded[cmd_name]

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The group's help, listing commands without importing them."""
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="fusion-nas",
    cls=LazyGroup,
    help="Neural architecture search over conv/self-attention fusion strategies.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def _setup(ctx: typer.Context) -> None:
    """Neural architecture search over conv/self-attention fusion strategies."""
    if ctx.invoked_subcommand in _NO_OPTUNA:
        return
    from fusion_nas.store.store import quiet_optuna

    quiet_optuna()  # Optuna's per-trial INFO lines would break the progress bar


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # python -m fusion_nas.cli.app
    main()
