"""Client-side cell analysis: what a notebook cell reads, and what it assigns.

Pure: no IPython here. :func:`analyze` finds, with :mod:`ast` and :mod:`symtable`,
the names a cell reads from the namespace before assigning them (those travel
with it) and the names it binds (those come back). What runs in the pod is
:class:`kjupyter.runner.cell_task.CellTask`.
"""

from __future__ import annotations

import ast
import symtable
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

CELL_FILENAME = "<kube-cell>"

# Names IPython (or Python) puts in a user namespace that never travel with a cell.
_NEVER_SHIPPED = frozenset({"In", "Out", "get_ipython", "exit", "quit"})


@dataclass(frozen=True)
class CellAnalysis:
    """``reads``: names the cell may read before binding them; ``assigns``: names it binds at top level."""

    reads: frozenset[str]
    assigns: tuple[str, ...]  # in order of first binding
    deletes: frozenset[str]
    has_value: bool  # the last statement is an expression whose value is displayed


def analyze(code: str) -> CellAnalysis:
    """Which names the cell reads from the namespace and which it assigns. Raises SyntaxError."""
    tree = ast.parse(code, CELL_FILENAME, "exec")
    flow = _Flow()
    flow.block(tree.body)
    deferred = _nested_global_reads(code)
    assigned_anywhere = set(flow.order) | flow.deletes
    reads = flow.reads | {n for n in deferred if n not in assigned_anywhere}
    reads |= flow.global_writes_read
    has_value = bool(tree.body) and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";")
    assigns = tuple(dict.fromkeys([*flow.order, *flow.global_writes]))
    return CellAnalysis(frozenset(reads), assigns, frozenset(flow.deletes), has_value)


def shippable(names: Iterable[str], namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``names`` found in a user namespace, leaving out IPython's own entries."""
    out = {}
    for name in sorted(names):
        if name in _NEVER_SHIPPED or (
            name.startswith("_") and (name.strip("_").isdigit() or name in ("_", "__", "___"))
        ):
            continue
        if name.startswith("_i") and (name[2:].isdigit() or name in ("_i", "_ii", "_iii")):
            continue
        if name in namespace:
            out[name] = namespace[name]
    return out


class _Flow:
    """Walks top-level statements in order, tracking which names are certainly bound by now."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.order: list[str] = []  # every name bound at top level, first binding first
        self.reads: set[str] = set()
        self.deletes: set[str] = set()
        self.global_writes: list[str] = []  # `global x; x = ...` inside functions defined in the cell
        self.global_writes_read: set[str] = set()

    def load(self, name: str) -> None:
        if name not in self.bound:
            self.reads.add(name)

    def store(self, name: str, certain: bool = True) -> None:
        if name not in self.order:
            self.order.append(name)
        if certain:
            self.bound.add(name)
        self.deletes.discard(name)

    def block(self, body: list[ast.stmt], certain: bool = True) -> None:
        """Run ``body`` in order; if it may not run (loop, try), its bindings do not outlive it."""
        before = set(self.bound)
        for stmt in body:
            self.stmt(stmt, True)
        if not certain:
            self.bound = before

    def stmt(self, node: ast.stmt, certain: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for expr in _header_exprs(node):
                self.expr(expr)
            self.store(node.name, certain)
            self._global_decls(node)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name != "*":
                    self.store(alias.asname or alias.name.split(".")[0], certain)
        elif isinstance(node, ast.Assign):
            self.expr(node.value)
            for target in node.targets:
                self.target(target, certain)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                self.expr(node.value)
                self.target(node.target, certain)
        elif isinstance(node, ast.AugAssign):
            self.expr(node.value)
            if isinstance(node.target, ast.Name):
                self.load(node.target.id)
            self.target(node.target, certain)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.load(target.id)
                    self.bound.discard(target.id)
                    self.deletes.add(target.id)
                else:
                    self.expr(target)
                    self.mutated(target)
        elif isinstance(node, ast.For | ast.AsyncFor):
            self.expr(node.iter)
            self.block([ast.Assign(targets=[node.target], value=ast.Constant(None)), *node.body], certain=False)
            self.block(node.orelse, certain=False)
        elif isinstance(node, ast.While):
            self.expr(node.test)
            self.block(node.body, certain=False)
            self.block(node.orelse, certain=False)
        elif isinstance(node, ast.If):
            self.expr(node.test)
            self._branches([node.body, node.orelse], certain)
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                self.expr(item.context_expr)
                if item.optional_vars is not None:
                    self.target(item.optional_vars, certain)
            self.block(node.body, certain)
        elif isinstance(node, ast.Try | ast.TryStar):
            self.block(node.body, certain=False)
            for handler in node.handlers:
                if handler.type is not None:
                    self.expr(handler.type)
                bind = [ast.Assign(targets=[ast.Name(handler.name or "_", ast.Store())], value=ast.Constant(None))]
                self.block([*(bind if handler.name else []), *handler.body], certain=False)
            self.block(node.orelse, certain=False)
            self.block(node.finalbody, certain)
        elif isinstance(node, ast.Match):
            self.expr(node.subject)
            for case in node.cases:
                for sub in ast.walk(case.pattern):
                    for name in _pattern_names(sub):
                        self.store(name, certain=False)
                    if isinstance(sub, ast.MatchValue | ast.MatchSingleton):
                        self.expr(sub)  # type: ignore[arg-type]
                if case.guard is not None:
                    self.expr(case.guard)
                self.block(case.body, certain=False)
        elif isinstance(node, ast.Global | ast.Nonlocal):
            pass
        else:  # Expr, Return, Raise, Assert, Pass, ...
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.expr(child)

    def _branches(self, branches: list[list[ast.stmt]], certain: bool) -> None:
        before = set(self.bound)
        results = []
        for body in branches:
            self.bound = set(before)
            self.block(body, certain)
            results.append(self.bound)
        self.bound = set.intersection(*results) if certain else before

    def target(self, node: ast.expr, certain: bool = True) -> None:
        if isinstance(node, ast.Name):
            self.store(node.id, certain)
        elif isinstance(node, ast.Tuple | ast.List):
            for elt in node.elts:
                self.target(elt, certain)
        elif isinstance(node, ast.Starred):
            self.target(node.value, certain)
        else:  # x.attr = ..., x[i] = ...: reads x, and changes it in place, so x comes back too
            self.expr(node)
            self.mutated(node)

    def mutated(self, node: ast.expr) -> None:
        while isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        if isinstance(node, ast.Name) and node.id not in self.order:
            self.order.append(node.id)

    def expr(self, node: ast.AST) -> None:
        """Loads evaluated now, in this scope; nested scopes are handled by symtable (deferred)."""
        for sub in _walk_same_scope(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                self.load(sub.id)
            elif isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
                self.store(sub.target.id, certain=False)

    def _global_decls(self, node: ast.AST) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Global):
                for name in sub.names:
                    if name not in self.global_writes:
                        self.global_writes.append(name)
                    self.global_writes_read.add(name)  # a function may update it: bring the current value


def _header_exprs(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> Iterator[ast.expr]:
    """What a def/class statement evaluates in the enclosing scope: decorators, defaults, bases."""
    yield from node.decorator_list
    if isinstance(node, ast.ClassDef):
        yield from node.bases
        yield from (kw.value for kw in node.keywords)
    else:
        yield from node.args.defaults
        yield from (d for d in node.args.kw_defaults if d is not None)


def _walk_same_scope(node: ast.AST) -> Iterator[ast.AST]:
    """Like ast.walk, but does not enter lambdas or comprehensions (except a comprehension's first iterable)."""
    todo = [node]
    while todo:
        current = todo.pop()
        yield current
        if isinstance(current, ast.Lambda):
            todo.extend(current.args.defaults)
            todo.extend(d for d in current.args.kw_defaults if d is not None)
        elif isinstance(current, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            todo.append(current.generators[0].iter)
            for sub in ast.walk(current):  # a walrus in a comprehension binds in this scope
                if isinstance(sub, ast.NamedExpr):
                    todo.append(sub)
        else:
            todo.extend(ast.iter_child_nodes(current))


def _pattern_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
        return [node.name]
    if isinstance(node, ast.MatchMapping) and node.rest:
        return [node.rest]
    return []


def _nested_global_reads(code: str) -> set[str]:
    """Global names read inside functions, lambdas, classes and comprehensions defined in the cell."""
    out: set[str] = set()
    todo = list(symtable.symtable(code, CELL_FILENAME, "exec").get_children())
    while todo:
        table = todo.pop()
        todo.extend(table.get_children())
        for sym in table.get_symbols():
            if sym.is_global() and sym.is_referenced():
                out.add(sym.get_name())
    return out
