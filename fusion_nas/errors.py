"""One exception hierarchy for fusion-nas.

Every error the CLI shows to a user derives from :class:`FusionNasError`; its message is a single
line that names the bad value and, where there is a closed set, the allowed ones.
"""

from __future__ import annotations

from collections.abc import Iterable


class FusionNasError(Exception):
    """Base class of every error raised on purpose by fusion-nas."""


class SpaceError(FusionNasError):
    """A search-space file or an architecture does not fit the rules."""


class ArchitectureError(FusionNasError):
    """An architecture is malformed or does not belong to its space."""


class DatasetError(FusionNasError):
    """A dataset name is unknown or its files are missing or unreadable."""


class StoreError(FusionNasError):
    """The results store cannot be opened, or a search/trial is not in it."""


class StrategyError(FusionNasError):
    """A search strategy is unknown, misconfigured or unavailable."""


class TrialFailed(FusionNasError):
    """A trial ended without a usable result (NaN loss, timeout, exception)."""


class ExportError(FusionNasError):
    """An architecture cannot be exported as code."""


class FusionNasWarning(UserWarning):
    """Base class of the warnings fusion-nas gives (the CLI shows each as one yellow line)."""


class ShortProxyWarning(FusionNasWarning):
    """A trial's proxy run takes fewer optimiser steps than
    :data:`~fusion_nas.training.loop.MIN_PROXY_STEPS`; ``info`` holds the numbers (``n_train``,
    ``batch_size``, ``epochs``, ``steps``, ``minimum``) and what would reach the minimum
    (``advice``: a ``batch_size`` or ``None``, and ``epochs``)."""

    def __init__(self, message: str, **info: object) -> None:
        super().__init__(message)
        self.info = info


class ResourceError(FusionNasError):
    """An option asks for more work or memory than this machine or the space allows."""


class OutputError(FusionNasError):
    """An output path cannot be written (read-only, a directory, the same as another output)."""


MAX_LINE = 300  # characters of one error line; longer ones keep their head and allowed values
_ELLIPSIS = " … "


def allowed(values: Iterable[object]) -> str:
    """Format a closed set of allowed values for an error message, e.g. ``'a', 'b'``."""
    return ", ".join(repr(v) for v in values)


def shorten(text: str, limit: int = MAX_LINE) -> str:
    """``text`` cut to at most ``limit`` characters with an ellipsis in the middle; the
    ``allowed ...`` tail (the values a user may pass) is kept whole where it fits."""
    if len(text) <= limit:
        return text
    at = text.rfind("allowed")
    tail = text[at:] if at >= 0 else ""
    if tail and len(tail) <= limit // 2:
        head = text[: limit - len(tail) - len(_ELLIPSIS)].rstrip()
        return f"{head}{_ELLIPSIS}{tail}"
    return text[: limit - 1].rstrip() + "\u2026"


def one_line(
    error: BaseException | str,
    *,
    typed: bool = True,
    lines: int | None = None,
    limit: int | None = None,
) -> str:
    """An exception (or text) as one line: whitespace collapsed, never empty.

    A :class:`FusionNasError` is its message; any other exception is prefixed with its type
    (``ValueError: ...``) unless ``typed`` is false. ``lines`` keeps only the first lines of a
    long multi-line message (driver and torch errors). ``limit`` cuts the line to that many
    characters (e.g. :data:`MAX_LINE`, as the CLI prints errors) by :func:`shorten`, which
    keeps the allowed values readable; the default keeps it whole (stored reasons, and text
    that is redacted afterwards).
    """
    text = str(error).strip()
    if lines is not None:
        text = " ".join(text.splitlines()[:lines])
    text = " ".join(text.split())
    if not isinstance(error, str):
        if not text:
            text = type(error).__name__
        elif typed and not isinstance(error, FusionNasError):
            text = f"{type(error).__name__}: {text}"
    return shorten(text, limit) if limit is not None else text
