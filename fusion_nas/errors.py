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


def allowed(values: Iterable[object]) -> str:
    """Format a closed set of allowed values for an error message, e.g. ``'a', 'b'``."""
    return ", ".join(repr(v) for v in values)


def one_line(error: BaseException | str, *, typed: bool = True, lines: int | None = None) -> str:
    """An exception (or text) as one line: whitespace collapsed, never empty.

    A :class:`FusionNasError` is its message; any other exception is prefixed with its type
    (``ValueError: ...``) unless ``typed`` is false. ``lines`` keeps only the first lines of a
    long multi-line message (driver and torch errors).
    """
    text = str(error).strip()
    if lines is not None:
        text = " ".join(text.splitlines()[:lines])
    text = " ".join(text.split())
    if isinstance(error, str):
        return text
    if not text:
        return type(error).__name__
    if isinstance(error, FusionNasError) or not typed:
        return text
    return f"{type(error).__name__}: {text}"
