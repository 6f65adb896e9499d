"""HTML pages from the Jinja templates in ``templates/``, autoescaped: user text stays text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

__all__ = ["STATIC_DIR", "TEMPLATES", "render"]

_HERE = Path(__file__).parent
STATIC_DIR = _HERE / "static"

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def render(template: str, **context: Any) -> str:
    """The page ``template`` (a file in ``templates/``) filled with ``context``."""
    return TEMPLATES.get_template(template).render(**context)
