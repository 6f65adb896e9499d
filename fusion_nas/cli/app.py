"""The ``fusion-nas`` command: one Typer app, one module per command group."""

from __future__ import annotations

import typer

from fusion_nas.cli.baselines import baselines
from fusion_nas.cli.cost import cost
from fusion_nas.cli.explain import explain
from fusion_nas.cli.export import export, retrain_command
from fusion_nas.cli.pareto import pareto
from fusion_nas.cli.results import results
from fusion_nas.cli.search import search
from fusion_nas.cli.serve import serve
from fusion_nas.cli.spaces import list_spaces, space_app
from fusion_nas.cli.supernet import supernet
from fusion_nas.store.store import quiet_optuna

app = typer.Typer(
    name="fusion-nas",
    help="Neural architecture search over conv/self-attention fusion strategies.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def _setup() -> None:
    """Neural architecture search over conv/self-attention fusion strategies."""
    quiet_optuna()  # Optuna's per-trial INFO lines would break the progress bar


app.command("spaces")(list_spaces)
app.add_typer(space_app, name="space")
app.command("search")(search)
app.command("supernet")(supernet)
app.command("results")(results)
app.command("export")(export)
app.command("explain")(explain)
app.command("retrain")(retrain_command)
app.command("pareto")(pareto)
app.command("cost")(cost)
app.command("baselines")(baselines)
app.command("serve")(serve)


def main() -> None:
    """Console-script entry point."""
    app()
