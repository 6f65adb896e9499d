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
from fusion_nas.store.queries import trial_row
from fusion_nas.store.store import Store

__all__ = [
    "NotFound",
    "link",
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
    """The trials of search ``name``."""
    try:
        return store.trials(name)
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
    """``(search, number, row)`` of the trial named by ``search=`` and ``number=``."""
    name = query_param(request, "search")
    number = number_param(request)
    df = search_trials(store_of(request), name)
    try:
        return name, number, trial_row(df, number, search=name)
    except StoreError as exc:
        raise NotFound(str(exc)) from None


def link(path: str, **params: Any) -> str:
    """``path?key=value&...`` with the values URL-encoded."""
    return f"{path}?{urlencode(params)}"
