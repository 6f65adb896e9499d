"""Shared CLI pieces: consoles, the user-error guard, store options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from fusion_nas.errors import FusionNasError, one_line
from fusion_nas.settings import HOME_ENV, STORE_ENV

console = Console(highlight=False)
if not console.is_terminal:  # pipes and files: wide tables instead of 80-column wrapping
    console = Console(highlight=False, width=200)
err_console = Console(stderr=True, highlight=False, width=10_000)  # errors stay on one line

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help=f"Results store: any SQLAlchemy URL. Default: ${STORE_ENV}, else "
        f"sqlite:///HOME/fusion_nas.db where HOME is ${HOME_ENV} (default: ./results).",
        show_default=False,
    ),
]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`FusionNasError` into one red line on stderr and exit code 2."""
    try:
        yield
    except FusionNasError as exc:
        err_console.print(f"[bold red]Error:[/] {escape(one_line(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
