"""Name -> operator class registry; every searchable operator is created through it."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fusion_nas.errors import SpaceError, allowed

_REGISTRY: dict[str, type[nn.Module]] = {}


def register_op(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that registers an operator under ``name``."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"operator {name!r} is registered twice")
        _REGISTRY[name] = cls
        cls.op_name = name
        return cls

    return wrap


def list_ops() -> tuple[str, ...]:
    """Names of the registered operators, in registration order."""
    return tuple(_REGISTRY)


def get_op(name: str) -> type[nn.Module]:
    """The operator class registered under ``name``; unknown names raise :class:`SpaceError`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SpaceError(f"unknown operator {name!r}; allowed: {allowed(_REGISTRY)}") from None


def op_uses(name: str) -> tuple[str, ...]:
    """Which architecture fields (``kernel``, ``heads``, ``attention``) the operator reads."""
    return get_op(name).uses


def create_op(
    name: str,
    dim: int,
    channels: int,
    size: tuple[int, ...],
    *,
    kernel: int | None = None,
    heads: int | None = None,
    attention: str | None = None,
    window: int = 4,
    mlp_ratio: float = 2.0,
) -> nn.Module:
    """Build operator ``name`` for ``dim``-D maps of ``channels`` channels and spatial ``size``.

    Every operator keeps the shape: ``(B, C, L)`` in 1-D and ``(B, C, H, W)`` in 2-D.
    """
    return get_op(name)(
        dim,
        channels,
        size,
        kernel=kernel,
        heads=heads,
        attention=attention,
        window=window,
        mlp_ratio=mlp_ratio,
    )
