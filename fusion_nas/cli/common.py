"""Shared CLI pieces: consoles, the user-error guard, the options several commands take.

Importing this module imports no torch: the options whose help or defaults come from the
training stack (``DeviceOption``, ``DEFAULT_BATCH_SIZE``, ``DEFAULT_LR``,
``DEFAULT_VAL_FRACTION``) are built on first access (module ``__getattr__``).
"""

from __future__ import annotations

import errno
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from fusion_nas.errors import MAX_LINE, DatasetError, FusionNasError, allowed, one_line
from fusion_nas.settings import HOME_ENV, STORE_ENV

if TYPE_CHECKING:
    from fusion_nas.model.space import SearchSpace

console = Console(highlight=False)
if not console.is_terminal:  # pipes and files: wide tables instead of 80-column wrapping
    console = Console(highlight=False, width=1000)  # rows stay whole; tables keep their size
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
        help="mnist1d, fashion-mnist, digits, synthetic, folder:PATH, cifar10:PATH or "
        "cifar100:PATH. "
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
PrecisionOption = Annotated[
    str,
    typer.Option(
        help="Training precision: 'fp32', 'bf16' (bfloat16 autocast) or 'fp16' (float16 "
        "autocast with a gradient scaler). A device that cannot train in it is refused before "
        "anything runs. Recorded; a search resumes only with the same.",
    ),
]
ChannelsLastOption = Annotated[
    bool,
    typer.Option(
        "--channels-last",
        help="Networks with 2-D convolutions and their image batches in channels-last "
        "(NHWC) memory layout; faster on GPUs and some CPUs. Recorded; a search may resume "
        "without it.",
    ),
]
CompileOption = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="Train through torch.compile: a compile of seconds to minutes per network, "
        "repaid only by long runs (benchmarks/compile_cost.py). Recorded; a search may "
        "resume without it.",
    ),
]
AugmentOption = Annotated[
    str | None,
    typer.Option(
        help="Random crop and horizontal flip of training images: 'crop,flip', 'crop', 'flip' "
        "or 'none'. Default: 'crop,flip' for natural images (folder:, cifar10:, cifar100:), "
        "'none' for the others; a resumed search keeps its own. Recorded.",
        show_default=False,
    ),
]
CropPaddingOption = Annotated[
    int, typer.Option(help="Zero padding (pixels per side) of the random crop.")
]
CutoutOption = Annotated[
    int, typer.Option(help="Side (pixels) of a square cut out of every training image; 0: off.")
]
MixupOption = Annotated[
    float, typer.Option(help="Mixup: alpha of the Beta(alpha, alpha) blend of batches; 0: off.")
]
LabelSmoothingOption = Annotated[float, typer.Option(help="Label smoothing of the loss; 0: off.")]
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
            f"{allowed(DATASETS)}, 'folder:PATH', 'cifar10:PATH' or 'cifar100:PATH'"
        )
    return space.name


# What a database error's message says -> the cause a user can act on.
_STORAGE_CAUSES = (
    ("readonly database", "the store is read-only (attempt to write a readonly database)"),
    ("read-only", "the store is read-only"),
    ("disk is full", "the disk holding the store is full (database or disk is full)"),
    ("no space left", "the disk holding the store is full (no space left on device)"),
    ("database is locked", "the store is locked by another process (database is locked)"),
    ("unable to open database", "the store's file cannot be opened (unable to open database)"),
    ("disk i/o error", "the store's disk failed to read or write (disk I/O error)"),
    ("malformed", "the store's file is damaged (database disk image is malformed)"),
)
STORAGE_EXIT = 1  # the store, not the command line, is at fault


def storage_cause(exc: BaseException) -> str | None:
    """The one-line cause of a database error (SQLAlchemy's, or sqlite3's under it), or ``None``
    when ``exc`` is not one."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 10:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    db = [e for e in seen if type(e).__module__.split(".")[0] in ("sqlalchemy", "sqlite3")]
    if not db:
        return None
    text = " ".join(str(getattr(e, "orig", None) or e) for e in db).lower()
    for fragment, cause in _STORAGE_CAUSES:
        if fragment in text:
            return f"cannot write the results store: {cause}"
    first = one_line(getattr(db[0], "orig", None) or db[0], lines=1, limit=160)
    return f"the results store failed: {first}"


class _OncePerKind(logging.Filter):
    """Let each kind of Optuna log message (its template, numbers aside) through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        kind = re.sub(r"\d+", "N", str(record.msg))
        if kind in self.seen:
            return False
        self.seen.add(kind)
        return True


_ONCE = _OncePerKind()


def quiet_optuna() -> None:
    """Show each known Optuna warning once per command, not once per trial (a resumed search
    with successive halving repeats them); experimental-feature notices not at all. For the
    commands that run trials (it imports Optuna)."""
    warnings.filterwarnings("ignore", message=r".*is experimental.*")
    warnings.filterwarnings("ignore", message=r"The reported value is ignored")
    warnings.filterwarnings("once", module=r"optuna(\.|$)")
    import optuna  # its handler is set up on import

    optuna.logging.get_verbosity()
    for handler in logging.getLogger("optuna").handlers:  # records of every optuna.* logger
        if _ONCE not in handler.filters:
            handler.addFilter(_ONCE)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`FusionNasError` into one red line on stderr and exit code 2, and a
    database error (read-only store, full disk, locked) into one line naming its cause and
    exit code 1; a full disk or a read-only place met while writing outputs likewise."""
    try:
        yield
    except FusionNasError as exc:
        err_console.print(
            f"[bold red]Error:[/] {escape(one_line(exc, limit=MAX_LINE))}", soft_wrap=True
        )
        raise typer.Exit(2) from None
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            raise
        where = f"{exc.filename!r}" if exc.filename else "a file"
        cause = {errno.ENOSPC: "the disk is full", errno.EROFS: "read-only file system"}.get(
            exc.errno or 0, exc.strerror or one_line(exc)
        )
        line = f"cannot use {where}: {cause}"
        err_console.print(
            f"[bold red]Error:[/] {escape(one_line(line, limit=MAX_LINE))}", soft_wrap=True
        )
        raise typer.Exit(STORAGE_EXIT) from None
    except Exception as exc:
        cause = storage_cause(exc)
        if cause is None:
            raise
        err_console.print(
            f"[bold red]Error:[/] {escape(one_line(cause, limit=MAX_LINE))}", soft_wrap=True
        )
        raise typer.Exit(STORAGE_EXIT) from None
