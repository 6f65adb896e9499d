"""Exact cost model: multiply-accumulates (MACs, reported as "FLOPs" like thop) and parameters.

Counting rules (per forward pass of the example input, batch included):

- convolution: ``out.numel() * (C_in / groups) * prod(kernel)``; transposed convolution
  ``in.numel() * (C_out / groups) * prod(kernel)``;
- linear / addmm / matmul / bmm / ``@`` / two-operand einsum: one MAC per multiply of the product;
- ``F.scaled_dot_product_attention``: ``QK^T`` plus ``AV``: ``L*S*E + L*S*E_v`` per batch and head;
- ``nn.MultiheadAttention``: input projections, ``QK^T``, ``AV`` and output projection, counted
  from the module (its fused CPU fast path is opaque, and thop counts it as zero);
- normalisation, activations, pooling and element-wise arithmetic are not MACs and count zero.

Functional calls are seen through a ``TorchFunctionMode``, so any ``nn.Module`` is covered,
whatever mix of modules and functions it uses. The count does not depend on train/eval mode or
on grad mode: the model runs once in eval mode under ``no_grad`` and its modes are restored.
Only shapes matter, so :func:`count_cost` works on ``meta`` tensors too, and :func:`arch_cost`
counts an architecture that way: the model is built on the ``meta`` device, nothing is
allocated, and a network of 10^8 channels costs milliseconds, not an out-of-memory error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from fusion_nas.model.arch import Architecture
from fusion_nas.model.nets import FusionNet
from fusion_nas.model.space import SearchSpace, load_space


@dataclass(frozen=True)
class Cost:
    """MACs and parameter count of one forward pass."""

    macs: int
    params: int

    @property
    def flops(self) -> int:
        """MACs under the name the article and thop use."""
        return self.macs


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else ()


def _prod(xs: Any) -> int:
    return int(math.prod(xs))


def _matmul_macs(a: tuple[int, ...], b: tuple[int, ...], out: tuple[int, ...]) -> int:
    """MACs of ``a @ b`` under broadcasting: every output element needs ``k`` multiplies."""
    k = a[-1] if a else 1
    return _prod(out) * k if out else k


def _conv_macs(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
    return out.numel() * _prod(weight.shape[1:])  # weight: (C_out, C_in/groups, *k)


def _conv_transpose_macs(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    x = kwargs.get("input", args[0])
    weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
    return x.numel() * _prod(weight.shape[1:])  # weight: (C_in, C_out/groups, *k)


def _linear_macs(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
    return out.numel() * weight.shape[1]  # weight: (out_features, in_features)


def _mm_macs(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    a, b = args[0], args[1]
    return _matmul_macs(_shape(a), _shape(b), _shape(out))


def _addmm_macs(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    a, b = args[1], args[2]  # (input, mat1, mat2)
    return _matmul_macs(_shape(a), _shape(b), _shape(out))


def _sdpa_macs(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    q = kwargs.get("query", args[0])
    k = kwargs.get("key", args[1] if len(args) > 1 else None)
    v = kwargs.get("value", args[2] if len(args) > 2 else None)
    L, E = q.shape[-2], q.shape[-1]
    S, Ev = k.shape[-2], v.shape[-1]
    batch = _prod(out.shape[:-2])
    return batch * (L * S * E + L * S * Ev)


def _einsum_macs(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    equation, *operands = args
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    if len(operands) != 2:
        raise NotImplementedError("cost model counts two-operand einsum only")
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for letters, t in zip(lhs, operands):
        if "." in letters:
            raise NotImplementedError("cost model does not count einsum with '...'")
        sizes.update(zip(letters, t.shape))
    return _prod(sizes.values())  # one multiply per point of the joint index space


_RULES: dict[Callable, Callable[[tuple, dict, torch.Tensor], int]] = {
    F.conv1d: _conv_macs,
    F.conv2d: _conv_macs,
    F.conv3d: _conv_macs,
    F.conv_transpose1d: _conv_transpose_macs,
    F.conv_transpose2d: _conv_transpose_macs,
    F.conv_transpose3d: _conv_transpose_macs,
    F.linear: _linear_macs,
    torch.matmul: _mm_macs,
    torch.mm: _mm_macs,
    torch.bmm: _mm_macs,
    torch.Tensor.matmul: _mm_macs,
    torch.Tensor.__matmul__: _mm_macs,
    torch.Tensor.mm: _mm_macs,
    torch.Tensor.bmm: _mm_macs,
    torch.addmm: _addmm_macs,
    torch.baddbmm: _addmm_macs,
    torch.einsum: _einsum_macs,
    F.scaled_dot_product_attention: _sdpa_macs,
}


def _mha_macs(m: nn.MultiheadAttention, args: tuple, kwargs: dict) -> int:
    """Projections + QK^T + AV + output projection of ``nn.MultiheadAttention``."""
    query = kwargs.get("query", args[0])
    key = kwargs.get("key", args[1] if len(args) > 1 else query)
    q_shape, k_shape = tuple(query.shape), tuple(key.shape)
    if query.dim() == 2:  # unbatched (L, E)
        batch, L, S = 1, q_shape[0], k_shape[0]
    elif m.batch_first:
        batch, L, S = q_shape[0], q_shape[1], k_shape[1]
    else:
        batch, L, S = q_shape[1], q_shape[0], k_shape[0]
    E = m.embed_dim
    proj = L * E * E + S * m.kdim * E + S * m.vdim * E  # Q, K, V input projections
    attn = 2 * L * S * E  # QK^T and AV summed over heads (E = heads * head_dim)
    out = L * E * E  # output projection
    return batch * (proj + attn + out)


_MODULE_RULES: dict[type[nn.Module], Callable[[Any, tuple, dict], int]] = {
    nn.MultiheadAttention: _mha_macs,
}


class _Counter(TorchFunctionMode):
    """Adds up MACs of functional calls; silent while inside a module counted by a module rule."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0
        self.suppress = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rule = _RULES.get(func)
        if rule is not None and not self.suppress:
            self.macs += int(rule(args, kwargs, out))
        return out


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_cost(model: nn.Module, example_input: torch.Tensor | tuple) -> Cost:
    """Exact MACs and parameters of ``model`` on ``example_input`` (a tensor or a tuple of args).

    MACs are for the whole example batch; pass a batch of one for per-sample cost.
    """
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    counter = _Counter()
    handles = []

    def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not counter.suppress:
            counter.macs += _MODULE_RULES[type(module)](module, args, kwargs)
        counter.suppress += 1

    def post(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        counter.suppress -= 1

    for m in model.modules():
        if type(m) in _MODULE_RULES:
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post, with_kwargs=True))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.train(training)
    return Cost(macs=counter.macs, params=count_params(model))


def arch_cost(arch: Architecture, space: SearchSpace | None = None) -> Cost:
    """Exact MACs (batch of one) and parameters of ``arch``, without allocating its model.

    The model and its example input are built on the ``meta`` device: they carry shapes only.
    The space defaults to the built-in one ``arch`` names; ``arch`` must belong to it.
    """
    space = space if space is not None else load_space(arch.space)
    cfg = space.net_cfg(arch)
    with torch.device("meta"):
        model = FusionNet(cfg)
        example = torch.empty(space.input_shape(1))
    return count_cost(model, example)
