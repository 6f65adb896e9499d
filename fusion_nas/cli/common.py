"""Shared CLI pieces: consoles, the user-error guard, the options several commands take.

Importing this module imports no torch: the options whose help or defaults come from the
training stack (``DeviceOption``, ``DEFAULT_BATCH_SIZE``, ``DEFAULT_LR``,
``DEFAULT_VAL_FRACTION``) are built on first access (module ``__getattr__``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from fusion_nas.errors import DatasetError, FusionNasError, allowed, one_line
from fusion_nas.settings import HOME_ENV, STORE_ENV

if TYPE_CHECKING:
    from fusion_nas.model.space import SearchSpace

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


SpaceArgument = Annotated[str, typer.Argument(help="Built-in space name or path to a .toml file.")]
DatasetOption = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        "-d",
        help="mnist1d, fashion-mnist, digits, synthetic or folder:PATH. "
        "Default: the dataset named like the space.",
        show_default=False,
    ),
]
BatchSizeOption = Annotated[int, typer.Option(help="Proxy batch size.")]
LrOption = Annotated[float, typer.Option(help="AdamW peak learning rate.")]
TrainSubsetOption = Annotated[
    int | None,
    typer.Option(help="Proxy-train on the first N training samples only.", show_default=False),
]
ValFractionOption = Annotated[
    float, typer.Option(help="Share of the training data held out for validation.")
]
DataDirOption = Annotated[
    str | None,
    typer.Option(
        help="Directory with the dataset's files (fashion-mnist idx files).", show_default=False
    ),
]
_TRAINING_NAMES = ("DeviceOption", "DEFAULT_BATCH_SIZE", "DEFAULT_LR", "DEFAULT_VAL_FRACTION")


def __getattr__(name: str) -> Any:
    """Build the training-stack options on first access (they import torch)."""
    if name not in _TRAINING_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from fusion_nas.training.devices import DEVICE_HELP
    from fusion_nas.training.loop import ProxyConfig

    proxy = ProxyConfig()  # the defaults the proxy options show
    values = {
        "DeviceOption": Annotated[str, typer.Option(help=DEVICE_HELP)],
        "DEFAULT_BATCH_SIZE": proxy.batch_size,
        "DEFAULT_LR": proxy.lr,
        "DEFAULT_VAL_FRACTION": proxy.val_fraction,
    }
    globals().update(values)
    return values[name]


def dataset_of(space: SearchSpace, dataset: str | None) -> str:
    """``--dataset``, else the dataset named like the space; one line when there is none."""
    if dataset is not None:
        return dataset
    from fusion_nas.training.data import DATASETS

    if space.name not in DATASETS:
        raise DatasetError(
            f"space {space.name!r} has no default dataset; pass --dataset, one of: "
            f"{allowed(DATASETS)} or 'folder:PATH'"
        )
    return space.name


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`FusionNasError` into one red line on stderr and exit code 2."""
    try:
        yield
    except FusionNasError as exc:
        err_console.print(f"[bold red]Error:[/] {escape(one_line(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
