"""The one event path: per-run hubs with bounded replay, delivered on per-run lanes.

Backends *publish* a run's events to its :class:`EventHub` from wherever they learn them (a
watch thread, a worker's reader thread), possibly while holding their own locks: publishing
only records the event and queues its delivery. Subscribers (the run's record, its future,
widgets, ``kjupyter logs -f``) are called later on a :class:`Lanes` thread, never on a watch
thread and never under a backend lock. One lane per run keeps a run's events in order, and
runs do not wait for each other: a result that takes seconds to download and unpickle holds
back its own run's later events only.

A hub keeps what a late subscriber needs (``attach``, a widget shown after the fact): every
event except log lines, the last :data:`REPLAY_LOG_LINES` log lines, and the latest progress
of a map. When older lines were left out, the replay starts with one line that says so.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import sys
import threading
import time
import traceback
from collections.abc import Callable, Hashable
from typing import Any

from kjupyter.run_events import Event, EventSink, LogLine, Progress

REPLAY_LOG_LINES = 2000
IDLE_THREAD_S = 30.0  # a lane thread with nothing to do for this long exits
MAX_THREADS = 32


class Lanes:
    """A pool of threads running submitted calls; calls with the same key run one at a time, in order."""

    def __init__(self, name: str, max_threads: int = MAX_THREADS) -> None:
        self.name = name
        self.max_threads = max_threads
        self._cond = threading.Condition()
        self._queues: dict[Hashable, collections.deque[Callable[[], Any]]] = {}
        self._ready: collections.deque[Hashable] = collections.deque()
        self._threads = 0
        self._idle = 0
        self._counter = itertools.count(1)
        self._local = threading.local()  # the key whose calls this thread is running, if any

    def submit(self, key: Hashable, fn: Callable[[], Any]) -> None:
        with self._cond:
            queue = self._queues.get(key)
            if queue is not None:  # the lane is waiting or being drained: it will get to this call
                queue.append(fn)
                return
            self._queues[key] = collections.deque([fn])
            self._ready.append(key)
            if self._idle:
                self._cond.notify()
            elif self._threads < self.max_threads:
                self._threads += 1
                threading.Thread(target=self._work, daemon=True, name=f"{self.name}-{next(self._counter)}").start()

    def running(self, key: Hashable) -> bool:
        """True on a thread that is running a call of ``key`` (waiting there for a later call would hang)."""
        return bool(getattr(self._local, "key", None) == key)

    def busy(self, key: Hashable) -> bool:
        """True while calls of ``key`` are queued or running."""
        with self._cond:
            return key in self._queues

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._ready:
                    self._idle += 1
                    woke = self._cond.wait(IDLE_THREAD_S)
                    self._idle -= 1
                    if not woke and not self._ready:
                        self._threads -= 1
                        return
                key = self._ready.popleft()
            self._drain(key)

    def _drain(self, key: Hashable) -> None:
        while True:
            with self._cond:
                queue = self._queues[key]
                if not queue:
                    del self._queues[key]
                    return
                fn = queue.popleft()
            self._local.key = key
            try:
                fn()
            except BaseException:  # a bug in a handler: say so, and keep the lane (and the run) going
                report_handler_error(f"{self.name}, {key}")
            finally:
                self._local.key = None


def report_handler_error(where: str) -> None:
    """A handler raised: print why on stderr (a notebook shows it), never let it stop the others."""
    print(f"kjupyter: an event handler failed ({where}); the run goes on:", file=sys.stderr)
    traceback.print_exc()


_EVENT_LANES = Lanes("kjupyter-events")


def event_lanes() -> Lanes:
    """The process-wide lanes that deliver run events to their subscribers."""
    return _EVENT_LANES


class EventHub:
    """One run's events: :meth:`publish` from anywhere, :meth:`subscribe` with replay of the past."""

    def __init__(self, run_id: str, *, lanes: Lanes | None = None, log_lines: int = REPLAY_LOG_LINES) -> None:
        self.run_id = run_id
        self.lanes = lanes or _EVENT_LANES
        self.key = ("hub", run_id, id(self))
        self._lock = threading.Lock()
        self._seq = 0
        self._events: list[tuple[int, Event]] = []
        self._logs: collections.deque[tuple[int, Event]] = collections.deque(maxlen=log_lines)
        self._progress: tuple[int, Event] | None = None
        self._dropped = 0
        self._subscribers: list[EventSink] = []

    def publish(self, event: Event) -> None:
        with self._lock:
            self._seq += 1
            entry = (self._seq, event)
            if isinstance(event, LogLine):
                if len(self._logs) == self._logs.maxlen:
                    self._dropped += 1
                self._logs.append(entry)
            elif isinstance(event, Progress):
                self._progress = entry
            else:
                self._events.append(entry)
            self.lanes.submit(self.key, lambda: self._deliver(event))

    def subscribe(self, sink: EventSink, *, replay: bool = True) -> None:
        """Deliver every later event to ``sink`` (and, with ``replay``, the kept past ones first)."""
        with self._lock:
            past = self._past() if replay else []
            dropped = self._dropped if replay else 0
            self.lanes.submit(self.key, lambda: self._join(sink, past, dropped))

    def unsubscribe(self, sink: EventSink) -> None:
        def remove() -> None:
            if sink in self._subscribers:
                self._subscribers.remove(sink)

        self.lanes.submit(self.key, remove)

    def after_delivery(self, fn: Callable[[], Any]) -> None:
        """Call ``fn`` on the run's lane once every event published so far was delivered."""
        self.lanes.submit(self.key, fn)

    @property
    def delivering(self) -> bool:
        return self.lanes.busy(self.key)

    @property
    def on_its_lane(self) -> bool:
        """True when called by one of this hub's own subscribers."""
        return self.lanes.running(self.key)

    def _past(self) -> list[Event]:
        entries = [*self._events, *self._logs, *([self._progress] if self._progress else [])]
        return [event for _, event in sorted(entries, key=lambda e: e[0])]

    def _join(self, sink: EventSink, past: list[Event], dropped: int) -> None:
        if dropped:
            sink(LogLine(self.run_id, f"[kjupyter] {dropped} earlier log lines are not shown here; "
                         f"`kjupyter logs {self.run_id}` has them all"))  # fmt: skip
        for event in past:
            sink(event)
        self._subscribers.append(sink)

    def _deliver(self, event: Event) -> None:
        for sink in list(self._subscribers):
            try:
                sink(event)
            except Exception:
                report_handler_error(f"run {self.run_id}, {type(event).__name__}")


class Timer:
    """A call scheduled by :class:`Timers`; ``cancel()`` before it is due and it never runs."""

    __slots__ = ("cancelled", "due", "fn", "key")

    def __init__(self, due: float, key: Hashable, fn: Callable[[], Any]) -> None:
        self.due, self.key, self.fn = due, key, fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: Timer) -> bool:
        return self.due < other.due


class Timers:
    """Delayed calls on one thread, each run on ``lanes`` under its key (never on the timer thread).

    A run with five timers costs no thread at all; a cancelled timer costs a heap entry until due.
    """

    def __init__(self, lanes: Lanes, name: str = "kjupyter-timers") -> None:
        self.lanes = lanes
        self.name = name
        self._cond = threading.Condition()
        self._heap: list[Timer] = []
        self._thread: threading.Thread | None = None

    def after(self, delay: float, key: Hashable, fn: Callable[[], Any]) -> Timer:
        timer = Timer(time.monotonic() + max(0.0, delay), key, fn)
        with self._cond:
            heapq.heappush(self._heap, timer)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True, name=self.name)
                self._thread.start()
            self._cond.notify()
        return timer

    def pending(self) -> int:
        with self._cond:
            return sum(1 for t in self._heap if not t.cancelled)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0].cancelled:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        if not self._cond.wait(IDLE_THREAD_S) and not self._heap:
                            self._thread = None
                            return
                        continue
                    wait = self._heap[0].due - time.monotonic()
                    if wait <= 0:
                        timer = heapq.heappop(self._heap)
                        break
                    self._cond.wait(wait)
            if not timer.cancelled:
                self.lanes.submit(timer.key, timer.fn)
