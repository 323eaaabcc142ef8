"""kjupyter's cloudpickle Pickler: code shipped by value keeps its file name, and its source lines can travel.

A notebook's functions, a script's and those of a helper module beside them are
pickled by value: their code objects travel. Since cloudpickle 3.1 every such
code object arrives named ``<dynamic-code>`` (it makes pickles deterministic),
so a remote traceback would read ``File "<dynamic-code>"`` with no source line.
Here code objects are reduced as cloudpickle reduces them, plus their real
file name, which :func:`restore_code` puts back when they are unpickled (with
cloudpickle 3.0, which keeps the name, it has nothing to do).

The lines spanned by each code object met while pickling are collected, so the
client can ship the source lines of exactly the code that travels, and nothing
else of its file (:func:`source_lines`: not the rest of a cell or a module, which
may hold what the user never meant to send); the runner registers them in
:mod:`linecache` (:func:`register_sources`) before it runs anything, and
tracebacks show the notebook's lines, not just their numbers.
"""

from __future__ import annotations

import collections
import linecache
import types
from collections.abc import Iterator
from typing import IO, Any

import cloudpickle

PROTOCOL = 5  # out-of-band-capable, supported by Python >= 3.8
MAX_SOURCE_CHARS = 4 * 2**20  # source text shipped with one payload, at most (files beyond it are left out)

_CODE_REDUCE = cloudpickle.Pickler.dispatch_table.get(types.CodeType)


def restore_code(factory: Any, args: tuple[Any, ...], filename: str) -> types.CodeType:
    """Rebuild a code object as cloudpickle does, then give it back its file name."""
    code: types.CodeType = factory(*args)
    return code if code.co_filename == filename else code.replace(co_filename=filename)


Spans = dict[str, list[tuple[int, int]]]  # file name -> (first, last) line of each code object pickled
Sources = dict[str, dict[str, str]]  # file name -> {line number: line}


class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """``cloudpickle.Pickler`` whose code objects keep ``co_filename``; ``spans`` says which lines they cover."""

    def __init__(self, file: IO[bytes], protocol: int) -> None:
        self.spans: Spans = {}
        if _CODE_REDUCE is not None:  # (read by the C pickler in __init__, so set before it)
            self.dispatch_table = collections.ChainMap(
                {types.CodeType: self._reduce_code}, cloudpickle.Pickler.dispatch_table
            )
        super().__init__(file, protocol=protocol)

    def _reduce_code(self, code: types.CodeType) -> tuple[Any, ...]:
        last = max((line for _, _, line in code.co_lines() if line is not None), default=code.co_firstlineno)
        self.spans.setdefault(code.co_filename, []).append((code.co_firstlineno, last))
        factory, args = _CODE_REDUCE(code)  # type: ignore[misc]
        return restore_code, (factory, args, code.co_filename)


def dump(obj: Any, f: IO[bytes], protocol: int) -> Spans:
    """Pickle ``obj`` into ``f``; return the line spans of the code objects pickled by value, by file."""
    pickler = Pickler(f, protocol)
    pickler.dump(obj)
    return pickler.spans


def source_lines(spans: Spans) -> Sources:
    """The lines of those spans as this process sees them (a cell's from IPython's linecache), size-capped."""
    out: Sources = {}
    total = 0
    for name in sorted(spans):
        lines = linecache.getlines(name)
        wanted = sorted({n for first, last in spans[name] for n in range(first, last + 1) if 1 <= n <= len(lines)})
        size = sum(len(lines[n - 1]) for n in wanted)
        if wanted and total + size <= MAX_SOURCE_CHARS:
            out[name] = {str(n): lines[n - 1] for n in wanted}
            total += size
    return out


def register_sources(sources: Sources) -> None:
    """Make ``linecache`` (and so tracebacks) find these lines, whether or not the files exist here."""
    for name, numbered in sources.items():
        try:
            known = {int(n): str(line) for n, line in numbered.items()}
        except (AttributeError, ValueError):
            continue
        if known:
            lines = [known.get(n, "\n") for n in range(1, max(known) + 1)]
            linecache.cache[name] = (sum(len(x) for x in lines), None, lines, name)


# --- explaining what cannot be pickled ------------------------------------------------


def describe(obj: Any) -> str:
    text = repr(obj)
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"a {type(obj).__module__}.{type(obj).__qualname__} ({text})"


def _children(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield f"{path}[{key!r}]", value
    elif isinstance(obj, list | tuple | set | frozenset):
        for i, value in enumerate(obj):
            yield f"{path}[{i}]", value
    elif hasattr(obj, "__dict__") and not isinstance(obj, type | types.ModuleType | types.FunctionType):
        for key, value in vars(obj).items():
            yield f"{path}.{key}", value


def find_unpicklable(obj: Any, path: str, depth: int = 0) -> tuple[str, Any, Exception | None]:
    """The innermost part of ``obj`` that fails to pickle, with its path and error."""
    try:
        cloudpickle.dumps(obj, protocol=PROTOCOL)
        return path, obj, None
    except Exception as exc:
        if depth < 6:
            for child_path, child in _children(obj, path):
                try:
                    cloudpickle.dumps(child, protocol=PROTOCOL)
                except Exception:
                    return find_unpicklable(child, child_path, depth + 1)
        return path, obj, exc
