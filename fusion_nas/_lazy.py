"""Lazy re-exports for package ``__init__`` modules (PEP 562 ``__getattr__``).

A package lists which public name lives in which submodule; the submodule is imported the
first time the name is read, so ``import fusion_nas.store.records`` does not load torch through
``fusion_nas/__init__.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, names: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` that import ``names[name]`` on first use.

    ``names`` maps each public name to its submodule, relative to ``package`` (``".space"``).
    """

    def __getattr__(name: str) -> Any:  # noqa: N807 (the PEP 562 hook)
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name], package), name)
        globals_ = importlib.import_module(package).__dict__
        globals_[name] = value  # cache: the next read does not come back here
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(set(names) | set(importlib.import_module(package).__dict__))

    return __getattr__, __dir__
