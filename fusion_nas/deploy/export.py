"""Architecture -> standalone PyTorch source: ``fusion_nas/model/nets.py`` pruned to what it uses.

The exported module is the package's own network code. From :mod:`fusion_nas.model.nets` it keeps
the
imports, ``FusionNet``, the config dataclasses, the registry plumbing, the blocks of the
operators the architecture uses and the mixers of the attention variants it names (found through
``nets.OPS`` and ``nets.ATTENTIONS``), each with the helpers it reads; an operator registered
from another module comes with the helpers of its own module. Everything else is left out. The
module ends with ``CONFIG = NetCfg(...)``, the architecture's config as a literal, so
``FusionNet()`` builds it: the toolkit's model and the exported one are the same code, with the
same ``state_dict`` and, under the same seed, the same initial weights.

Code generation follows ``torch.fx``'s rules: identifiers come from the package's code, never
from user input; the literal holds checked ints, floats and plain words only; user text (space
name and description, search name, store URL, ...) only reaches the module docstring, after
sanitising (ASCII, no quotes or backslashes, one line, length-capped). Before anything is
returned or written, the source is ``ast.parse``-d and checked statement by statement against
the code it was copied from, then run to check that ``CONFIG`` reads back as the config.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import importlib
import math
import re
import secrets
import sys
import textwrap
import types
import unicodedata
import warnings
from collections.abc import Mapping
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusion_nas.deploy.codegen import Piece, Program
from fusion_nas.errors import ExportError, FusionNasError, allowed, one_line
from fusion_nas.model import nets
from fusion_nas.model.arch import Architecture
from fusion_nas.model.cost import Cost, arch_cost
from fusion_nas.model.space import SearchSpace, load_space
from fusion_nas.outputs import atomic_output, check_folder, check_outputs
from fusion_nas.settings import redact_url

__all__ = [
    "META_KEYS",
    "ONNX_OPSET",
    "check_folder",
    "check_outputs",
    "export_code",
    "fold_branches",
    "write_export",
]

META_KEYS = ("val_accuracy", "search", "trial", "store_url", "note", "weights_file")
"""Keys ``meta`` may hold; all optional. ``weights_file`` names the file in the load hint."""

ONNX_OPSET = 17  # legacy (TorchScript) exporter; SDPA with a boolean mask exports from opset 14

CONFIG = "CONFIG"  # the module-level config FusionNet() builds; the export sets it
# Registry plumbing every export keeps, so that the file can register more blocks itself.
_PLUMBING = (
    "FusionNet",
    "register_op",
    "register_attention",
    "register_stem",
    "register_head",
    "OPS",
    "ATTENTIONS",
    "STEMS",
    "HEADS",
)
_DOC_WIDTH = 84  # docstring text is wrapped to this width
_ONNX_HINT = "pip install -e '.[onnx]'"
_FORBIDDEN_NAMES = frozenset(
    "__import__ __builtins__ breakpoint builtins compile delattr eval exec getattr globals "
    "importlib input locals open os setattr subprocess sys system vars".split()
)


# --------------------------------------------------------------------------- choosing


def _resolve_space(arch: Architecture, space: SearchSpace | None) -> SearchSpace:
    if not isinstance(arch, Architecture):
        raise ExportError(f"arch must be an Architecture, got {type(arch).__name__}")
    if space is None:
        try:
            space = load_space(arch.space)
        except FusionNasError as exc:
            raise ExportError(f"cannot export: {exc}") from None
    if not isinstance(space, SearchSpace):
        raise ExportError(f"space must be a SearchSpace, got {type(space).__name__}")
    return space


def _net_cfg(arch: Architecture, space: SearchSpace) -> nets.NetCfg:
    """The checked config of ``arch`` (it must belong to ``space``)."""
    try:
        return space.net_cfg(arch)
    except (FusionNasError, ValueError) as exc:
        raise ExportError(f"cannot export: {one_line(exc, typed=False)}") from None


def _variants(cfg: nets.NetCfg) -> list[str]:
    """Attention variants the module registers: every one a block names (``BlockCfg`` checks
    the field on every block, also where the operator ignores it)."""
    return list(dict.fromkeys(st.block.attention for st in cfg.stages))


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
    trial = meta.get("trial")
    if trial is not None:
        if type(trial) is not int or trial < 0:
            raise ExportError(f"meta trial must be an integer >= 0, got {trial!r}")
        lines.append(f"Trial: {trial}")
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


# --------------------------------------------------------------------------- docstring


def _shape(channels: int, size: tuple[int, ...]) -> str:
    return "(" + ", ".join(["B", str(channels), *map(str, size)]) + ")"


def _size_text(size: tuple[int, ...]) -> str:
    return "x".join(map(str, size))


def _load_hint(weights_name: str) -> list[str]:
    """The docstring's ``load_state_dict`` line(s); ``weights_name`` is already cleaned."""
    line = f'    model.load_state_dict(torch.load("{weights_name}", weights_only=True))'
    if len(line) <= _DOC_WIDTH:
        return [line]
    return [
        f'    path = "{weights_name}"',
        "    model.load_state_dict(torch.load(path, weights_only=True))",
    ]


def _stage_table(cfg: nets.NetCfg) -> list[str]:
    """Stem and stages, one row each; a ``-`` where the block does not read the field."""
    head = ("stage", "operator", "kernel", "heads", "attention", "mlp", "width", "depth", "down")
    rows = [(*head, "size")]
    stem = (str(cfg.stem_kernel), "-", "-", "-", str(cfg.stem_width), "-", f"s{cfg.stem_stride}")
    rows.append(("stem", "conv", *stem, _size_text(cfg.stem_size())))
    for i, (st, size) in enumerate(zip(cfg.stages, cfg.stage_sizes())):
        b = st.block
        uses = nets.reads(b.operator, b.attention)
        att = _clean(b.attention, "attention variant", limit=40)
        att = f"{att}({b.window})" if att == "window" else att
        rows.append(
            (
                str(i),
                _clean(b.operator, "operator", limit=40),
                str(b.kernel) if "kernel" in uses else "-",
                str(b.heads) if "heads" in uses else "-",
                att if "attention" in uses else "-",
                f"{b.mlp_ratio:g}" if "mlp_ratio" in uses else "-",
                str(b.width),
                str(st.depth),
                st.downsample,
                _size_text(size),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return [("    " + "  ".join(c.ljust(w) for c, w in zip(r, widths))).rstrip() for r in rows]


def _docstring(
    cfg: nets.NetCfg,
    space: SearchSpace,
    arch_id: str,
    cost: Cost,
    meta: Mapping[str, Any] | None,
) -> str:
    meta_lines, weights_name = _meta_lines(meta)
    name = _clean(space.name, "space name", limit=60)
    head = f"FusionNet {arch_id} of the fusion-nas search space '{name}'."
    lines = [*textwrap.wrap(head, _DOC_WIDTH), ""]
    desc = _clean(space.description, "space description")
    if desc:
        lines += [*textwrap.wrap(desc, _DOC_WIDTH), ""]
    lines += textwrap.wrap(
        f"Input {_shape(cfg.in_channels, cfg.size)} -> logits (B, {cfg.classes}). Per sample: "
        f"{cost.macs:,} MACs (reported as FLOPs), {cost.params:,} parameters.",
        _DOC_WIDTH,
    )
    lines += ["", *_stage_table(cfg), ""]
    for m in meta_lines:
        lines += textwrap.wrap(m, _DOC_WIDTH, subsequent_indent="    ")
    if meta_lines:
        lines.append("")
    lines += [
        "Standalone: needs only PyTorch. Load the exported weights with",
        "",
        "    model = FusionNet()",
        *_load_hint(weights_name),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- pruning


def _program(cfg: nets.NetCfg) -> Program:
    """nets.py's statements that ``cfg`` needs, ending with ``CONFIG = <cfg>``."""
    program = Program(nets, provided=(CONFIG,))
    program.need(*_PLUMBING)
    for op in dict.fromkeys(st.block.operator for st in cfg.stages):
        program.add(nets.OPS[op])
    for variant in _variants(cfg):
        program.add(nets.ATTENTIONS[variant])
    program.add(nets.STEMS[cfg.stem])
    program.add(nets.HEADS[cfg.head])
    program.assign(CONFIG, cfg)
    return program


# --------------------------------------------------------------------------- checks


def _is_literal(node: ast.expr, classes: set[str]) -> bool:
    """A config literal: calls of config classes over numbers, words and tuples only."""
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float, str, bool)
    if isinstance(node, ast.Tuple):
        return all(_is_literal(e, classes) for e in node.elts)
    if isinstance(node, ast.Call):
        return (
            isinstance(node.func, ast.Name)
            and node.func.id in classes
            and all(_is_literal(a, classes) for a in node.args)
            and all(k.arg is not None and _is_literal(k.value, classes) for k in node.keywords)
        )
    return False


def _check_source(source: str, pieces: list[Piece], docstring: str) -> None:
    """``ast.parse`` the module; it must be the docstring, then exactly the copied statements,
    then the config literal, with no forbidden name anywhere."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ExportError(f"exported code does not parse: {exc}") from None
    if ast.get_docstring(tree, clean=False) != docstring:
        raise ExportError("exported module docstring does not match its text")
    if [ast.dump(s) for s in tree.body[1:]] != [d for p in pieces for d in p.dumps]:
        raise ExportError("exported module holds statements that are not the package's code")
    last = tree.body[-1]
    classes = {n for n, c in vars(nets).items() if isinstance(c, type) and is_dataclass(c)}
    if not (
        isinstance(last, ast.Assign)
        and [ast.dump(t) for t in last.targets] == [ast.dump(ast.Name(CONFIG, ast.Store()))]
        and _is_literal(last.value, classes)
    ):
        raise ExportError(f"exported module does not end with a {CONFIG} literal")
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
            raise ExportError("exported code imports inside a definition")
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        if isinstance(node, (ast.Name, ast.Attribute)) and name in _FORBIDDEN_NAMES:
            raise ExportError(f"exported code uses the forbidden name {name!r}")


def _load_module(source: str) -> dict[str, Any]:
    """Run checked source as a fresh module; its namespace."""
    module = types.ModuleType(f"fusion_nas_export_{secrets.token_hex(4)}")
    sys.modules[module.__name__] = module  # dataclasses look their module up while it runs
    try:
        exec(compile(source, "<fusion_nas export>", "exec"), module.__dict__)
    except Exception as exc:
        raise ExportError(f"exported module does not run: {one_line(exc)}") from None
    finally:
        del sys.modules[module.__name__]
    return module.__dict__


# --------------------------------------------------------------------------- public API


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
        ``fusion_nas/model/nets.py`` pruned to what ``arch`` uses, ending with ``CONFIG``; it
        imports only ``torch`` (and the standard library pieces nets.py uses), and
        ``FusionNet().state_dict()`` has the keys and shapes of ``build_model(arch, space)``.

    Raises:
        ExportError: the architecture does not fit the space, a meta value has the wrong type
            or key, or the module fails its checks.
    """
    space = _resolve_space(arch, space)
    cfg = _net_cfg(arch, space)
    arch_id = arch.arch_id
    if not re.fullmatch(r"[0-9a-f]{10}", arch_id):
        raise ExportError(f"unexpected architecture id {arch_id!r}")
    docstring = _docstring(cfg, space, arch_id, arch_cost(arch, space), meta)
    program = _program(cfg)
    source = program.source(docstring)
    _check_source(source, program.pieces(), docstring)
    if repr(_load_module(source)[CONFIG]) != repr(cfg):
        raise ExportError(f"exported {CONFIG} does not read back as the architecture's config")
    return source


def _import_onnx() -> tuple[Any, Any]:
    try:
        onnx = importlib.import_module("onnx")
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        raise ExportError(
            f"ONNX export needs onnx and onnxruntime; install: {_ONNX_HINT}"
        ) from None
    return onnx, ort


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Trace ``model`` on ``example`` (B, C, *S) to ONNX at ``path``, with a dynamic batch axis
    (input ``input``, output ``logits``; the legacy exporter, opset :data:`ONNX_OPSET`)."""
    with warnings.catch_warnings(), torch.no_grad():
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


def fold_branches(model: nn.Module) -> int:
    """Fold, in place, every block of ``model`` that has a ``fuse()`` method (the repconv
    operator: its training-time branches become one conv); the number folded.

    Exact in eval mode only (batch norms fold with their running statistics).
    """
    foldable = [m for m in model.modules() if callable(getattr(m, "fuse", None))]
    for m in foldable:  # listed first: folding replaces submodules
        m.fuse()
    return len(foldable)


def _export_onnx(
    model: nn.Module, space: SearchSpace, path: Path, ort: Any, fold: bool = False
) -> None:
    """Trace ``model`` to ONNX at ``path`` and check onnxruntime agrees (atol 1e-4); with
    ``fold``, a folded copy is traced (:func:`fold_branches`), checked against ``model``."""
    model.eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(space.input_shape(2), generator=gen)
    with torch.no_grad():
        expected = model(x)
    if fold:
        model = copy.deepcopy(model)
        fold_branches(model)
    write_onnx(model, torch.zeros(space.input_shape(1)), path)
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
    fold: bool = False,
) -> None:
    """Write the module of :func:`export_code` to ``out``; optionally weights and ONNX too.

    Everything is generated and checked before any file is written, and each file is written
    to a temporary name and renamed into place.

    Args:
        arch, space, meta: as for :func:`export_code` (``meta['weights_file']`` defaults to the
            name of ``weights``).
        out: the ``.py`` file to write.
        state_dict: weights of the toolkit model (``build_model(arch, space).state_dict()``);
            needed for ``weights`` and ``onnx``; must load into the exported model strictly.
        weights: where to ``torch.save`` ``state_dict`` (loadable with ``weights_only=True``).
        onnx: where to write the exported model (with the weights) as ONNX; the ONNX model is
            checked against PyTorch with onnxruntime.
        fold: the ONNX model is the deployment form: blocks with training-time branches
            (repconv) folded into one conv each (:func:`fold_branches`), checked against the
            unfolded PyTorch model. The ``.py`` file and ``weights`` stay unfolded; call
            ``fuse()`` on such blocks after loading them.

    Raises:
        ExportError: as :func:`export_code`; or missing/unfit ``state_dict``; or onnx and
            onnxruntime not installed (``pip install -e '.[onnx]'``); or an ONNX mismatch; or
            ``fold`` without ``onnx``.
    """
    out = Path(out)
    meta = dict(meta or {})
    if weights is not None:
        meta.setdefault("weights_file", Path(weights).name)
    if fold and onnx is None:
        raise ExportError("fold applies to the ONNX file; give onnx too")
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
            reason = one_line(exc, typed=False, lines=2)
            raise ExportError(f"state_dict does not fit the architecture: {reason}") from None
    check_outputs({"--out": out, "--weights": weights, "--onnx": onnx})
    # Every file is written to its temporary name first; all are renamed into place only when
    # all were written (the stack's exits), so a failure leaves none of them half-written.
    with contextlib.ExitStack() as stack:
        if onnx is not None:
            target = stack.enter_context(atomic_output(Path(onnx)))
            _export_onnx(model, space, target, ort, fold=fold)
        if weights is not None:
            torch.save(tensors, stack.enter_context(atomic_output(Path(weights))))
        with open(stack.enter_context(atomic_output(out)), "x", encoding="utf-8") as fh:
            fh.write(source)
