"""The block configs and operator registry of :mod:`fusion_nas.model.nets`, without torch.

``nets.py`` is the one home of the network: its configs (``BlockCfg``, ``StageCfg``,
``NetCfg``, ``CfgError``), its constants and the registry of operators and attention variants
(``OPS``, ``ATTENTIONS``, each with the fields it ``uses``). ``fusion-nas export`` copies that
file whole, so none of it moves out. Reading a space file, listing spaces or checking an
architecture needs only the configs, yet importing ``nets`` imports torch (seconds of CPU).

:func:`nets_view` answers with ``nets`` itself once it is imported (operators registered at
run time included). Before that, it answers with a torch-free view made from ``nets.py``'s own
source: its constants, configs and plain functions run as written; each registered operator or
variant becomes an empty class registered with the same decorator arguments, so ``OPS`` and
``ATTENTIONS`` list the same names with the same ``uses``. Code that builds a model imports
``nets`` first (:mod:`fusion_nas.model.build`), so its configs are ``nets``'s own.
``tests/model/test_configs.py`` checks that the view and ``nets`` agree.
"""

from __future__ import annotations

import ast
import sys
import threading
import types
from pathlib import Path
from typing import Any

__all__ = ["NETS", "cfg_errors", "nets_view"]

NETS = "fusion_nas.model.nets"
_TORCH_NAMES = frozenset({"torch", "nn", "F"})  # how nets.py names torch and its modules
_REGISTERS = frozenset({"register_op", "register_attention", "register_stem", "register_head"})
_LOCK = threading.Lock()
_light: types.ModuleType | None = None


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _registered(node: ast.stmt) -> bool:
    """Whether ``node`` is a class decorated ``@register_op(...)``/``@register_attention(...)``."""
    return isinstance(node, ast.ClassDef) and any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id in _REGISTERS
        for d in node.decorator_list
    )


def _torch_free(tree: ast.Module) -> ast.Module:
    """The statements of ``nets.py`` that run without torch (see the module docstring)."""
    body: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            roots = [a.name.split(".")[0] for a in node.names]
            if isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0]]
            if "torch" not in roots:
                body.append(node)
        elif _registered(node):
            # the operator's name and uses, without its torch body
            assert isinstance(node, ast.ClassDef)
            stub = ast.ClassDef(
                name=node.name,
                bases=[],
                keywords=[],
                body=[ast.Pass()],
                decorator_list=node.decorator_list,
                type_params=[],
            )
            body.append(ast.copy_location(stub, node))
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            # ``OPS: dict[str, type[nn.Module]] = {}``: the value, not the torch annotation
            plain = ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno)
            if not _names(node.value) & _TORCH_NAMES:
                body.append(ast.copy_location(plain, node))
        elif not _names(node) & _TORCH_NAMES:
            body.append(node)
    return ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))


def _build_light() -> types.ModuleType:
    path = Path(__file__).with_name("nets.py")
    source = path.read_text(encoding="utf-8")
    name = "fusion_nas.model._nets_configs"
    module = types.ModuleType(name, ast.get_docstring(ast.parse(source)))
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses look their module up while the classes are made
    try:
        exec(compile(_torch_free(ast.parse(source)), str(path), "exec"), module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def nets_view() -> Any:
    """``fusion_nas.model.nets`` if it is imported, else its torch-free view (made once).

    Both hold ``SEARCHABLE``, ``DOWNSAMPLES``, ``FUSION_INIT``, ``OPS``, ``ATTENTIONS``,
    ``BlockCfg``, ``StageCfg``, ``NetCfg``, ``CfgError`` and ``reads``.
    """
    global _light
    nets = sys.modules.get(NETS)
    if nets is not None and hasattr(nets, "FusionNet"):  # fully imported, not mid-import
        return nets
    with _LOCK:
        if _light is None:
            _light = _build_light()
        return _light


def cfg_errors() -> tuple[type[Exception], ...]:
    """The ``CfgError`` classes in use (the view's, and ``nets``'s once imported): a config
    made before ``nets`` was imported raises the view's."""
    errors = [nets_view().CfgError]
    if _light is not None and _light.CfgError not in errors:
        errors.append(_light.CfgError)
    return tuple(errors)
