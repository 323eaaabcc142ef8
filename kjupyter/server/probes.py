"""Reachability of the configured clusters for the lab's cluster picker: quick, bounded and cached.

Every cluster is asked at once, on threads of this cache. A request waits at most ``wait`` seconds:
a cluster that has not answered by then is a row saying so ("no answer within 3 s"), and its probe
goes on; its answer, like every other, is kept ``ttl`` seconds, so opening the picker again soon
asks nobody. A probe that raised is an answer too: unreachable, with the error's sentence.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from typing import Any

Probe = Callable[[str], dict[str, Any]]


class ProbeCache:
    def __init__(self, probe: Probe, wait: float, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.wait = wait
        self.ttl = ttl
        self.clock = clock
        self.calls = 0  # probes started (the tests count them)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kjupyter-probe")
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Future[dict[str, Any]]]] = {}

    def get(self, names: list[str]) -> list[dict[str, Any]]:
        """``{"reachable", "detail"}`` for each name, in order; None for a probe still out after ``wait``."""
        futures = [self._future(name) for name in names]
        wait_all(futures, timeout=self.wait)
        return [self._row(f) for f in futures]

    def _future(self, name: str) -> Future[dict[str, Any]]:
        now = self.clock()
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and (not entry[1].done() or now - entry[0] < self.ttl):
                return entry[1]
            self.calls += 1
            future = self._pool.submit(self.probe, name)
            self._entries[name] = (now, future)
            return future

    def _row(self, future: Future[dict[str, Any]]) -> dict[str, Any]:
        if not future.done():
            return {"reachable": None, "detail": f"no answer within {self.wait:g} s; still asking (reopen to see)"}
        exc = future.exception()
        if exc is not None:
            return {"reachable": False, "detail": str(exc)}
        return future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
