"""Pruned module source and config literals: the code generator behind ``fusion-nas export``.

An exported network is the package's own source, cut down. :class:`Program` reads a module with
``inspect.getsource``, splits it into top-level statements (decorators and the comments right
above them included) and keeps what a set of root names needs: the closure of the names each
kept statement reads. A class registered from another module (a user's operator) comes with the
closure of names in its own module; names it takes from the home module are written as the home
module's names. :meth:`Program.assign` adds a config object as a call literal, wrapped the way
``ruff format`` keeps it.

As in ``torch.fx``'s code generation, identifiers only come from source code, never from data,
and a literal holds only checked ints, floats, booleans, plain words and config dataclasses.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import inspect
import math
import re
import symtable
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from fusion_nas.errors import ExportError

__all__ = ["Piece", "Program"]

INDENT = "    "
WIDTH = 88  # generated lines fit ruff's default line length (the project allows 100)
_WORD = re.compile(r"[A-Za-z0-9_.:+-]*")  # the strings a literal may hold
_MISSING = object()


@dataclass
class _Stmt:
    """A top-level statement of a module: its line range and the names it binds and reads."""

    node: ast.stmt
    start: int  # index of its first line (comments right above and decorators included)
    end: int  # index one past its last line
    section: int  # the section comment (``# ---- name``) it stands under; 0: none
    binds: tuple[str, ...]
    reads: frozenset[str]  # global names, in any scope inside it
    edits: dict[tuple[int, int], tuple[int, int, str]] = field(default_factory=dict)

    @property
    def is_import(self) -> bool:
        return isinstance(self.node, (ast.Import, ast.ImportFrom))


def _binds(node: ast.stmt) -> tuple[str, ...]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return (node.name,)
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return tuple(a.asname or a.name.split(".")[0] for a in node.names)
    targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
    return tuple(n.id for t in targets if t for n in ast.walk(t) if isinstance(n, ast.Name))


def _global_reads(text: str) -> frozenset[str]:
    """Global names the code reads in any scope (decorators and annotations included)."""
    out: set[str] = set()
    tables = [symtable.symtable(text, "<statement>", "exec")]
    while tables:
        table = tables.pop()
        out.update(s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global())
        tables += table.get_children()
    return frozenset(out)


def _import_root(node: ast.stmt) -> str:
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] if not node.level else "."
    return node.names[0].name.split(".")[0]


class _Source:
    """One module's source, split into top-level statements and section comments."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.name = module.__name__
        try:
            text = inspect.getsource(module)
        except (OSError, TypeError):
            raise ExportError(f"the source of module {self.name!r} cannot be read") from None
        self.lines = text.splitlines()
        body = ast.parse(text).body
        done = 0  # index one past the previous statement
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            done = body.pop(0).end_lineno  # the module docstring: an export writes its own
        self.stmts: list[_Stmt] = []
        self.sections: dict[int, list[str]] = {}
        for node in body:
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            start = first - 1
            while start > done and self.lines[start - 1].startswith("#"):
                start -= 1  # comments right above belong to the statement
            banner = [ln for ln in self.lines[done:start] if ln.startswith("#")]
            if banner:
                self.sections[len(self.sections) + 1] = banner
            reads = _global_reads("\n".join(self.lines[first - 1 : node.end_lineno]))
            binds = _binds(node)
            self.stmts.append(
                _Stmt(node, start, node.end_lineno, len(self.sections), binds, reads - set(binds))
            )
            done = node.end_lineno
        self.by_name = {name: st for st in self.stmts for name in st.binds}

    def text(self, stmt: _Stmt) -> str:
        """The statement's source, with its edits (renamed names) applied."""
        lines = self.lines[stmt.start : stmt.end]
        for (row, col), (end_row, end_col, new) in sorted(stmt.edits.items(), reverse=True):
            a, b = row - 1 - stmt.start, end_row - 1 - stmt.start
            head = lines[a].encode()[:col].decode()  # ast columns count UTF-8 bytes
            tail = lines[b].encode()[end_col:].decode()
            lines[a : b + 1] = [head + new + tail]
        return "\n".join(lines)


@dataclass(frozen=True)
class Piece:
    """A top-level statement as written, and the AST dumps its text must parse to."""

    text: str
    dumps: tuple[str, ...]


class Program:
    """Statements gathered from a home module and from the modules of registered classes.

    ``provided`` names are defined by the caller (see :meth:`assign`), never taken from source.
    Other modules may import only the libraries the home module imports.
    """

    def __init__(self, home: ModuleType, provided: Iterable[str] = ()) -> None:
        self.home = _Source(home)
        self.provided = frozenset(provided)
        self.sources: dict[str, _Source] = {home.__name__: self.home}
        self.kept: dict[int, tuple[_Source, _Stmt]] = {}  # id(statement) -> its source
        self.bound: dict[str, object] = {}  # name -> the statement (or import line) binding it
        self.imports: dict[str, str] = {}  # name -> an import line other modules need
        self.tail: list[Piece] = []
        self.roots = {_import_root(st.node) for st in self.home.stmts if st.is_import}
        for st in self.home.stmts:  # future imports change how the whole module compiles
            if isinstance(st.node, ast.ImportFrom) and st.node.module == "__future__":
                self._keep(self.home, st)

    # ----------------------------------------------------------------------- choosing

    def need(self, *names: str) -> None:
        """Keep the home module's definitions of ``names`` and everything they read."""
        for name in names:
            stmt = self.home.by_name.get(name)
            if stmt is None:
                raise ExportError(f"{name!r} is not defined in module {self.home.name!r}")
            self._keep(self.home, stmt)

    def add(self, obj: Any) -> str:
        """Keep the class or function ``obj``, wherever it is defined; its name in the module.

        Definitions of its module (and of the home module) come along, never other modules'.
        """
        src, name = self._origin(obj)
        self._keep(src, src.by_name[name])
        return name

    def assign(self, name: str, value: Any) -> None:
        """End the module with ``name = <literal of value>``; its config classes come along."""
        classes = {
            obj
            for obj in vars(self.home.module).values()
            if isinstance(obj, type)
            and dataclasses.is_dataclass(obj)
            and obj.__module__ == self.home.name
        }
        used: set[str] = set()
        tree = _literal(value, classes, used)
        self.need(*sorted(used))
        text = "\n".join(_lines(tree, "", f"{name} = ", "", WIDTH))
        self.tail.append(Piece(text, tuple(ast.dump(s) for s in ast.parse(text).body)))

    def _origin(self, obj: Any, reader: _Source | None = None) -> tuple[_Source, str]:
        """The source and name of a class or function defined at the top of its module; with
        a ``reader``, that module must be the reader's own or the home module."""
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        name = getattr(obj, "__name__", None)
        if module is None or name is None or getattr(module, name, None) is not obj:
            raise ExportError(f"{obj!r} is not defined at the top level of a module")
        if reader is not None and module not in (reader.module, self.home.module):
            raise ExportError(
                f"{name!r} comes from module {module.__name__!r}, which an export cannot copy; "
                f"define it in module {reader.name!r}"
            )
        if module.__name__ not in self.sources:
            self.sources[module.__name__] = _Source(module)
        src = self.sources[module.__name__]
        if name not in src.by_name:
            raise ExportError(f"{name!r} is not defined at the top level of {src.name!r}")
        return src, name

    def _bind(self, name: str, by: object, module: str) -> None:
        if self.bound.setdefault(name, by) is not by or name in self.provided:
            raise ExportError(f"{name!r} of module {module!r} clashes with another {name!r}")

    def _keep(self, src: _Source, stmt: _Stmt) -> None:
        if id(stmt) in self.kept:
            return
        for name in stmt.binds:
            self._bind(name, stmt, src.name)
        self.kept[id(stmt)] = (src, stmt)
        for name in sorted(stmt.reads):
            if src is not self.home:
                self._foreign(src, stmt, name)
            elif name in self.home.by_name and name not in self.provided:
                self._keep(src, self.home.by_name[name])
            elif name not in self.provided and not hasattr(builtins, name):
                raise ExportError(f"{name!r} is not defined in module {src.name!r}")

    def _foreign(self, src: _Source, stmt: _Stmt, name: str) -> None:
        """Resolve a name that code of another module reads; rename it where it differs."""
        value = vars(src.module).get(name, _MISSING)
        nodes = [n for n in ast.walk(stmt.node) if isinstance(n, ast.Name) and n.id == name]
        if value is self.home.module:  # `nets.X` is the home module's X
            attrs = [
                n for n in ast.walk(stmt.node) if isinstance(n, ast.Attribute) and n.value in nodes
            ]
            if len(attrs) != len(nodes):
                raise ExportError(f"module {src.name!r} uses module {self.home.name!r} itself")
            for attr in attrs:
                self.need(attr.attr)
                self._edit(stmt, attr, attr.attr)
            return
        target = self._resolve(src, name, value)
        if target is None:
            return
        dest_name = target[1]
        if dest_name != name:
            for node in nodes:
                self._edit(stmt, node, dest_name)

    def _resolve(self, src: _Source, name: str, value: Any) -> tuple[_Source, str] | None:
        """Where a name read by another module's code is defined; None for a builtin."""
        where = f"{name!r} (read in module {src.name!r})"
        stmt = src.by_name.get(name)
        if value is _MISSING:
            if hasattr(builtins, name):
                return None
            raise ExportError(f"{where} is not defined at its top level")
        module = getattr(value, "__module__", None) or ""
        if isinstance(value, ModuleType) or module.split(".")[0] in self.roots:
            for st in self.home.stmts:  # the home module's import of the same object
                for bound in st.binds if st.is_import else ():
                    if vars(self.home.module).get(bound, _MISSING) is value:
                        self._keep(self.home, st)
                        return self.home, bound
            if stmt is None or not stmt.is_import or _import_root(stmt.node) not in self.roots:
                raise ExportError(
                    f"{where} comes from a library an export cannot import; allowed: "
                    f"{', '.join(sorted(self.roots - {'__future__'}))}"
                )
            (alias,) = [a for a in stmt.node.names if (a.asname or a.name.split(".")[0]) == name]
            if isinstance(stmt.node, ast.ImportFrom):
                line = ast.unparse(ast.ImportFrom(stmt.node.module, [alias], 0))
            else:
                line = ast.unparse(ast.Import([alias]))
            self._bind(name, line, src.name)
            self.imports[name] = line
            return src, name
        if inspect.isclass(value) or inspect.isfunction(value):
            dest, dest_name = self._origin(value, reader=src)
            self._keep(dest, dest.by_name[dest_name])
            return dest, dest_name
        if stmt is not None and not stmt.is_import:
            self._keep(src, stmt)
            return src, name
        if isinstance(stmt.node if stmt else None, ast.ImportFrom):
            node = stmt.node
            for a in node.names:
                if (a.asname or a.name) == name and node.module == self.home.name:
                    self.need(a.name)
                    return self.home, a.name
        raise ExportError(f"{where} cannot be exported")

    @staticmethod
    def _edit(stmt: _Stmt, node: ast.expr, new: str) -> None:
        stmt.edits[(node.lineno, node.col_offset)] = (node.end_lineno, node.end_col_offset, new)

    # ----------------------------------------------------------------------- writing

    def pieces(self) -> list[Piece]:
        """The written statements in order, each with the AST dumps its text must parse to.

        An unedited statement must parse to its node in the original module.
        """
        return [piece for _, piece in self._layout()] + self.tail

    def source(self, docstring: str) -> str:
        """The module: docstring, kept imports, kept definitions, then the assignments."""
        out = ['"""' + docstring + '"""', ""]
        for before, piece in self._layout():
            out += [*before, piece.text]
        for piece in self.tail:
            out += ["", "", piece.text]
        return "\n".join(out) + "\n"

    def _layout(self) -> list[tuple[list[str], Piece]]:
        """Each written statement with the lines (blank, section comment) written before it."""
        out: list[tuple[list[str], Piece]] = []
        prev: tuple[_Source, _Stmt] | None = None
        for src, stmt in self._ordered():
            if prev is not None and prev[1].is_import and not stmt.is_import:
                for line in sorted(self.imports.values()):  # other modules' imports
                    out.append(([], Piece(line, (ast.dump(ast.parse(line).body[0]),))))
            new_section = prev is None or prev[0] is not src or prev[1].section != stmt.section
            if stmt.section and new_section and src is self.home:
                before = ["", "", *src.sections[stmt.section], "", ""]
            else:
                before = [] if prev is None else self._gap(prev, (src, stmt))
            text = src.text(stmt)
            if stmt.edits:
                dumps = tuple(ast.dump(s) for s in ast.parse(text).body)
            else:
                dumps = (ast.dump(stmt.node),)
            out.append((before, Piece(text, dumps)))
            prev = (src, stmt)
        return out

    @staticmethod
    def _gap(a: tuple[_Source, _Stmt], b: tuple[_Source, _Stmt]) -> list[str]:
        """Blank lines between two written statements: as in the source where they were
        neighbours, one between import groups and after the imports, else two."""
        (src, st_a), (src_b, st_b) = a, b
        if st_b.is_import:  # one between import groups
            between = src.lines[st_a.end : st_b.start] if src is src_b else []
            return [""] if any(not ln.strip() for ln in between) else []
        if st_a.is_import and not isinstance(st_b.node, (ast.ClassDef, ast.FunctionDef)):
            return [""]  # as isort wants
        if src is not src_b:
            return ["", ""]
        between = src.lines[st_a.end : st_b.start]
        neighbours = src.stmts.index(st_b) == src.stmts.index(st_a) + 1
        if neighbours and all(not ln.strip() for ln in between):
            return between
        return ["", ""]

    def _ordered(self) -> list[tuple[_Source, _Stmt]]:
        """Imports, then definitions: the home module's first, then those of other modules
        (which may read the home module's); each module's statements in its own order."""
        kept = [
            (src, st) for src in self.sources.values() for st in src.stmts if id(st) in self.kept
        ]
        return [k for k in kept if k[1].is_import] + [k for k in kept if not k[1].is_import]


# --------------------------------------------------------------------------- literals


def _literal(value: Any, classes: set[type], used: set[str]) -> Any:
    """``value`` as a tree: an atom (str) or ``(open, [(prefix, tree), ...], close)``."""
    if type(value) is bool or type(value) is int:
        return repr(value)
    if type(value) is float:
        if not math.isfinite(value):
            raise ExportError(f"{value!r} cannot be written in a config; allowed: finite numbers")
        return repr(value)
    if type(value) is str:
        if not _WORD.fullmatch(value):
            raise ExportError(
                f"{value!r} cannot be written in a config; allowed: letters, digits and _.:+-"
            )
        return f'"{value}"'
    if type(value) is tuple:
        return ("(", [("", _literal(v, classes, used)) for v in value], ")")
    if type(value) in classes:
        fields = [f for f in dataclasses.fields(value) if f.init]
        required = [f for f in fields if f.default is dataclasses.MISSING]
        items = []
        for f in fields:
            v = getattr(value, f.name)
            if f in required:
                prefix = "" if len(required) <= 2 else f"{f.name}="  # few: positional
            elif type(v) is type(f.default) and v == f.default:
                continue  # the default: left out
            else:
                prefix = f"{f.name}="
            items.append((prefix, _literal(v, classes, used)))
        used.add(type(value).__name__)
        return (f"{type(value).__name__}(", items, ")")
    raise ExportError(f"a {type(value).__name__} cannot be written in a config")


def _flat(tree: Any) -> str:
    if isinstance(tree, str):
        return tree
    head, items, close = tree
    inner = ", ".join(prefix + _flat(v) for prefix, v in items)
    if head == "(" and len(items) == 1:
        inner += ","  # a one-element tuple
    return head + inner + close


def _lines(tree: Any, indent: str, prefix: str, suffix: str, width: int) -> list[str]:
    """One line if it fits; else one item per line with a trailing comma (which ``ruff format``
    keeps exploded), recursively."""
    line = indent + prefix + _flat(tree) + suffix
    if isinstance(tree, str) or len(line) <= width or not tree[1]:
        return [line]
    head, items, close = tree
    out = [indent + prefix + head]
    for item_prefix, item in items:
        out += _lines(item, indent + INDENT, item_prefix, ",", width)
    return [*out, indent + close + suffix]
