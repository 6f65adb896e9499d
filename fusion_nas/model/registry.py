"""Operators by name: a view over :data:`fusion_nas.model.nets.OPS` with one-line errors.

``nets.py`` defines and registers every operator (``@register_op``); this module lists them,
looks them up and builds them for the toolkit, turning config errors into :class:`SpaceError`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fusion_nas.errors import SpaceError, allowed
from fusion_nas.model.nets import (
    ATTENTIONS,
    FUSION_INIT,
    OPS,
    SEARCHABLE,
    BlockCfg,
    CfgError,
    NetCfg,
    StageCfg,
    register_attention,
    register_op,
)

__all__ = [  # the registry and the config classes it builds from, in one import
    "ATTENTIONS",
    "FUSION_INIT",
    "OPS",
    "SEARCHABLE",
    "BlockCfg",
    "CfgError",
    "NetCfg",
    "StageCfg",
    "block_cfg",
    "create_op",
    "get_op",
    "list_attentions",
    "list_ops",
    "op_uses",
    "register_attention",
    "register_op",
]


def list_ops() -> tuple[str, ...]:
    """Names of the registered operators, in registration order."""
    return tuple(OPS)


def list_attentions() -> tuple[str, ...]:
    """Names of the registered attention variants, in registration order."""
    return tuple(ATTENTIONS)


def get_op(name: str) -> type[nn.Module]:
    """The block class registered under ``name``; unknown names raise :class:`SpaceError`."""
    try:
        return OPS[name]
    except (KeyError, TypeError):
        raise SpaceError(f"unknown operator {name!r}; allowed: {allowed(OPS)}") from None


def op_uses(name: str) -> tuple[str, ...]:
    """The :class:`BlockCfg` fields a search chooses for operator ``name`` (e.g. ``kernel``)."""
    return get_op(name).uses


def block_cfg(operator: str, width: int, **fields: Any) -> BlockCfg:
    """``BlockCfg(operator, width, **fields)``; a bad value raises a one-line SpaceError."""
    get_op(operator)
    try:
        return BlockCfg(operator, width, **fields)
    except CfgError as exc:
        raise SpaceError(f"{operator} block: {exc}") from None


def create_op(cfg: BlockCfg | str, size: tuple[int, ...], **fields: Any) -> nn.Module:
    """The block of ``cfg`` for maps of spatial ``size``: ``(L,)`` or ``(H, W)``.

    ``cfg`` is a :class:`BlockCfg`, or an operator name completed by ``fields`` (``width=``
    and any other BlockCfg field). Every block keeps the shape ``(B, C, *size)``.
    """
    if isinstance(cfg, str):
        cfg = block_cfg(cfg, **fields)
    elif fields:
        raise SpaceError(f"fields {sorted(fields)} given with a BlockCfg; give one or the other")
    if not isinstance(size, tuple) or len(size) not in (1, 2):
        raise SpaceError(f"size {size!r} is not allowed; allowed: (L,) or (H, W)")
    return get_op(cfg.operator)(cfg, size)
