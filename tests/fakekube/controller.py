"""A tiny controller runtime: a de-duplicating, delayable work queue drained by
one thread, fed by the store's change feed (no polling loops)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import traceback
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from .store import Change

if TYPE_CHECKING:
    from .cluster import FakeCluster

log = logging.getLogger("fakekube")


class Controller:
    name = "controller"

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.api = cluster.api
        self.store = cluster.store
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"fakekube-{self.name}", daemon=True)
        self.store.subscribe(self._on_change)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def enqueue(self, key: Hashable, delay: float = 0.0) -> None:
        due = time.monotonic() + max(0.0, delay)
        with self._cv:
            if key in self._due and self._due[key] <= due:
                return
            self._due[key] = due
            heapq.heappush(self._heap, (due, next(self._seq), key))
            self._cv.notify()

    def _on_change(self, change: Change) -> None:
        try:
            self.on_change(change)
        except Exception:
            self.cluster.record_error(self.name, traceback.format_exc())

    def on_change(self, change: Change) -> None:
        """Called under the store lock for every change: only enqueue keys here."""

    def reconcile(self, key: Any) -> None:
        raise NotImplementedError

    def _next(self) -> Hashable | None:
        with self._cv:
            while not self._stopped:
                now = time.monotonic()
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded entry
                if self._heap and self._heap[0][0] <= now:
                    _due, _seq, key = heapq.heappop(self._heap)
                    del self._due[key]
                    return key
                timeout = self._heap[0][0] - now if self._heap else None
                self._cv.wait(timeout)
            return None

    def _run(self) -> None:
        while True:
            key = self._next()
            if key is None:
                return
            try:
                self.reconcile(key)
            except Exception:
                if not self._stopped:
                    self.cluster.record_error(self.name, traceback.format_exc())
                    log.exception("fakekube %s failed on %r", self.name, key)

    def idle(self) -> bool:
        with self._cv:
            return not self._heap or self._heap[0][0] > time.monotonic()
