"""JSON-safe values and JSON text that stays inert inside HTML.

Trial tables hold NaN, numpy scalars and datetimes; :func:`plain` turns them into what JSON
knows. :func:`json_text` writes ``<``, ``>`` and ``&`` as ``\\u`` escapes, so the text can sit
in a ``<script type="application/json">`` element or be sniffed as HTML without effect.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from starlette.responses import JSONResponse

__all__ = ["SafeJSONResponse", "json_text", "plain"]


def plain(value: Any) -> Any:
    """``value`` with NaN/NaT -> None, numpy scalars -> Python, datetimes -> ISO text."""
    kind = type(value)
    # the common cases first, by exact type (a page of 10,000 trials holds 200,000 values);
    # subclasses (TrialStatus, numpy types) take the checks below
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {str(k): plain(v) for k, v in value.items()}
    if kind is list:
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, str):
        return str(value)  # str subclasses (TrialStatus) as their plain text
    return str(value)


def json_text(content: Any, indent: int | None = None) -> str:
    """JSON of :func:`plain` ``content`` with ``<``, ``>`` and ``&`` as ``\\u`` escapes."""
    separators = (",", ": ") if indent else (",", ":")
    text = json.dumps(
        plain(content), ensure_ascii=False, allow_nan=False, indent=indent, separators=separators
    )
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class SafeJSONResponse(JSONResponse):
    """A JSON response whose text never contains ``<``, ``>`` or ``&``."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content`` (NaN -> null, numpy and datetimes converted)."""
        return json_text(content).encode("utf-8")
