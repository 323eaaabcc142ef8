"""The failed items of a map, for the lab's run details: index and exception line.

``run.json`` lists which tasks failed (``failed_items``, the first 50). Their exception lines come
from their error envelopes' headers (:mod:`kjupyter.backends.error_lines`: authenticated with the
run's key, this machine's saved key, else the one the backend keeps; the pickled body is never
read, so the server unpickles nothing). A task that left no envelope (killed, cancelled) or whose
envelope cannot be authenticated is listed with the sentence that says so.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kjupyter import run_keys
from kjupyter.backends.base import Backend
from kjupyter.backends.error_lines import error_line, exception_line
from kjupyter.errors import KjupyterError

MAX_SHOWN = 20  # exception lines read per request: a row's details show the first ones


def failure_rows(backend: Backend, run_id: str, indexes: list[int]) -> list[dict[str, Any]]:
    """``[{"index", "error"}]`` for the first :data:`MAX_SHOWN` of ``indexes``."""
    key = _key(backend, run_id)
    return [{"index": i, "error": error_line(backend, run_id, i, key)} for i in sorted(indexes)[:MAX_SHOWN]]


class RunErrors:
    """The one-line error of each finished run with failed tasks: what its first failed task raised.

    The sidebar shows it under the run (``ValueError: bad 3``, or ``item 7: ValueError: bad 7 (+2 more)``
    for a map) where the run's diagnosis is only a count. A finished run does not change, so each is
    read once (one envelope header) and kept; a listing reads at most ``NEW_PER_LISTING`` new ones, the
    others come with the next refreshes. A run whose exception cannot be read keeps its diagnosis.
    """

    KEEP = 2000
    NEW_PER_LISTING = 20

    def __init__(self) -> None:
        self._known: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0

    def fill(self, rows: list[dict[str, Any]], backend_of: Callable[[dict[str, Any]], Backend]) -> None:
        """Set ``row["error"]`` on each row ('' when none is known)."""
        new = 0
        for row in rows:
            row["error"] = ""
            if row["active"] or not row["failed_items"]:
                continue
            key = (row["cluster"], row["run_id"])
            with self._lock:
                known = self._known.get(key)
            if known is None:
                if new >= self.NEW_PER_LISTING:
                    continue
                new += 1
                known = self._read(backend_of(row), row)
                with self._lock:
                    self._known[key] = known
                    while len(self._known) > self.KEEP:
                        self._known.popitem(last=False)
            row["error"] = known

    def _read(self, backend: Backend, row: dict[str, Any]) -> str:
        run_id, first = row["run_id"], row["failed_items"][0]
        self.reads += 1
        try:
            line = exception_line(backend, run_id, first, _key(backend, run_id))
        except KjupyterError:
            return ""  # (no envelope, or not authentic: the row keeps its diagnosis; its details say why)
        if row["kind"] != "map":
            return line
        more = row["failed"] - 1
        return f"item {first}: {line}" + (f" (+{more} more)" if more > 0 else "")


def _key(backend: Backend, run_id: str) -> bytes | None:
    key = run_keys.load_key(run_id)
    if key is None:
        try:
            key = backend.run_key(run_id)
        except KjupyterError:
            key = None
    return key
