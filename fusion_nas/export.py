"""Architecture -> standalone, readable PyTorch source (plus weights and ONNX on request).

The generated module imports only ``torch``: one small class per operator the architecture uses
(and only the attention variants it uses), the pieces they need, and a ``FusionNet`` whose
``__init__`` spells out stem, stages and head with literal arguments. Its ``state_dict`` has the
same keys and shapes as the toolkit model of the same architecture, so saved weights load with
``strict=True``; built under the same seed it even gets the same initial weights.

Code generation follows ``torch.fx``'s rules: every identifier comes from a fixed namespace (the
class names below, chosen by operator, never derived from user input); every literal is the
``repr()`` of a validated ``int``/``float`` or of a fixed string; user text (space name and
description, search name, store URL, ...) only reaches the module docstring after sanitising
(ASCII, no quotes or backslashes, one line, length-capped). The result is ``ast.parse``-d and its
structure checked before anything is returned or written; a mismatch is an :class:`ExportError`.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import math
import os
import re
import secrets
import textwrap
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusion_nas.arch import Architecture
from fusion_nas.cost import count_cost
from fusion_nas.errors import ExportError, FusionNasError, allowed
from fusion_nas.ops.parallel import FUSION_INIT
from fusion_nas.ops.registry import op_uses
from fusion_nas.space import SearchSpace, load_space
from fusion_nas.store import redact_url

__all__ = ["META_KEYS", "ONNX_OPSET", "export_code", "write_export"]

META_KEYS = ("val_accuracy", "search", "trial", "store_url", "note", "weights_file")
"""Keys ``meta`` may hold; all optional. ``weights_file`` names the file in the load hint."""

ONNX_OPSET = 17  # legacy (TorchScript) exporter; SDPA with a boolean mask exports from opset 14

# The fixed namespace: operator -> generated class, and the fields each operator reads.
_OP_CLASSES = {
    "conv": "ConvBlock",
    "attention": "AttentionBlock",
    "parallel": "ParallelBlock",
    "gated": "GatedBlock",
}
_OP_USES = {
    "conv": ("kernel",),
    "attention": ("heads", "attention"),
    "parallel": ("kernel", "heads", "attention"),
    "gated": ("kernel", "heads", "attention"),
}
# Attention variants the templates implement (a new toolkit variant needs a template first).
_VARIANTS = ("global", "window", "linear")
_LINE = 88  # ruff's default line length; the project allows 100, so 88 passes both
_DOC_WIDTH = 84  # docstring text is wrapped to this width
_ONNX_HINT = "pip install -e '.[onnx]'"
# String constants the code templates use; any other string outside a docstring is rejected.
_CODE_STRINGS = frozenset({"fan_out", "relu", *_VARIANTS})
_FORBIDDEN_NAMES = frozenset(
    {
        "__import__",
        "__builtins__",
        "breakpoint",
        "builtins",
        "compile",
        "delattr",
        "eval",
        "exec",
        "getattr",
        "globals",
        "importlib",
        "input",
        "locals",
        "open",
        "os",
        "setattr",
        "subprocess",
        "sys",
        "system",
        "vars",
    }
)


# --------------------------------------------------------------------------- validated plan


@dataclass(frozen=True)
class _Stage:
    op: str
    cls: str
    width: int
    depth: int
    kernel: int | None
    heads: int | None
    attention: str | None
    window: int
    in_width: int
    downsample: bool
    size: tuple[int, ...]
    hidden: int


@dataclass(frozen=True)
class _Plan:
    dim: int
    channels: int
    size: tuple[int, ...]
    classes: int
    stem_width: int
    stem_kernel: int
    stem_stride: int
    stem_size: tuple[int, ...]
    stages: tuple[_Stage, ...]
    fusion_init: float

    @property
    def ops(self) -> set[str]:
        return {st.op for st in self.stages}

    @property
    def variants(self) -> tuple[str, ...]:
        used = {st.attention for st in self.stages if st.attention is not None}
        return tuple(v for v in _VARIANTS if v in used)

    @property
    def uses_conv(self) -> bool:
        return bool(self.ops & {"conv", "parallel", "gated"})

    @property
    def uses_attention(self) -> bool:
        return bool(self.ops & {"attention", "parallel", "gated"})

    @property
    def uses_transition(self) -> bool:
        return any(st.downsample or st.in_width != st.width for st in self.stages)

    def class_names(self) -> list[str]:
        """Top-level classes, in the order they are defined."""
        names = []
        if self.uses_attention:
            names.append("Mlp")
        if self.uses_conv:
            names.append("ConvMixer")
        if self.uses_attention:
            names.append("AttentionMixer")
        names += [cls for op, cls in _OP_CLASSES.items() if op in self.ops]
        return names


def _int(value: Any, what: str, minimum: int = 1) -> int:
    if type(value) is not int or value < minimum:
        raise ExportError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _sizes(value: Any, what: str, dim: int) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) != dim:
        raise ExportError(f"{what} must be a tuple of {dim} integers, got {value!r}")
    return tuple(_int(v, what) for v in value)


def _plan(arch: Architecture, space: SearchSpace) -> _Plan:
    """Check the architecture against the space and every value's type; the checked values."""
    if not isinstance(arch, Architecture) or not isinstance(space, SearchSpace):
        raise ExportError("export needs an Architecture and a SearchSpace")
    try:
        space.validate(arch)
    except FusionNasError as exc:
        raise ExportError(f"cannot export: {exc}") from None
    dim = len(space.size) if isinstance(space.size, tuple) else 0
    if dim not in (1, 2):
        raise ExportError(f"space input size {space.size!r} must have 1 or 2 axes")
    size = _sizes(space.size, "input size", dim)
    ratio = space.mlp_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        raise ExportError(f"mlp_ratio must be a positive number, got {ratio!r}")
    if not math.isfinite(ratio):
        raise ExportError(f"mlp_ratio must be finite, got {ratio!r}")
    fusion_init = float(FUSION_INIT)
    if not math.isfinite(fusion_init):
        raise ExportError(f"fusion weight init must be finite, got {fusion_init!r}")
    stem_kernel = _int(space.stem.kernel, "stem kernel")
    if stem_kernel % 2 == 0:
        raise ExportError(f"stem kernel must be odd, got {stem_kernel}")
    stage_sizes = space.stage_sizes()
    stem_width = _int(space.stem.width, "stem width")
    stages, width = [], stem_width
    for i, (choice, spec, st_size) in enumerate(zip(arch.stages, space.stages, stage_sizes)):
        op = choice.operator
        if op not in _OP_CLASSES:
            raise ExportError(
                f"stage {i}: operator {op!r} cannot be exported; allowed: {allowed(_OP_CLASSES)}"
            )
        if tuple(op_uses(op)) != _OP_USES[op]:
            raise ExportError(f"stage {i}: operator {op!r} changed; the exporter is out of date")
        uses = _OP_USES[op]
        out_width = _int(choice.width, f"stage {i} width")
        kernel = heads = attention = None
        if "kernel" in uses:
            kernel = _int(choice.kernel, f"stage {i} kernel")
            if kernel % 2 == 0:
                raise ExportError(f"stage {i}: kernel must be odd, got {kernel}")
        if "heads" in uses:
            heads = _int(choice.heads, f"stage {i} heads")
            if out_width % heads:
                raise ExportError(f"stage {i}: {heads} heads do not divide width {out_width}")
        if "attention" in uses:
            attention = choice.attention
            if not isinstance(attention, str) or attention not in _VARIANTS:
                raise ExportError(
                    f"stage {i}: attention {attention!r} cannot be exported; "
                    f"allowed: {allowed(_VARIANTS)}"
                )
        if type(spec.downsample) is not bool:
            raise ExportError(f"stage {i}: downsample must be true or false")
        stages.append(
            _Stage(
                op=op,
                cls=_OP_CLASSES[op],
                width=out_width,
                depth=_int(choice.depth, f"stage {i} depth"),
                kernel=kernel,
                heads=heads,
                attention=attention,
                window=_int(spec.window, f"stage {i} window"),
                in_width=width,
                downsample=spec.downsample,
                size=_sizes(st_size, f"stage {i} size", dim),
                hidden=max(1, int(round(out_width * ratio))),  # as fusion_nas.ops.common.Mlp
            )
        )
        width = out_width
    return _Plan(
        dim=dim,
        channels=_int(space.channels, "input channels"),
        size=size,
        classes=_int(space.classes, "classes"),
        stem_width=stem_width,
        stem_kernel=stem_kernel,
        stem_stride=_int(space.stem.stride, "stem stride"),
        stem_size=_sizes(space.stem_size(), "stem size", dim),
        stages=tuple(stages),
        fusion_init=fusion_init,
    )


# --------------------------------------------------------------------------- user text


def _clean(value: Any, what: str, limit: int = 240) -> str:
    """User text made inert for a docstring: printable ASCII, no quotes/backslashes, one line."""
    if not isinstance(value, str):
        raise ExportError(f"{what} must be a string, got {type(value).__name__}")
    text = unicodedata.normalize("NFKD", value)
    out = []
    for ch in text:
        if unicodedata.combining(ch):
            continue  # accents split off by NFKD
        if ch == "\\":
            out.append("/")
        elif ch == '"':
            out.append("'")
        elif " " <= ch <= "~":
            out.append(ch)
        elif ch.isspace() or not ch.isprintable():
            out.append(" ")  # newlines, tabs, control and format characters
        else:
            out.append("?")  # other non-ASCII characters
    text = " ".join("".join(out).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _meta_lines(meta: Mapping[str, Any] | None) -> tuple[list[str], str]:
    """Docstring lines for ``meta`` and the weights file name of the load hint."""
    meta = dict(meta or {})
    unknown = sorted(set(meta) - set(META_KEYS), key=str)
    if unknown:
        raise ExportError(f"unknown meta key {str(unknown[0])!r}; allowed: {allowed(META_KEYS)}")
    lines = []
    if meta.get("search") is not None:
        lines.append(f"Search: {_clean(meta['search'], 'meta search')}")
    if meta.get("trial") is not None:
        lines.append(f"Trial: {_int(meta['trial'], 'meta trial', minimum=0)}")
    acc = meta.get("val_accuracy")
    if acc is not None:
        if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not math.isfinite(acc):
            raise ExportError(f"meta val_accuracy must be a finite number, got {acc!r}")
        lines.append(f"Validation accuracy: {float(acc):.4f}")
    if meta.get("store_url") is not None:
        url = meta["store_url"]
        url = redact_url(url) if isinstance(url, str) else url
        lines.append(f"Results store: {_clean(url, 'meta store_url')}")
    if meta.get("note") is not None:
        lines.append(f"Note: {_clean(meta['note'], 'meta note')}")
    weights = meta.get("weights_file")
    name = (
        "model.pt"
        if weights is None
        else _clean(weights, "meta weights_file", limit=_DOC_WIDTH - 14)
    )
    return lines, name or "model.pt"


# --------------------------------------------------------------------------- formatting


def _shape(channels: int | str, size: tuple[int, ...] | tuple[str, ...]) -> str:
    return "(" + ", ".join(["B", str(channels), *map(str, size)]) + ")"


def _call(indent: int, head: str, args: list[str], tail: str = "", comment: str = "") -> list[str]:
    """``head(args)tail`` on one line if it fits, else one argument per line (magic comma).

    ``comment`` (a shape) is appended when the one-line form still fits with it.
    """
    pad = " " * indent
    one = f"{pad}{head}({', '.join(args)}){tail}"
    if comment and len(one) + 4 + len(comment) <= _LINE:
        return [f"{one}  # {comment}"]
    if len(one) <= _LINE:
        return [one]
    return [f"{pad}{head}(", *(f"{pad}    {a}," for a in args), f"{pad}){tail}"]


def _def(indent: int, name: str, params: list[str], returns: str) -> list[str]:
    """A method signature, exploded like ruff does when it does not fit."""
    return _call(indent, f"def {name}", ["self", *params], f" -> {returns}:")


def _block(text: str) -> list[str]:
    return textwrap.dedent(text).strip("\n").split("\n")


# --------------------------------------------------------------------------- code templates


class _Writer:
    """Renders the module from a validated :class:`_Plan`."""

    def __init__(self, plan: _Plan) -> None:
        self.p = plan
        d = plan.dim
        self.conv, self.bn, self.pool = f"nn.Conv{d}d", f"nn.BatchNorm{d}d", f"nn.AvgPool{d}d"
        self.S = "(B, C, L)" if d == 1 else "(B, C, H, W)"
        self.size_t = "tuple[int]" if d == 1 else "tuple[int, int]"
        self.view = "1, -1, 1" if d == 1 else "1, -1, 1, 1"
        self.spatial = "2" if d == 1 else "(2, 3)"
        self.chan = "(1, C, 1)" if d == 1 else "(1, C, 1, 1)"
        self.gate_shape = "(B, C, 1)" if d == 1 else "(B, C, 1, 1)"
        variants = plan.variants
        self.multi = len(variants) > 1
        self.window = "window" in variants

    # mixer arguments, shared by the blocks that hold an AttentionMixer
    def attn_params(self) -> list[str]:
        params = ["channels: int", f"size: {self.size_t}", "heads: int"]
        params += ["variant: str"] if self.multi else []
        params += ["window: int"] if self.window else []
        return params

    def attn_args(self) -> list[str]:
        return [p.split(":")[0] for p in self.attn_params()]

    def mlp(self) -> list[str]:
        return _block(
            f'''
            class Mlp(nn.Module):
                """Pre-norm token MLP: LayerNorm -> Linear -> GELU -> Linear (no residual)."""

                def __init__(self, channels: int, hidden: int) -> None:
                    super().__init__()
                    self.norm = nn.LayerNorm(channels)
                    self.fc1 = nn.Linear(channels, hidden)
                    self.act = nn.GELU()
                    self.fc2 = nn.Linear(hidden, channels)
                    for fc in (self.fc1, self.fc2):
                        nn.init.trunc_normal_(fc.weight, std=0.02)
                        nn.init.zeros_(fc.bias)

                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    """{self.S} -> {self.S}."""
                    t = x.flatten(2).transpose(1, 2)  # (B, N, C), one token per position
                    t = self.fc2(self.act(self.fc1(self.norm(t))))  # (B, N, C)
                    return t.transpose(1, 2).reshape(x.shape)  # {self.S}
            '''
        )

    def conv_mixer(self) -> list[str]:
        return _block(
            f'''
            class ConvMixer(nn.Module):
                """Same-padding convolution -> BatchNorm -> GELU; Kaiming (fan-out) init."""

                def __init__(self, channels: int, kernel: int) -> None:
                    super().__init__()
                    pad = kernel // 2
                    self.conv = {self.conv}(channels, channels, kernel, padding=pad, bias=False)
                    self.norm = {self.bn}(channels)
                    self.act = nn.GELU()
                    nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    """{self.S} -> {self.S}."""
                    return self.act(self.norm(self.conv(x)))
            '''
        )

    def attention_mixer(self) -> list[str]:
        variants = self.p.variants
        notes = {
            "global": "- global: every token attends to every token.",
            "window": (
                "- window: tokens attend within windows of `window` tokens per axis (the whole\n"
                "  axis when shorter); the map is zero-padded to whole windows and padded keys\n"
                "  are masked."
            ),
            "linear": "- linear: phi(Q) (phi(K)^T V) with phi = elu + 1, cost linear in tokens.",
        }
        doc = "\n".join(textwrap.indent(notes[v], "    ") for v in variants)
        lines = [
            "class AttentionMixer(nn.Module):",
            '    """Position embedding + LayerNorm + multi-head self-attention on a map.',
            "",
            doc,
            "",
            "    Returns the output projection; the caller adds the residual.",
            '    """',
            "",
            *_def(4, "__init__", self.attn_params(), "None"),
            "        super().__init__()",
            "        self.size, self.heads = size, heads",
        ]
        if self.multi:
            lines.append("        self.variant = variant")
        if self.window:
            lines += [
                "        # window extent per axis, and the map size padded to whole windows",
                "        self.win = tuple(min(window, s) for s in size)",
                "        self.padded = tuple((s + w - 1) // w * w for s, w in zip(size, self.win))",
            ]
        lines += self._indent(
            '''
                self.pos = nn.Parameter(torch.zeros(1, channels, *size))
                self.norm = nn.LayerNorm(channels)
                self.qkv = nn.Linear(channels, 3 * channels)
                self.proj = nn.Linear(channels, channels)
                nn.init.trunc_normal_(self.pos, std=0.02)
                for w in self.qkv.weight.data.chunk(3, dim=0):  # query, key, value: (C, C) each
                    nn.init.xavier_uniform_(w)
                nn.init.zeros_(self.qkv.bias)
                nn.init.xavier_uniform_(self.proj.weight)
                nn.init.zeros_(self.proj.bias)

            def split_heads(self, t: torch.Tensor) -> torch.Tensor:
                """(B', N, C) -> (B', heads, N, C // heads)."""
                Bn, N, C = t.shape
                return t.reshape(Bn, N, self.heads, C // self.heads).transpose(1, 2)
            '''
        )
        if "global" in variants:
            lines += [""] + self._indent(
                '''
                def global_attention(self, qkv: torch.Tensor) -> torch.Tensor:
                    """(B, N, 3C) -> (B, N, C): every token attends to every token."""
                    q, k, v = (self.split_heads(t) for t in qkv.chunk(3, dim=-1))  # (B, h, N, hd)
                    o = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, hd)
                    return o.transpose(1, 2).flatten(2)  # (B, N, C)
                '''
            )
        if "window" in variants:
            lines += [""] + self._indent(self._window_code())
        if "linear" in variants:
            lines += [""] + self._indent(
                '''
                def linear_attention(self, qkv: torch.Tensor) -> torch.Tensor:
                    """(B, N, 3C) -> (B, N, C): phi(Q) (phi(K)^T V), normalised; phi = elu + 1."""
                    q, k, v = (self.split_heads(t) for t in qkv.chunk(3, dim=-1))  # (B, h, N, hd)
                    q, k = F.elu(q) + 1.0, F.elu(k) + 1.0  # positive features phi(.)
                    kv = torch.matmul(k.transpose(-2, -1), v)  # (B, h, hd, hd)
                    num = torch.matmul(q, kv)  # (B, h, N, hd)
                    ksum = k.sum(dim=2, keepdim=True).transpose(-2, -1)  # (B, h, hd, 1)
                    den = torch.matmul(q, ksum)  # (B, h, N, 1)
                    return (num / (den + 1e-6)).transpose(1, 2).flatten(2)  # (B, N, C)
                '''
            )
        lines += [
            "",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            f'        """{self.S} -> {self.S}."""',
            "        t = (x + self.pos).flatten(2).transpose(1, 2)  # (B, N, C)",
            "        qkv = self.qkv(self.norm(t))  # (B, N, 3C)",
        ]
        if len(variants) == 1:
            lines.append(f"        o = self.{variants[0]}_attention(qkv)  # (B, N, C)")
        else:
            for j, v in enumerate(variants):
                if j == 0:
                    lines.append(f"        if self.variant == {_str(v)}:")
                elif j < len(variants) - 1:
                    lines.append(f"        elif self.variant == {_str(v)}:")
                else:
                    lines.append("        else:")
                lines.append(f"            o = self.{v}_attention(qkv)  # (B, N, C)")
        lines.append(f"        return self.proj(o).transpose(1, 2).reshape(x.shape)  # {self.S}")
        return lines

    @staticmethod
    def _indent(text: str) -> list[str]:
        return ["    " + ln if ln else ln for ln in _block(text)]

    def _window_code(self) -> str:
        if self.p.dim == 1:
            return '''
            def window_attention(self, qkv: torch.Tensor) -> torch.Tensor:
                """(B, N, 3C) -> (B, N, C): attention within windows of `win` tokens."""
                B, N, C3 = qkv.shape
                (L,), (w,), (Lp,) = self.size, self.win, self.padded
                grid, mask = qkv, None  # (B, L, 3C)
                if Lp != L:
                    grid = F.pad(qkv, (0, 0, 0, Lp - L))  # (B, Lp, 3C), zeros at the end
                    valid = torch.zeros(1, Lp, 1, dtype=torch.bool, device=qkv.device)
                    valid[:, :L] = True
                    mask = valid.reshape(-1, w)[:, None, None, :]  # (nW, 1, 1, w): real keys
                    mask = mask.repeat(B, 1, 1, 1)  # (B * nW, 1, 1, w)
                windows = grid.reshape(-1, w, C3)  # (B * nW, w, 3C)
                q, k, v = (self.split_heads(t) for t in windows.chunk(3, dim=-1))
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B*nW, h, w, hd)
                o = o.transpose(1, 2).flatten(2).reshape(B, Lp, C3 // 3)  # (B, Lp, C)
                return o[:, :L].reshape(B, N, C3 // 3)  # (B, N, C): padding cropped
            '''
        return '''
            def window_attention(self, qkv: torch.Tensor) -> torch.Tensor:
                """(B, N, 3C) -> (B, N, C): attention within windows of wh x ww tokens."""
                B, N, C3 = qkv.shape
                (H, W), (wh, ww), (Hp, Wp) = self.size, self.win, self.padded
                grid, mask = qkv.reshape(B, H, W, C3), None  # (B, H, W, 3C)
                if (Hp, Wp) != (H, W):
                    grid = F.pad(grid, (0, 0, 0, Wp - W, 0, Hp - H))  # (B, Hp, Wp, 3C)
                    valid = torch.zeros(1, Hp, Wp, 1, dtype=torch.bool, device=qkv.device)
                    valid[:, :H, :W] = True
                    mask = self.partition(valid).squeeze(-1)[:, None, None, :]  # (nW, 1, 1, T)
                    mask = mask.repeat(B, 1, 1, 1)  # (B * nW, 1, 1, T): True at real keys
                windows = self.partition(grid)  # (B * nW, T, 3C), T = wh * ww
                q, k, v = (self.split_heads(t) for t in windows.chunk(3, dim=-1))
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B*nW, h, T, hd)
                o = o.transpose(1, 2).flatten(2)  # (B * nW, T, C)
                o = o.reshape(B, Hp // wh, Wp // ww, wh, ww, C3 // 3).permute(0, 1, 3, 2, 4, 5)
                o = o.reshape(B, Hp, Wp, C3 // 3)  # windows back in place
                return o[:, :H, :W].reshape(B, N, C3 // 3)  # (B, N, C): padding cropped

            def partition(self, x: torch.Tensor) -> torch.Tensor:
                """(B, Hp, Wp, D) -> (B * nW, wh * ww, D), one row per window."""
                B, Hp, Wp, D = x.shape
                wh, ww = self.win
                x = x.reshape(B, Hp // wh, wh, Wp // ww, ww, D).permute(0, 1, 3, 2, 4, 5)
                return x.reshape(-1, wh * ww, D)
            '''

    def conv_block(self) -> list[str]:
        return _block(
            f'''
            class ConvBlock(nn.Module):
                """x + GELU(BN(conv_k(x))): local mixing, receptive field k per block."""

                def __init__(self, channels: int, kernel: int) -> None:
                    super().__init__()
                    self.mixer = ConvMixer(channels, kernel)

                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    """{self.S} -> {self.S}."""
                    return x + self.mixer(x)
            '''
        )

    def attention_block(self) -> list[str]:
        return [
            "class AttentionBlock(nn.Module):",
            '    """Pre-norm transformer block: x + attn(x), then x + mlp(x)."""',
            "",
            *_def(4, "__init__", [*self.attn_params(), "hidden: int"], "None"),
            "        super().__init__()",
            *_call(8, "self.attn = AttentionMixer", self.attn_args()),
            "        self.mlp = Mlp(channels, hidden)",
            "",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            f'        """{self.S} -> {self.S}."""',
            "        x = x + self.attn(x)",
            "        return x + self.mlp(x)",
        ]

    def fused_block(self, gated: bool) -> list[str]:
        p = self.attn_params()
        params = [p[0], p[1], "kernel: int", *p[2:], "hidden: int"]
        init = repr(self.p.fusion_init)
        if gated:
            doc = [
                '    """x + s * (g * conv(x) + (1 - g) * attn(x)), then x + mlp(x).',
                "",
                "    g = sigmoid(Linear(mean of x over the spatial axes)): one gate per sample and",
                f"    channel; s: learned per-channel fusion scale, starting at {init}.",
                '    """',
            ]
            params_init = [
                "        self.gate = nn.Linear(channels, channels)",
                f"        self.scale = nn.Parameter(torch.full((channels,), {init}))",
                "        self.mlp = Mlp(channels, hidden)",
                "        nn.init.normal_(self.gate.weight, std=0.02)",
                "        nn.init.zeros_(self.gate.bias)",
            ]
            gate = "[:, :, None]" if self.p.dim == 1 else "[:, :, None, None]"
            body = [
                f"        pooled = x.mean(dim={self.spatial})  # (B, C): spatial axes only",
                f"        g = torch.sigmoid(self.gate(pooled)){gate}  # {self.gate_shape}",
                "        fused = g * self.conv(x) + (1.0 - g) * self.attn(x)",
                f"        x = x + self.scale.view({self.view}) * fused",
                "        return x + self.mlp(x)",
            ]
        else:
            doc = [
                '    """x + a * conv(x) + b * attn(x), then x + mlp(x).',
                "",
                f"    a, b: learned per-channel fusion weights, starting at {init}.",
                '    """',
            ]
            params_init = [
                f"        self.conv_weight = nn.Parameter(torch.full((channels,), {init}))",
                f"        self.attn_weight = nn.Parameter(torch.full((channels,), {init}))",
                "        self.mlp = Mlp(channels, hidden)",
            ]
            body = [
                f"        a = self.conv_weight.view({self.view})  # {self.chan}",
                f"        b = self.attn_weight.view({self.view})",
                "        x = x + a * self.conv(x) + b * self.attn(x)",
                "        return x + self.mlp(x)",
            ]
        return [
            f"class {'GatedBlock' if gated else 'ParallelBlock'}(nn.Module):",
            *doc,
            "",
            *_def(4, "__init__", params, "None"),
            "        super().__init__()",
            "        self.conv = ConvMixer(channels, kernel)",
            *_call(8, "self.attn = AttentionMixer", self.attn_args()),
            *params_init,
            "",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            f'        """{self.S} -> {self.S}."""',
            *body,
        ]

    def transition(self) -> list[str]:
        return _block(
            f'''
            def transition(in_width: int, out_width: int, downsample: bool) -> nn.Module:
                """Stage entry: AvgPool(2) if it downsamples, conv1x1 -> BN if the width changes."""
                layers = []
                if downsample:
                    layers.append({self.pool}(2))
                if in_width != out_width:
                    conv = {self.conv}(in_width, out_width, 1, bias=False)
                    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                    layers += [conv, {self.bn}(out_width)]
                return nn.Sequential(*layers) if layers else nn.Identity()
            '''
        )

    def block_call(self, st: _Stage) -> tuple[str, list[str]]:
        args = [str(st.width)]
        if st.op != "conv":
            args.append(repr(st.size))
        if st.kernel is not None:
            args.append(f"kernel={st.kernel!r}")
        if st.heads is not None:
            args.append(f"heads={st.heads!r}")
            if self.multi:
                args.append(f"variant={_str(st.attention)}")
            if self.window:
                args.append(f"window={st.window!r}")
            args.append(f"hidden={st.hidden!r}")
        return st.cls, args

    def fusion_net(self, title: str) -> list[str]:
        p = self.p
        k = p.stem_kernel
        lines = [
            "class FusionNet(nn.Module):",
            f'    """{title}"""',
            "",
            "    def __init__(self) -> None:",
            "        super().__init__()",
            *_call(
                8,
                f"conv = {self.conv}",
                [str(p.channels), str(p.stem_width), str(k), f"stride={p.stem_stride}"]
                + [f"padding={k // 2}"],
            ),
            '        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")',
            *_call(
                8,
                "self.stem = nn.Sequential",
                ["conv", f"{self.bn}({p.stem_width})", "nn.GELU()"],
                comment=_shape(p.stem_width, p.stem_size),
            ),
            "        self.stages = nn.Sequential(",
        ]
        for i, st in enumerate(p.stages):
            head, shape = f"stage {i}: {_describe(st)}", f"-> {_shape(st.width, st.size)}"
            if len(head) + len(shape) + 1 <= _LINE - 14:
                lines.append(f"            # {head} {shape}")
            else:
                lines += [f"            # {c}" for c in [*textwrap.wrap(head, _LINE - 14), shape]]
            lines.append("            nn.Sequential(")
            if st.downsample or st.in_width != st.width:
                down = "True" if st.downsample else "False"
                args = [str(st.in_width), str(st.width), f"downsample={down}"]
                lines += _call(16, "transition", args, ",")
            else:
                lines.append("                nn.Identity(),")
            cls, args = self.block_call(st)
            for _ in range(st.depth):
                lines += _call(16, cls, args, ",")
            lines.append("            ),")
        last = p.stages[-1].width
        lines += [
            "        )",
            f"        self.norm = nn.LayerNorm({last})",
            f"        self.head = nn.Linear({last}, {p.classes})",
            "        nn.init.trunc_normal_(self.head.weight, std=0.02)",
            "        nn.init.zeros_(self.head.bias)",
            "",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            f'        """{_shape(p.channels, p.size)} -> logits (B, {p.classes})."""',
            f"        x = self.stem(x)  # {_shape(p.stem_width, p.stem_size)}",
        ]
        for i, st in enumerate(p.stages):
            lines.append(f"        x = self.stages[{i}](x)  # {_shape(st.width, st.size)}")
        lines += [
            f"        x = x.mean(dim={self.spatial})  # (B, {last}): global average pool",
            f"        return self.head(self.norm(x))  # (B, {p.classes})",
        ]
        return lines


def _str(value: str) -> str:
    """A fixed code string as a double-quoted literal (ruff's quote style)."""
    if value not in _CODE_STRINGS or not value.isalpha():
        raise ExportError(f"unexpected code string {value!r}")
    return f'"{value}"'


def _describe(st: _Stage) -> str:
    """``gated k3 h2 window, width 32, depth 2`` (fixed words and validated ints only)."""
    parts = [st.op]
    if st.kernel is not None:
        parts.append(f"k{st.kernel}")
    if st.heads is not None:
        parts.append(f"h{st.heads}")
    if st.attention is not None:
        parts.append(f"{st.attention}({st.window})" if st.attention == "window" else st.attention)
    return f"{' '.join(parts)}, width {st.width}, depth {st.depth}"


def _load_hint(weights_name: str) -> list[str]:
    """The docstring's ``load_state_dict`` line(s); ``weights_name`` is already cleaned."""
    line = f'    model.load_state_dict(torch.load("{weights_name}", weights_only=True))'
    if len(line) <= _DOC_WIDTH:
        return [line]
    return [
        f'    path = "{weights_name}"',
        "    model.load_state_dict(torch.load(path, weights_only=True))",
    ]


def _size_text(size: tuple[int, ...]) -> str:
    return "x".join(map(str, size))


def _docstring(
    plan: _Plan,
    space: SearchSpace,
    arch_id: str,
    macs: int,
    params: int,
    meta_lines: list[str],
    weights_name: str,
) -> str:
    p = plan
    name = _clean(space.name, "space name", limit=60)
    head = f"FusionNet {arch_id} of the fusion-nas search space '{name}'."
    lines = [*textwrap.wrap(head, _DOC_WIDTH), ""]
    desc = _clean(space.description, "space description")
    if desc:
        lines += [*textwrap.wrap(desc, _DOC_WIDTH), ""]
    lines += textwrap.wrap(
        f"Input {_shape(p.channels, p.size)} -> logits (B, {p.classes}). Per sample: "
        f"{macs:,} MACs (reported as FLOPs), {params:,} parameters.",
        _DOC_WIDTH,
    )
    lines.append("")
    rows = [("stage", "operator", "kernel", "heads", "attention", "width", "depth", "size")]
    rows.append(
        (
            "stem",
            "conv",
            str(p.stem_kernel),
            "-",
            "-",
            str(p.stem_width),
            "-",
            _size_text(p.stem_size),
        )
    )
    for i, st in enumerate(p.stages):
        att = "-"
        if st.attention is not None:
            att = f"window({st.window})" if st.attention == "window" else st.attention
        rows.append(
            (
                str(i),
                st.op,
                "-" if st.kernel is None else str(st.kernel),
                "-" if st.heads is None else str(st.heads),
                att,
                str(st.width),
                str(st.depth),
                _size_text(st.size),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        lines.append(("    " + "  ".join(c.ljust(w) for c, w in zip(r, widths))).rstrip())
    lines.append("")
    if meta_lines:
        for m in meta_lines:
            lines += textwrap.wrap(m, _DOC_WIDTH, subsequent_indent="    ")
        lines.append("")
    lines += [
        "Standalone: needs only PyTorch. Load the exported weights with",
        "",
        "    model = FusionNet()",
        *_load_hint(weights_name),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- checks


def _top_level(plan: _Plan) -> list[tuple[str, ...]]:
    expected = [("doc",), ("import", "torch", "")]
    if plan.uses_attention:
        expected.append(("import", "torch.nn.functional", "F"))
    expected.append(("from", "torch", "nn"))
    expected += [("class", name) for name in plan.class_names()]
    if plan.uses_transition:
        expected.append(("def", "transition"))
    expected.append(("class", "FusionNet"))
    return expected


def _node_kind(node: ast.stmt, first: bool) -> tuple[str, ...]:
    if first and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return ("doc",) if isinstance(node.value.value, str) else ("expr",)
    if isinstance(node, ast.Import) and len(node.names) == 1:
        return ("import", node.names[0].name, node.names[0].asname or "")
    if isinstance(node, ast.ImportFrom) and len(node.names) == 1 and node.level == 0:
        return ("from", node.module or "", node.names[0].name)
    if isinstance(node, ast.ClassDef):
        return ("class", node.name)
    if isinstance(node, ast.FunctionDef):
        return ("def", node.name)
    return (type(node).__name__,)


def _docstring_nodes(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _check_source(source: str, plan: _Plan, docstring: str) -> None:
    """``ast.parse`` the module and check it holds only what the templates produce."""
    for n, line in enumerate(source.split("\n"), 1):
        if len(line) > _LINE:
            raise ExportError(f"generated line {n} is longer than {_LINE} characters")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ExportError(f"generated code does not parse: {exc}") from None
    got = [_node_kind(node, i == 0) for i, node in enumerate(tree.body)]
    if got != _top_level(plan):
        raise ExportError(f"generated module has unexpected top-level statements: {got!r}")
    if ast.get_docstring(tree, clean=False) != docstring:
        raise ExportError("generated module docstring does not match its text")
    top = {id(node) for node in tree.body}
    docs = _docstring_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
            raise ExportError("generated code imports inside a definition")
        if isinstance(node, (ast.Global, ast.Nonlocal, ast.Lambda, ast.AsyncFunctionDef)):
            raise ExportError(f"generated code holds an unexpected {type(node).__name__}")
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        if isinstance(node, (ast.Name, ast.Attribute)) and name in _FORBIDDEN_NAMES:
            raise ExportError(f"generated code uses the forbidden name {name!r}")
        if isinstance(node, ast.Constant) and id(node) not in docs:
            value = node.value
            if isinstance(value, str) and value not in _CODE_STRINGS:
                raise ExportError(f"generated code holds an unexpected string {value!r}")
            if not isinstance(value, (str, int, float, bool, type(None))):
                raise ExportError(f"generated code holds an unexpected constant {value!r}")


# --------------------------------------------------------------------------- public API


def _resolve_space(arch: Architecture, space: SearchSpace | None) -> SearchSpace:
    if space is not None:
        return space
    if not isinstance(arch, Architecture):
        raise ExportError(f"arch must be an Architecture, got {type(arch).__name__}")
    try:
        return load_space(arch.space)
    except FusionNasError as exc:
        raise ExportError(f"cannot export: {exc}") from None


def export_code(
    arch: Architecture, space: SearchSpace | None = None, *, meta: Mapping[str, Any] | None = None
) -> str:
    """The source of a standalone PyTorch module defining ``FusionNet`` for ``arch``.

    Args:
        arch: the architecture; it must belong to ``space``.
        space: its search space; defaults to the built-in space ``arch.space`` names.
        meta: optional facts for the module docstring, keys from :data:`META_KEYS`:
            ``val_accuracy`` (number), ``search`` (name), ``trial`` (int), ``store_url``
            (a password in it is hidden), ``note``, ``weights_file`` (the load hint's file name).

    Returns:
        Module source that imports only ``torch``; ``FusionNet().state_dict()`` has the keys and
        shapes of ``build_model(arch, space).state_dict()``.

    Raises:
        ExportError: the architecture does not fit the space, a value has the wrong type, a meta
            key is unknown, or the generated source fails its structural check.
    """
    space = _resolve_space(arch, space)
    plan = _plan(arch, space)
    meta_lines, weights_name = _meta_lines(meta)
    arch_id = arch.arch_id
    if not re.fullmatch(r"[0-9a-f]{10}", arch_id):
        raise ExportError(f"unexpected architecture id {arch_id!r}")
    macs, params = _toolkit_cost(arch, space)
    docstring = _docstring(plan, space, arch_id, macs, params, meta_lines, weights_name)
    w = _Writer(plan)
    out = ['"""' + docstring + '"""', "", "import torch"]
    if plan.uses_attention:
        out.append("import torch.nn.functional as F")
    out.append("from torch import nn")
    pieces: list[list[str]] = []
    if plan.uses_attention:
        pieces.append(w.mlp())
    if plan.uses_conv:
        pieces.append(w.conv_mixer())
    if plan.uses_attention:
        pieces.append(w.attention_mixer())
    builders: dict[str, Callable[[], list[str]]] = {
        "conv": w.conv_block,
        "attention": w.attention_block,
        "parallel": lambda: w.fused_block(gated=False),
        "gated": lambda: w.fused_block(gated=True),
    }
    pieces += [builders[op]() for op in _OP_CLASSES if op in plan.ops]
    if plan.uses_transition:
        pieces.append(w.transition())
    title = f"Architecture {arch_id}: {_shape(plan.channels, plan.size)} -> (B, {plan.classes})."
    pieces.append(w.fusion_net(title))
    for piece in pieces:
        out += ["", "", *piece]
    source = "\n".join(out) + "\n"
    _check_source(source, plan, docstring)
    return source


def _toolkit_cost(arch: Architecture, space: SearchSpace) -> tuple[int, int]:
    """MACs and parameters of the toolkit model for one sample (caller's RNG left untouched)."""
    from fusion_nas.model import build_model  # model imports space; keep import time low

    with torch.random.fork_rng(devices=[]):
        model = build_model(arch, space)
    cost = count_cost(model, torch.zeros(space.input_shape(1)))
    return int(cost.macs), int(cost.params)


def _load_module(source: str) -> dict[str, Any]:
    """Execute generated (already checked) source in a fresh namespace."""
    namespace: dict[str, Any] = {"__name__": "fusion_nas_exported"}
    exec(compile(source, "<fusion_nas export>", "exec"), namespace)
    return namespace


def _import_onnx() -> tuple[Any, Any]:
    try:
        onnx = importlib.import_module("onnx")
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        raise ExportError(
            f"ONNX export needs onnx and onnxruntime; install: {_ONNX_HINT}"
        ) from None
    return onnx, ort


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` if the body succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _export_onnx(model: nn.Module, space: SearchSpace, path: Path, ort: Any) -> None:
    """Trace ``model`` to ONNX at ``path`` and check onnxruntime agrees (atol 1e-4)."""
    model.eval()
    example = torch.zeros(space.input_shape(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(space.input_shape(2), generator=gen)
    with torch.no_grad():
        expected = model(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-4):
        diff = (got - expected).abs().max().item() if got.shape == expected.shape else "shape"
        raise ExportError(f"ONNX model does not match PyTorch (max difference {diff})")


def write_export(
    arch: Architecture,
    space: SearchSpace | None,
    out: Path,
    *,
    meta: Mapping[str, Any] | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    weights: Path | None = None,
    onnx: Path | None = None,
) -> None:
    """Write the module of :func:`export_code` to ``out``; optionally weights and ONNX too.

    Everything is generated and checked before any file is written, and each file is written
    to a temporary name and renamed into place.

    Args:
        arch, space, meta: as for :func:`export_code` (``meta['weights_file']`` defaults to the
            name of ``weights``).
        out: the ``.py`` file to write.
        state_dict: weights of the toolkit model (``build_model(arch, space).state_dict()``);
            needed for ``weights`` and ``onnx``; must load into the generated model strictly.
        weights: where to ``torch.save`` ``state_dict`` (loadable with ``weights_only=True``).
        onnx: where to write the generated model (with the weights) as ONNX; the ONNX model is
            checked against PyTorch with onnxruntime.

    Raises:
        ExportError: as :func:`export_code`; or missing/unfit ``state_dict``; or onnx and
            onnxruntime not installed (``pip install -e '.[onnx]'``); or an ONNX mismatch.
    """
    out = Path(out)
    meta = dict(meta or {})
    if weights is not None:
        meta.setdefault("weights_file", Path(weights).name)
    if (weights is not None or onnx is not None) and state_dict is None:
        raise ExportError("state_dict is required to write weights or ONNX")
    ort = _import_onnx()[1] if onnx is not None else None
    space = _resolve_space(arch, space)
    source = export_code(arch, space, meta=meta)
    tensors: dict[str, torch.Tensor] | None = None
    model = None
    if state_dict is not None:
        if not isinstance(state_dict, Mapping):
            raise ExportError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
            raise ExportError("state_dict values must be tensors")
        tensors = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
        model = _load_module(source)["FusionNet"]()
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[:2]
            raise ExportError(
                f"state_dict does not fit the architecture: {' '.join(first)}"
            ) from None
    with contextlib.ExitStack() as stack:
        onnx_tmp = None
        if onnx is not None:
            onnx_tmp = stack.enter_context(_atomic(Path(onnx)))
            _export_onnx(model, space, onnx_tmp, ort)
        with _atomic(out) as tmp:
            with open(tmp, "x", encoding="utf-8") as fh:
                fh.write(source)
        if weights is not None:
            with _atomic(Path(weights)) as tmp:
                torch.save(tensors, tmp)
