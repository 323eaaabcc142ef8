"""What every backend keeps in a run's store folder: ``run.json`` and the task outcomes.

``run.json`` is what ``kjupyter jobs``, the JupyterLab sidebar and ``kjupyter gc``
read (on Kubernetes too, for the runs whose Job is gone: :func:`record_info`): owner,
created, kind, task count, phase, counts, and when and why the run ended.
:class:`RunRecord` writes it from the run's own events (it wraps the sink a
backend is given), so both backends record the same thing the same way:

- once at submit (``created``, phase ``Pending``);
- once when the run starts running;
- the task counts while it runs, throttled to at most one write per
  :data:`PROGRESS_INTERVAL_S` (a map of 100,000 tasks costs a handful of
  writes per minute, never one per task), plus a trailing write so the last
  counts before a quiet spell are not lost;
- once at the end (phase, ``finished``, reason, final counts), before the
  run's ``RunFinished`` reaches anyone, so a finished future implies a
  finished record;
- ``usage``, the run's resource-seconds (:mod:`kjupyter.usage`, from its ``Usage`` event), and
  ``usage_source``, how they were measured, with the final write;
- ``failed_items``: the indexes of the first :data:`MAX_FAILED_ITEMS` failed tasks, riding on
  the counts' writes (the lab reads their exception lines from the error envelopes on demand);
- ``diagnosis``, the one sentence ``kjupyter jobs`` shows: the run's fatal
  (first) :class:`~kjupyter.run_events.Diagnosis`, else (a failed run) how it ended,
  else its latest warning. A fatal one is written at once; a warning rides
  on the next write, paced like the counts (retries of a large map are not a
  write each).

Every write goes through :meth:`kjupyter.store.RunDir.update_meta`, which is atomic.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from kjupyter import store as st
from kjupyter.backends.base import RunInfo, SubmitRequest
from kjupyter.errors import BackendError
from kjupyter.failure_text import REDUNDANT_REASONS
from kjupyter.run_events import (
    Diagnosis,
    Event,
    EventSink,
    Phase,
    PhaseChanged,
    Progress,
    RunFinished,
    TaskFinished,
    Usage,
)

PROGRESS_INTERVAL_S = 1.0  # at most one counts write per run and interval
MAX_FAILED_ITEMS = 50  # failed task indexes kept in run.json (the first ones), for the lab's list of failures
Schedule = Callable[[float, Callable[[], None]], Any]


def run_meta(request: SubmitRequest, *, cluster: str, backend: str, **extra: Any) -> dict[str, Any]:
    """The ``run.json`` of a run at submit time."""
    meta = {
        "run_id": request.run_id, "kind": request.kind, "count": request.count, "user": request.user,
        "session": request.session, "function": request.function, "cluster": cluster, "backend": backend,
        "created": time.time(), "phase": Phase.PENDING.value, "host": socket.gethostname(),
        "owner_pid": os.getpid(), "spec": request.spec.summary(),
        "counts": {"succeeded": 0, "failed": 0, "running": 0, "pending": request.count},
    }  # fmt: skip
    if request.moves:
        meta["moves"] = [dict(m) for m in request.moves]
    meta.update(extra)
    return meta


def moves_text(meta: dict[str, Any]) -> str:
    """The moves of a GPU fallback run, as ``kjupyter jobs`` and the lab show them (before its diagnosis)."""
    return " ".join(str(m.get("sentence", "")) for m in meta.get("moves") or () if isinstance(m, dict)).strip()


def record_info(meta: dict[str, Any], cluster: str, **changes: Any) -> RunInfo:
    """A run as ``kjupyter jobs`` and the lab show it, from its ``run.json`` alone (``changes`` override fields)."""
    phase = Phase(str(changes.pop("phase", meta.get("phase", "Pending"))))
    counts = meta.get("counts") or {}
    assert isinstance(counts, dict)
    return RunInfo(**{
        "run_id": str(meta["run_id"]), "cluster": str(meta.get("cluster", cluster)), "phase": phase,
        "kind": str(meta.get("kind", "call")), "user": str(meta.get("user", "")),
        "function": str(meta.get("function", "")), "created": float(meta.get("created", 0)),
        "finished": meta.get("finished"), "total": int(meta.get("count", 1)),
        "succeeded": int(counts.get("succeeded", 0)), "failed": int(counts.get("failed", 0)),
        "cancelled": int(counts.get("cancelled", 0)),
        "running": int(counts.get("running", 0)) if not phase.finished else 0,
        "diagnosis": " ".join(filter(None, (moves_text(meta), str(meta.get("diagnosis", ""))))),  # (RunRecord's)
        # failed_items: for the lab; moved: the run went on on another cluster (a GPU fallback list)
        "extra": {**failed_items(meta), **({"moved": True} if meta.get("reason") == "Moved" else {})},
        "warm": warm_note(meta.get("warm")),
        "usage": {str(k): float(v) for k, v in (meta.get("usage") or {}).items()},
        **changes,
    })  # fmt: skip


def warm_note(warm: Any) -> str:
    """How ``kjupyter jobs`` and the lab say a run went to a warm worker (``run.json``'s ``warm``)."""
    if not isinstance(warm, dict) or not warm.get("worker"):
        return ""
    waited = warm.get("waited_s")
    return f"warm worker {warm['worker']}" + (
        f", started {float(waited):.2f}s after submit" if waited is not None else ""
    )


def failed_items(meta: dict[str, Any]) -> dict[str, Any]:
    """``{"failed_items": [...]}``: the indexes of the failed tasks a ``run.json`` lists (RunInfo.extra)."""
    items = meta.get("failed_items") or []
    return {"failed_items": [int(i) for i in items if isinstance(i, int)]} if isinstance(items, list) else {}


@contextlib.contextmanager
def open_result(run_dir: st.RunDir | None, run_id: str, index: int) -> Iterator[IO[bytes]]:
    """Task ``index``'s result or error envelope in the store; BackendError if it left none."""
    if run_dir is None or not run_dir.exists(st.result_name(index)):
        raise BackendError(f"run {run_id} task {index} left no result (it was killed or cancelled before it finished)")
    with run_dir.open_read(st.result_name(index)) as f:
        yield f


def _timer(delay: float, fn: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()
    return timer


class RunRecord:
    """Keeps one run's ``run.json`` up to date from the run's events (see the module docstring)."""

    def __init__(self, run_dir: st.RunDir, *, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, schedule: Schedule = _timer) -> None:  # fmt: skip
        self.run_dir = run_dir
        self.interval = PROGRESS_INTERVAL_S if interval is None else interval
        self.clock = clock
        self.schedule = schedule
        self.lock = threading.Lock()
        self.last = clock()
        self.counts: dict[str, int] = {}
        self.dirty = False
        self.flush_due = False  # a trailing write is scheduled
        self.flush_timer: Any = None
        self.started = False
        self.closed = False
        self.tally = {"succeeded": 0, "failed": 0, "cancelled": 0}
        self.progress_writes = 0
        self.diagnosis = ""  # what run.json says went wrong (see the module docstring)
        self.fatal = False
        self.usage: Usage | None = None
        self.failed_items: list[int] = []  # the first MAX_FAILED_ITEMS failed tasks, written with the counts

    def create(self, meta: dict[str, Any]) -> None:
        with self.lock:
            self.counts = dict(meta.get("counts") or {})
            self.run_dir.write_json(st.RUN_JSON, meta)
            self.last = self.clock()

    def wrap(self, sink: EventSink) -> EventSink:
        """A sink that records ``event`` and then passes it on to ``sink``."""

        def recording(event: Event) -> None:
            with contextlib.suppress(Exception):  # a store hiccup must not break the run's events
                self.observe(event)
            sink(event)

        return recording

    def observe(self, event: Event) -> None:
        if isinstance(event, PhaseChanged) and event.index is None and event.phase is Phase.RUNNING:
            with self.lock:
                if self.started or self.closed:
                    return
                self.started = True
                self._write(phase=Phase.RUNNING.value)
        elif isinstance(event, Progress):
            counts = {"succeeded": event.succeeded, "failed": event.failed, "running": event.running,
                      "pending": event.pending}  # fmt: skip
            self._progress(counts)
        elif isinstance(event, TaskFinished):
            key = {Phase.SUCCEEDED: "succeeded", Phase.CANCELLED: "cancelled"}.get(event.phase, "failed")
            with self.lock:
                self.tally[key] += 1
                if key == "failed" and len(self.failed_items) < MAX_FAILED_ITEMS:
                    self.failed_items.append(event.index)
        elif isinstance(event, Diagnosis):
            self._diagnosis(event)
        elif isinstance(event, Usage):
            with self.lock:
                self.usage = event
        elif isinstance(event, RunFinished):
            self.finish(event.phase, event.reason, event.message)

    def note(self, **changes: Any) -> None:
        """Record more of the run (say, the warm worker it went to), in turn with the other writes."""
        with self.lock:
            if not self.closed:
                self._write(**changes)

    def finish(self, phase: Phase, reason: str = "", message: str = "") -> None:
        """The final write (also used when a run could not even be started)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            timer, self.flush_timer = self.flush_timer, None
            if timer is not None and hasattr(timer, "cancel"):
                timer.cancel()  # the final write supersedes a trailing one (and no timer outlives the run)
            self.counts = {**self.tally, "running": 0, "pending": 0}
            if phase is Phase.FAILED and not self.fatal and message:
                self.diagnosis = message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
            used = {"usage": self.usage.as_dict, "usage_source": self.usage.source} if self.usage else {}
            self._write(phase=phase.value, finished=time.time(), reason=reason, **used)

    def _diagnosis(self, d: Diagnosis) -> None:
        if d.fatal and d.reason in REDUNDANT_REASONS:
            return  # "the Job failed" says nothing: the run's end message names the cause (or the failed items)
        with self.lock:
            if self.closed or self.fatal or d.sentence == self.diagnosis:  # the first fatal one is the cause
                return
            self.diagnosis, self.fatal = d.sentence, d.fatal
            if d.fatal:
                self._write()
            else:
                self._soon()

    def _progress(self, counts: dict[str, int]) -> None:
        with self.lock:
            if self.closed or counts == self.counts:
                return
            self.counts = counts
            self._soon()

    def _soon(self) -> None:
        """Write now if the last write is one interval old, else once it is (the caller holds the lock)."""
        self.dirty = True
        wait = self.last + self.interval - self.clock()
        if wait <= 0:
            self.progress_writes += 1
            self._write()
        elif not self.flush_due:
            self.flush_due = True
            self.flush_timer = self.schedule(wait, self._flush)

    def _flush(self) -> None:
        with self.lock:
            self.flush_due = False
            if self.closed or not self.dirty:
                return
            wait = self.last + self.interval - self.clock()
            if wait > 0:  # another write happened meanwhile: keep the pace
                self.flush_due = True
                self.flush_timer = self.schedule(wait, self._flush)
                return
            self.progress_writes += 1
            self._write()

    def _write(self, **changes: Any) -> None:
        """One atomic update of run.json (the caller holds the lock, so writes never reorder)."""
        self.dirty = False
        self.last = self.clock()
        if self.diagnosis:
            changes["diagnosis"] = self.diagnosis
        if self.failed_items:
            changes["failed_items"] = sorted(self.failed_items)
        self.run_dir.update_meta(counts=dict(self.counts), **changes)
