"""A notebook cell as a picklable function call, run in the pod (or a local worker).

:class:`CellTask` is what the runner calls: ``task(**inputs)`` executes the
cell in a fresh namespace holding the inputs and returns a :class:`CellResult`.
:func:`rebind_globals` is used by the client on what comes back.
"""

from __future__ import annotations

import ast
import builtins
import linecache
import types
from collections.abc import Iterable
from typing import Any, NamedTuple

CELL_FILENAME = "<kube-cell>"


class CellResult(NamedTuple):
    """What a cell run hands back: the names it bound, the last expression's value, the names it deleted."""

    outputs: dict[str, Any]
    value: Any
    deleted: tuple[str, ...]


class CellTask:
    """``task(**inputs)`` runs the cell's code with those names and returns a :class:`CellResult`.

    ``outputs`` are the names to bring back; with ``strict`` (``--out``), a
    missing or unpicklable one is an error, otherwise it is skipped with a note.
    """

    def __init__(self, code: str, outputs: Iterable[str], *, display: bool, strict: bool = False,
                 deletes: Iterable[str] = (), name: str = "", first_line: int = 1) -> None:  # fmt: skip
        self.code = code
        # A traceback names the cell "<kube-cell In[5]>" (shown as "Cell In[5]") with the notebook cell's own
        # line numbers: its code starts on ``first_line`` (2: below the %%kube line).
        self.filename = f"<kube-cell {name}>" if name else CELL_FILENAME
        self.first_line = max(1, first_line)
        self.outputs = tuple(outputs)
        self.display = display
        self.strict = strict
        self.deletes = tuple(deletes)
        self.__name__ = self.__qualname__ = "cell"

    def __call__(self, **inputs: Any) -> CellResult:
        namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins, **inputs}
        filename = getattr(self, "filename", CELL_FILENAME)
        offset = getattr(self, "first_line", 1) - 1
        tree = ast.increment_lineno(ast.parse(self.code, filename, "exec"), offset)
        last: ast.expr | None = None
        final = tree.body[-1] if tree.body else None
        if self.display and isinstance(final, ast.Expr):
            tree.body.pop()
            last = final.value
        lines = ["\n"] * offset + self.code.splitlines(True)
        linecache.cache[filename] = (len(self.code), None, lines, filename)
        exec(compile(tree, filename, "exec"), namespace)
        value = eval(compile(ast.Expression(last), filename, "eval"), namespace) if last is not None else None
        return CellResult(self._collect(namespace), value, tuple(n for n in self.deletes if n not in namespace))

    def _collect(self, namespace: dict[str, Any]) -> dict[str, Any]:
        import cloudpickle

        out = {}
        for name in self.outputs:
            if name not in namespace:
                if self.strict:
                    raise NameError(f"--out names {name!r}, but the cell did not define it")
                continue
            value = namespace[name]
            if isinstance(value, types.ModuleType):
                out[name] = value
                continue
            try:
                cloudpickle.dumps(value)
            except Exception as exc:
                if self.strict:
                    raise TypeError(f"variable {name!r} cannot be sent back: {type(exc).__name__}: {exc}") from exc
                print(f"kjupyter: not bringing back {name!r}: it cannot be pickled ({exc})", flush=True)
                continue
            out[name] = value
        return out

    def __repr__(self) -> str:
        return f"<CellTask outputs={list(self.outputs)}>"


def rebind_globals(value: Any, namespace: dict[str, Any]) -> Any:
    """A function that came back from a cell, with the notebook's namespace as its globals.

    Unpickled functions get a private globals dict; rebinding makes them see
    (and update) the notebook's variables as a function defined locally would.
    """
    if not isinstance(value, types.FunctionType) or value.__globals__ is namespace:
        return value
    if getattr(value, "__module__", None) != "__main__":
        return value
    for key, val in value.__globals__.items():
        namespace.setdefault(key, val)
    fn = types.FunctionType(value.__code__, namespace, value.__name__, value.__defaults__, value.__closure__)
    fn.__kwdefaults__ = value.__kwdefaults__
    fn.__dict__.update(value.__dict__)
    fn.__qualname__ = value.__qualname__
    fn.__annotations__ = value.__annotations__
    fn.__doc__ = value.__doc__
    fn.__module__ = value.__module__
    return fn
