"""Operators by name: a view over :data:`fusion_nas.model.nets.OPS` with one-line errors.

``nets.py`` defines and registers every operator (``@register_op``); this module lists them,
looks them up and builds them for the toolkit, turning config errors into :class:`SpaceError`.
Listing and looking up go through :func:`~fusion_nas.model.configs.nets_view`, so they do not
import torch; :func:`create_op` and the registering decorators import ``nets``.
The names of ``nets`` in ``__all__`` below are read from that view on access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fusion_nas.errors import SpaceError, allowed
from fusion_nas.model.configs import nets_view

if TYPE_CHECKING:
    from torch import nn

    from fusion_nas.model.nets import BlockCfg

_FROM_NETS = (
    "ATTENTIONS",
    "HEADS",
    "STEMS",
    "FUSION_INIT",
    "OPS",
    "SEARCHABLE",
    "BlockCfg",
    "CfgError",
    "NetCfg",
    "StageCfg",
)
_REGISTERS = (
    "register_attention",
    "register_head",
    "register_op",
    "register_stem",
)  # these import nets: they register there

__all__ = [  # the registry and the config classes it builds from, in one import
    *_FROM_NETS,
    *_REGISTERS,
    "block_cfg",
    "create_op",
    "get_op",
    "list_attentions",
    "list_ops",
    "op_uses",
]


def __getattr__(name: str) -> Any:
    """``OPS``, ``BlockCfg``, ... from :func:`nets_view`; the decorators from ``nets``."""
    if name in _FROM_NETS:
        return getattr(nets_view(), name)
    if name in _REGISTERS:
        from fusion_nas.model import nets

        return getattr(nets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def list_ops() -> tuple[str, ...]:
    """Names of the registered operators, in registration order."""
    return tuple(nets_view().OPS)


def list_attentions() -> tuple[str, ...]:
    """Names of the registered attention variants, in registration order."""
    return tuple(nets_view().ATTENTIONS)


def get_op(name: str) -> type[nn.Module]:
    """The block class registered under ``name``; unknown names raise :class:`SpaceError`.

    Before ``nets`` is imported, the class is the torch-free view's (its ``uses`` and
    ``op_name``, no body); :func:`create_op` builds from ``nets`` itself.
    """
    ops = nets_view().OPS
    try:
        return ops[name]
    except (KeyError, TypeError):
        raise SpaceError(f"unknown operator {name!r}; allowed: {allowed(ops)}") from None


def op_uses(name: str) -> tuple[str, ...]:
    """The :class:`BlockCfg` fields a search chooses for operator ``name`` (e.g. ``kernel``)."""
    return get_op(name).uses


def block_cfg(operator: str, width: int, **fields: Any) -> BlockCfg:
    """``BlockCfg(operator, width, **fields)``; a bad value raises a one-line SpaceError."""
    get_op(operator)
    view = nets_view()
    try:
        return view.BlockCfg(operator, width, **fields)
    except view.CfgError as exc:
        raise SpaceError(f"{operator} block: {exc}") from None


def create_op(cfg: BlockCfg | str, size: tuple[int, ...], **fields: Any) -> nn.Module:
    """The block of ``cfg`` for maps of spatial ``size``: ``(L,)`` or ``(H, W)``.

    ``cfg`` is a :class:`BlockCfg`, or an operator name completed by ``fields`` (``width=``
    and any other BlockCfg field). Every block keeps the shape ``(B, C, *size)``.
    """
    from fusion_nas.model import nets  # builds a module: torch from here on

    if isinstance(cfg, str):
        cfg = block_cfg(cfg, **fields)
    elif fields:
        raise SpaceError(f"fields {sorted(fields)} given with a BlockCfg; give one or the other")
    if not isinstance(size, tuple) or len(size) not in (1, 2):
        raise SpaceError(f"size {size!r} is not allowed; allowed: (L,) or (H, W)")
    get_op(cfg.operator)
    return nets.OPS[cfg.operator](cfg, size)
