"""What a dashboard request asks for: its query parameters, its search and its trial.

Search names travel as query parameters, so any name works. A missing parameter, an unknown
search or an unknown trial raises :class:`NotFound`, which the app answers with a 404.
Lookups go through the store and :mod:`fusion_nas.store.queries`, never around them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pandas as pd
from starlette.requests import Request

from fusion_nas.errors import StoreError
from fusion_nas.store.handles import StoredSearch, StoredTrial
from fusion_nas.store.queries import trial_row, trials_frame
from fusion_nas.store.store import Store

__all__ = [
    "NotFound",
    "int_param",
    "link",
    "numbers_param",
    "number_param",
    "query_param",
    "stored_search",
    "stored_trial_of",
    "search_trials",
    "store_of",
    "trial_of",
]


class NotFound(Exception):
    """An unknown search or trial, or a missing parameter; answered with a 404."""


def query_param(request: Request, key: str) -> str:
    """The non-empty query parameter ``key``."""
    value = request.query_params.get(key)
    if value is None or value == "":
        raise NotFound(f"missing query parameter {key!r}")
    return value


def number_param(request: Request, key: str = "number") -> int:
    """The trial number in query parameter ``key`` (whole numbers only)."""
    raw = query_param(request, key)
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise NotFound(f"no trial {raw!r}: trial numbers are whole numbers")
    return int(raw)


def store_of(request: Request) -> Store:
    """The store the app serves."""
    return request.app.state.store


def _unknown(name: str) -> NotFound:
    # The store's own message names the store URL and every search; a page shows less.
    return NotFound(f"no search named {name!r}")


def search_trials(store: Store, name: str) -> pd.DataFrame:
    """The trials of search ``name`` (read again only where they changed since last asked)."""
    try:
        return store.search_frame(store.search(name))
    except StoreError:
        raise _unknown(name) from None


def stored_search(store: Store, name: str) -> StoredSearch:
    """The handle of search ``name`` (its record, parsed space and typed trials)."""
    try:
        return store.search(name)
    except StoreError:
        raise _unknown(name) from None


def stored_trial_of(request: Request) -> tuple[StoredSearch, StoredTrial]:
    """The handle and typed trial named by ``search=`` and ``number=``."""
    name = query_param(request, "search")
    number = number_param(request)
    search = stored_search(store_of(request), name)
    try:
        return search, search.trial(number)
    except StoreError as exc:
        raise NotFound(str(exc)) from None


def trial_of(request: Request) -> tuple[str, int, dict[str, Any]]:
    """``(search, number, row)`` of the trial named by ``search=`` and ``number=``.

    Reads that one trial (:meth:`Store.trial <fusion_nas.store.store.Store.trial>`), not the
    whole search.
    """
    name = query_param(request, "search")
    number = number_param(request)
    store = store_of(request)
    search = stored_search(store, name)
    try:
        rec = search.trial(number).record
    except StoreError as exc:
        raise NotFound(str(exc)) from None
    row = trial_row(trials_frame([rec], search.cost_column), number, search=name)
    row["on_front"] = store.on_front(search, rec)
    return name, number, row


def int_param(request: Request, key: str, default: int | None = None) -> int | None:
    """The optional whole-number query parameter ``key`` (``default`` if absent or empty)."""
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"-?[0-9]{1,9}", raw):
        raise NotFound(f"query parameter {key!r} must be a whole number, not {raw!r}")
    return int(raw)


def numbers_param(request: Request, key: str) -> list[int]:
    """Trial numbers in the comma-separated query parameter ``key`` (empty if absent)."""
    raw = request.query_params.get(key) or ""
    parts = [p for p in raw.split(",") if p]
    if not all(re.fullmatch(r"[0-9]{1,9}", p) for p in parts):
        raise NotFound(f"query parameter {key!r} must list trial numbers, e.g. '3,7'")
    return [int(p) for p in parts]


def link(path: str, **params: Any) -> str:
    """``path?key=value&...`` with the values URL-encoded."""
    return f"{path}?{urlencode(params)}"
