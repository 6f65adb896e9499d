"""Three MAC counts side by side, per module: fusion-nas's exact one, thop's and PyTorch's.

Most published FLOPs tables were made with thop (``thop.profile``), so a user matching a paper's
number needs thop's count; :func:`compare_counts` runs all three on the same model and input:

- **exact**: :mod:`fusion_nas.model.cost`'s rules (convolutions, linear layers, every matmul,
einsum,
  ``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``), seen through a
  ``TorchFunctionMode``, attributed to the module whose own ``forward`` made the call;
- **thop**: hooks on leaf modules of known types only. It counts ``nn.Linear`` and convolutions
  like the exact count, but also counts normalisation (``2 * numel``, doubled when affine) and
  pooling as operations, and sees nothing a module computes with functions: the attention
  matmuls of ``F.scaled_dot_product_attention`` or ``q @ k``, and all of
  ``nn.MultiheadAttention``, count zero;
- **flop_counter**: ``torch.utils.flop_counter.FlopCounterMode``, which counts FLOPs of aten
  ops (2 per multiply-accumulate) per module; divided by 2 here to be MACs. Its CPU
  scaled-dot-product attention kernel has no formula in torch 2.13, so attention matmuls done
  by SDPA count zero there too, while explicit matmuls (linear attention) are counted.

Each count is per module *self*: what the module's own ``forward`` does, its submodules
excluded, so the rows add up to the totals. thop's counting mutates the model (it leaves
buffers on modules it has no rule for), so it runs on a copy.

:func:`exported_config` reads the ``CONFIG`` literal of a file written by ``fusion-nas export``
without running the file, so the network it builds can be counted.
"""

from __future__ import annotations

import ast
import copy
import importlib
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from fusion_nas.errors import FusionNasError
from fusion_nas.model import cost, nets

__all__ = [
    "COUNTERS",
    "Comparison",
    "CostError",
    "ModuleCount",
    "compare_counts",
    "exact_per_module",
    "exported_config",
    "flop_counter_per_module",
    "thop_per_module",
]

COUNTERS = ("exact", "thop", "flop_counter")
MAX_EXPORT_BYTES = 5_000_000  # an exported module is a few tens of kB


class CostError(FusionNasError):
    """A model or exported file cannot be counted."""


@dataclass(frozen=True)
class ModuleCount:
    """Self MACs of one module (its submodules excluded) by each counter."""

    name: str  # dotted name in ``model.named_modules()``; "" is the model itself
    type: str
    exact: int
    thop: int
    flop_counter: int  # MACs: FlopCounterMode's FLOPs / 2

    def differs(self) -> bool:
        """True when the three counts are not all equal."""
        return not (self.exact == self.thop == self.flop_counter)


@dataclass(frozen=True)
class Comparison:
    """The counts of :func:`compare_counts`: modules with any count, and totals."""

    rows: tuple[ModuleCount, ...]
    exact: int
    thop: int
    flop_counter: int  # MACs
    flop_counter_flops: int  # as FlopCounterMode reports them: 2 per MAC
    params: int

    def differing(self) -> tuple[ModuleCount, ...]:
        """The rows where the counters disagree."""
        return tuple(r for r in self.rows if r.differs())

    def row(self, name: str) -> ModuleCount:
        """The row of module ``name``; a module that no counter counts has all zeros."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)


# --------------------------------------------------------------------------- exact


class _ModuleCounter(TorchFunctionMode):
    """:mod:`fusion_nas.model.cost`'s rules, with each count charged to the innermost module."""

    def __init__(self) -> None:
        super().__init__()
        self.stack = [""]
        self.macs: dict[str, int] = defaultdict(int)
        self.suppress = 0  # > 0 inside a module counted whole by a module rule

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rule = cost._RULES.get(func)
        if rule is not None and not self.suppress:
            self.macs[self.stack[-1]] += int(rule(args, kwargs, out))
        return out


def _run(model: nn.Module, inputs: tuple) -> None:
    with torch.no_grad():
        model(*inputs)


def _eval_mode(model: nn.Module) -> Callable[[], None]:
    """Put ``model`` in eval mode; the returned function restores every module's mode."""
    modes = {m: m.training for m in model.modules()}
    model.eval()

    def restore() -> None:
        for m, training in modes.items():
            m.train(training)

    return restore


def exact_per_module(model: nn.Module, inputs: tuple) -> dict[str, int]:
    """Self MACs per module name by :mod:`fusion_nas.model.cost`'s rules (they add up to its
    total)."""
    counter = _ModuleCounter()
    handles = []

    def pre(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            rule = cost._MODULE_RULES.get(type(module))
            if rule is not None:
                if not counter.suppress:
                    counter.macs[name] += int(rule(module, args, kwargs))
                counter.suppress += 1
            counter.stack.append(name)

        return hook

    def post(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        counter.stack.pop()
        if type(module) in cost._MODULE_RULES:
            counter.suppress -= 1

    for name, m in model.named_modules():
        if name:
            handles.append(m.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(m.register_forward_hook(post, with_kwargs=True))
    restore = _eval_mode(model)
    try:
        with counter:
            _run(model, inputs)
    finally:
        for h in handles:
            h.remove()
        restore()
    return dict(counter.macs)


# --------------------------------------------------------------------------- thop


def _import_thop() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # thop imports distutils' LooseVersion
        try:
            return importlib.import_module("thop")
        except ImportError:
            raise CostError("the thop comparison needs thop; install: pip install thop") from None


def _self_counts(inclusive: dict[str, float], children: dict[str, list[str]]) -> dict[str, int]:
    """Self counts from inclusive ones: a module's count minus its direct children's."""
    return {
        n: int(round(v - sum(inclusive.get(c, 0) for c in children.get(n, ()))))
        for n, v in inclusive.items()
    }


def _children(model: nn.Module) -> dict[str, list[str]]:
    return {
        name: [f"{name}.{c}" if name else c for c, _ in m.named_children()]
        for name, m in model.named_modules()
    }


def thop_per_module(model: nn.Module, inputs: tuple) -> dict[str, int]:
    """Self MACs per module name as ``thop.profile`` counts them (on a copy of ``model``)."""
    thop = _import_thop()
    clone = copy.deepcopy(model)
    total, _, tree = thop.profile(clone, inputs=inputs, verbose=False, ret_layer_info=True)
    inclusive: dict[str, float] = {"": float(total)}

    def walk(prefix: str, node: dict) -> None:
        for n, (ops, _params, sub) in node.items():
            inclusive[prefix + n] = float(ops)
            walk(f"{prefix}{n}.", sub)

    walk("", tree)
    return _self_counts(inclusive, _children(model))


# --------------------------------------------------------------------------- flop_counter


def flop_counter_per_module(model: nn.Module, inputs: tuple) -> dict[str, int]:
    """Self FLOPs (2 per MAC) per module name by ``torch.utils.flop_counter.FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    restore = _eval_mode(model)
    try:
        mode = FlopCounterMode(display=False)
        with mode:
            _run(model, inputs)
    finally:
        restore()
    root = type(model).__name__
    inclusive: dict[str, float] = {}
    for key, ops in mode.get_flop_counts().items():
        if key == "Global":
            continue
        head, _, rest = key.partition(".")
        if head == root:  # keys are "<RootClass>.<dotted name>"; the root is "<RootClass>"
            inclusive[rest] = float(sum(ops.values()))
    inclusive.setdefault("", float(mode.get_total_flops()))
    return _self_counts(inclusive, _children(model))


# --------------------------------------------------------------------------- all three


def compare_counts(model: nn.Module, example_input: torch.Tensor | tuple) -> Comparison:
    """Per-module self MACs of ``model`` on ``example_input`` by the three counters.

    ``example_input`` is a tensor (pass a batch of one for per-sample counts) or a tuple of
    arguments. Rows are in module order and list every module any counter charges.
    """
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    exact = exact_per_module(model, inputs)
    thop = thop_per_module(model, inputs)
    flops = flop_counter_per_module(model, inputs)
    rows = []
    for name, m in model.named_modules():
        e, t, f = exact.get(name, 0), thop.get(name, 0), flops.get(name, 0)
        if e or t or f:
            rows.append(ModuleCount(name, type(m).__name__, e, t, f // 2))
    total_flops = sum(flops.values())
    return Comparison(
        rows=tuple(rows),
        exact=sum(exact.values()),
        thop=sum(thop.values()),
        flop_counter=total_flops // 2,
        flop_counter_flops=total_flops,
        params=cost.count_params(model),
    )


# --------------------------------------------------------------------------- exported files


def exported_config(path: str | Path) -> nets.NetCfg:
    """The ``CONFIG = NetCfg(...)`` literal of a file written by ``fusion-nas export``.

    The file is parsed, not run: its last ``CONFIG`` assignment must be a literal made of the
    config classes of :mod:`fusion_nas.model.nets` over numbers, words and tuples, which is then
    built with the package's classes. ``FusionNet(exported_config(path))`` is the file's model.
    """
    from fusion_nas.deploy.export import _is_literal

    p = Path(path)
    if not p.is_file():
        raise CostError(f"exported file {str(p)!r} does not exist")
    if p.stat().st_size > MAX_EXPORT_BYTES:
        raise CostError(f"{str(p)!r} is larger than {MAX_EXPORT_BYTES:,} bytes; not an export")
    try:
        tree = ast.parse(p.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
        raise CostError(f"{str(p)!r} is not a Python file: {exc}") from None
    classes = {n: c for n, c in vars(nets).items() if isinstance(c, type) and is_dataclass(c)}
    value = None
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "CONFIG"
        ):
            value = node.value
    if value is None or not _is_literal(value, set(classes)):
        raise CostError(
            f"{str(p)!r} has no CONFIG = NetCfg(...) literal; is it a fusion-nas export?"
        )
    try:
        code = compile(ast.Expression(value), str(p), "eval")
        cfg = eval(code, {"__builtins__": {}}, dict(classes))  # literal of config classes only
    except (ValueError, TypeError) as exc:
        raise CostError(f"CONFIG of {str(p)!r} is not a valid network config: {exc}") from None
    if not isinstance(cfg, nets.NetCfg):
        raise CostError(f"CONFIG of {str(p)!r} is a {type(cfg).__name__}, not a NetCfg")
    unknown = [s.block.operator for s in cfg.stages if s.block.operator not in nets.OPS]
    if unknown:
        raise CostError(
            f"CONFIG of {str(p)!r} uses operator {unknown[0]!r}, which is not registered here"
        )
    return cfg
