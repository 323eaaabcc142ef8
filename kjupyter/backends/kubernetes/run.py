"""One run on Kubernetes: turns pod and job watch events into kjupyter events.

Guarantees (the Backend contract): each task ends with one ``TaskFinished``
after its retries and after its log was read to the end; the run ends with
exactly one ``RunFinished``, after every ``TaskFinished``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kjupyter.backends.kubernetes import diagnosis
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes.client import Kube
from kjupyter.backends.kubernetes.logs import Outcomes, PodLog
from kjupyter.backends.kubernetes.state import JobView, PodView
from kjupyter.backends.kubernetes.stopping import stop_job, stop_mark
from kjupyter.errors import ApiError
from kjupyter.event_hub import EventHub
from kjupyter.run_events import (
    Diagnosis,
    Event,
    EventSink,
    LogLine,
    Phase,
    PhaseChanged,
    Progress,
    RunFinished,
    TaskFinished,
)

FINISH_GRACE_S = 5.0  # after the Job ended, how long pod events may lag before tasks are settled from the Job
LOG_WAIT_S = 30.0
SLOW_PENDING_S = 10.0  # a pod still Pending this long after it was first seen gets its events looked at once
MAX_SLOW_LOOKUPS = 5  # ... for at most this many pods of a run (a big map's pods are slow for one reason)
DELETED_OUTSIDE = (
    "the Job was deleted outside kjupyter (by kubectl, a controller or a person), so the run cannot finish"
)


@dataclass
class _Pod:
    name: str
    index: int
    phase: str = ""
    log: PodLog | None = None
    ended: bool = False
    settled: bool = False
    log_started: bool = False
    slow_timer: threading.Timer | None = None
    last: dict[str, Any] = field(default_factory=dict)


class KubeRun:
    def __init__(self, kube: Kube, namespace: str, run_id: str, *, kind: str, count: int, retries: int,
                 sink: EventSink, slots: threading.Semaphore, pending_timeout: float | None,
                 on_end: Callable[[str], None], run_key: bytes | None = None) -> None:  # fmt: skip
        self.kube = kube
        self.namespace = namespace
        self.run_id = run_id
        self.kind = kind
        self.count = count
        self.retries = retries
        self.hub = EventHub(run_id)
        self.hub.subscribe(sink)
        self.slots = slots
        self.on_end = on_end
        self.outcomes = Outcomes(run_key)  # inline outcomes: only frames signed with the run's key count
        self.lock = threading.RLock()
        self.pods: dict[str, _Pod] = {}
        self.failures: dict[int, set[str]] = collections.defaultdict(set)
        self.done: dict[int, Phase] = {}
        self.tails: dict[int, collections.deque[str]] = collections.defaultdict(lambda: collections.deque(maxlen=20))
        self.job: dict[str, Any] | None = None
        self.terminal: tuple[Phase, str, str] | None = None
        self.stopping: tuple[Phase, str, str] | None = None  # cancelled / pending timeout / fatal
        self.finished = False
        self.running = False
        self.diagnosed: set[tuple[str, int | None]] = set()
        self.last_diagnosis: Diagnosis | None = None
        self.grace: threading.Timer | None = None
        self.pending_timer: threading.Timer | None = None
        self.pending_timeout = pending_timeout
        self.events_listed: set[tuple[str, str]] = set()
        self.slow_lookups = 0
        self.marked: tuple[Phase, str, str] | None = None  # another client marked the Job before deleting it
        # This process creates the run's payload Secret right after its Job: a pod that looked for it a
        # moment too early (FailedMount) starts once it exists, so that is no news for the user.
        self.own_payload_secret = False

    # --- events out (queued: subscribers run on the run's lane, never here) -------------------
    def emit(self, event: Event) -> None:
        self.hub.publish(event)

    def add_sink(self, sink: EventSink) -> None:
        self.hub.subscribe(sink)

    def remove_sink(self, sink: EventSink) -> None:
        self.hub.unsubscribe(sink)

    def start(self) -> None:
        self.emit(PhaseChanged(self.run_id, Phase.PENDING, message=f"{self.count} task(s) on {self.namespace}"))
        self._progress()
        if self.pending_timeout:
            self.pending_timer = threading.Timer(self.pending_timeout, self._pending_expired)
            self.pending_timer.daemon = True
            self.pending_timer.start()

    def abandon(self) -> None:
        """The Job could not be created: no events, no timers."""
        with self.lock:
            self.finished = True
        if self.pending_timer is not None:
            self.pending_timer.cancel()

    def _progress(self) -> None:
        if self.kind != "map":
            return
        with self.lock:
            ok = sum(1 for p in self.done.values() if p is Phase.SUCCEEDED)
            bad = len(self.done) - ok
            running = len({p.index for p in self.pods.values() if p.phase == "Running" and p.index not in self.done})
        self.emit(Progress(self.run_id, self.count, ok, bad, running, max(0, self.count - ok - bad - running)))

    # --- watch events in --------------------------------------------------------------------
    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata", {})
        uid = meta.get("uid", "")
        with self.lock:
            if self.finished:
                return
            state = self.pods.get(uid)
            if state is None:
                if kind == "DELETED":
                    return
                state = self.pods[uid] = _Pod(meta.get("name", ""), PodView(pod).index)
                index = state.index
                state.log = PodLog(self.kube, self.namespace, state.name, mf.CONTAINER,
                                   functools.partial(self._line, index), self.outcomes)  # fmt: skip
            if kind == "DELETED":
                self._stop_slow_timer(state)
                if state.log is not None and not state.ended:
                    state.log.stop()
                if state.log is not None and not state.log_started:
                    state.log.finished.set()  # it never ran: there is no log to read
                    state.log_started = True
                if not state.ended:
                    state.ended = True
                    threading.Thread(target=self._settle, args=(state, pod, True), daemon=True).start()
                return
            state.last = pod
            phase = str(pod.get("status", {}).get("phase", ""))
            node = pod.get("spec", {}).get("nodeName")
            changed = phase != state.phase
            state.phase = phase
            first_running = phase == "Running" and not self.running
            if first_running:
                self.running = True
            if phase == "Pending" and state.slow_timer is None and not PodView(pod).ran:
                state.slow_timer = threading.Timer(SLOW_PENDING_S, self._slow_pending, args=(state,))
                state.slow_timer.daemon = True
                state.slow_timer.start()
            elif phase != "Pending":
                self._stop_slow_timer(state)
        if changed and phase in ("Pending", "Running"):
            if first_running:
                if self.pending_timer is not None:
                    self.pending_timer.cancel()
                self.emit(PhaseChanged(self.run_id, Phase.RUNNING, pod=state.name, node=node))
            self.emit(PhaseChanged(self.run_id, Phase(phase), index=state.index, pod=state.name, node=node))
            self._progress()
        self._diagnose(state, pod)
        ended = PodView(pod).ended
        settle = False
        with self.lock:
            if ended and not state.ended:
                state.ended = settle = True
                if state.log is not None:  # (before its reader starts: it then reads once, not follows)
                    state.log.end(trust_stream=PodView(pod).ended_cleanly)
            if state.log is not None and not state.log_started and (ended or PodView(pod).ran):
                # Its log is read from the moment the container ran (never while it is being created: that
                # would be a request answered "waiting to start" and retried).
                state.log_started = True
                if PodView(pod).ran:
                    threading.Thread(target=state.log.run, args=(self.slots,), daemon=True,
                                     name=f"kjupyter-log-{state.name}").start()  # fmt: skip
                else:
                    state.log.finished.set()  # it ended without ever running
        if settle:
            threading.Thread(target=self._settle, args=(state, pod, False), daemon=True).start()

    def _stop_slow_timer(self, state: _Pod) -> None:
        if state.slow_timer is not None:  # (cancelled, not cleared: a pod gets one slow look at most)
            state.slow_timer.cancel()

    def _line(self, index: int, text: str) -> None:
        self.tails[index].append(text)
        self.emit(LogLine(self.run_id, text, index=index))

    def _diagnose(self, state: _Pod, pod: dict[str, Any], events: list[dict[str, Any]] | None = None) -> None:
        """Diagnose from the pod itself; its events are read only when it shows a sign of trouble.

        A pod being created (Pending, Ready=False, ContainerCreating) is no sign: events are listed
        when it cannot be scheduled, waits for another reason (image pull, missing secret), or an init
        container failed, once per new problem (see ``_trouble``), and by ``_slow_pending`` when it
        stays Pending for ``SLOW_PENDING_S``.
        """
        if events is None:
            events = []
            if PodView(pod).trouble:
                key = (state.name, PodView(pod).problem_key)
                with self.lock:
                    new = key not in self.events_listed
                    self.events_listed.add(key)
                if new:  # one LIST per new problem, triggered by the watch
                    events = self._events(state.name)
        d = diagnosis.diagnose_pod(self.run_id, pod, events, count=self.count, log_tail=list(self.tails[state.index]))
        if d is None:
            return
        if d.reason == "FailedMount" and self.own_payload_secret and f'"{mf.PAYLOAD_VOLUME}"' in d.sentence:
            return
        key2 = (d.reason, d.index)
        with self.lock:
            if key2 in self.diagnosed:
                return
            self.diagnosed.add(key2)
            self.last_diagnosis = d
        self.emit(d)
        if d.fatal and not PodView(pod).ended:  # it will never start: stop the run now
            self.stop(Phase.FAILED, d.reason, d.sentence)

    def _slow_pending(self, state: _Pod) -> None:
        """A pod still Pending after ``SLOW_PENDING_S``: its events may say why (FailedMount, scale-up)."""
        with self.lock:
            if self.finished or state.ended or state.phase != "Pending" or self.slow_lookups >= MAX_SLOW_LOOKUPS:
                return
            self.slow_lookups += 1
            pod = state.last
        if pod:
            self._diagnose(state, pod, self._events(state.name))

    def _events(self, pod_name: str) -> list[dict[str, Any]]:
        try:
            data = self.kube.call(
                "list events", self.kube.core.list_namespaced_event, self.namespace,
                field_selector=f"involvedObject.name={pod_name}",
            )  # fmt: skip
        except Exception:
            return []
        return list(data.get("items") or [])

    def _settle(self, state: _Pod, pod: dict[str, Any], deleted: bool) -> None:
        if state.log is not None:
            state.log.finished.wait(LOG_WAIT_S if not deleted else 2.0)
        with self.lock:
            if state.settled or self.finished:
                return
            state.settled = True
            index = state.index
            if index in self.done:
                pass
            else:
                code, reason, message = PodView(pod).exit()
                if pod.get("status", {}).get("phase") == "Succeeded" or (code == 0 and not deleted):
                    self._task(index, Phase.SUCCEEDED, 0)
                elif self.stopping is None and self.marked is None:  # (a pod of a stopped run is no failure)
                    self.failures[index].add(pod.get("metadata", {}).get("uid", state.name))
                    if len(self.failures[index]) > self.retries:
                        self._task(index, Phase.FAILED, code, reason, message)
                    else:
                        self.emit(Diagnosis(self.run_id, "Retrying", f"Task {index} failed ({reason or code}); "
                                            f"retry {len(self.failures[index])} of {self.retries}.", index=index))  # fmt: skip
        self._progress()
        self.maybe_finish()

    def _task(self, index: int, phase: Phase, code: int | None, reason: str = "", message: str = "") -> None:
        self.done[index] = phase
        self.emit(TaskFinished(self.run_id, index, phase, code, reason, message))

    def on_job(self, kind: str, job: dict[str, Any]) -> None:
        deleted_outside = False
        with self.lock:
            if self.finished:
                return
            mark = JobView(job).mark or self.marked
            if kind == "DELETED":
                if self.stopping is None:
                    deleted_outside = mark is None
                    self.stopping = mark or (Phase.FAILED, "JobDeleted", DELETED_OUTSIDE)
                self.terminal = self.stopping
            else:
                self.job = job
                self.marked = mark  # the Job is about to be deleted by a kjupyter client: say why when it is
                self.terminal = self.terminal or JobView(job).terminal
        if deleted_outside:
            self.emit(Diagnosis(self.run_id, "JobDeleted", f"The run failed: {DELETED_OUTSIDE}.",
                                "`kjupyter cancel RUN` or the Cancel button cancel a run cleanly.", fatal=True))  # fmt: skip
        if kind != "DELETED" and self.terminal and self.terminal[0] is Phase.FAILED:
            d = diagnosis.diagnose_job(self.run_id, job)
            if d is not None and (d.reason, None) not in self.diagnosed:
                self.diagnosed.add((d.reason, None))
                self.emit(d)
        self.maybe_finish(force=kind == "DELETED")

    # --- ending -----------------------------------------------------------------------------
    def maybe_finish(self, force: bool = False, grace_over: bool = False) -> None:
        """End the run once the Job ended and every task settled (``force``: now, whatever is open)."""
        with self.lock:
            if self.finished or self.terminal is None:
                return
            open_tasks = [i for i in range(self.count) if i not in self.done]
            in_flight = any(p.ended and not p.settled for p in self.pods.values())
            if open_tasks and not force:
                if in_flight:
                    return  # the pod's settle calls back
                if not grace_over:
                    if self.grace is None:  # pod events may lag the Job's: give them a moment
                        self.grace = threading.Timer(FINISH_GRACE_S, self.maybe_finish, kwargs={"grace_over": True})
                        self.grace.daemon = True
                        self.grace.start()
                    return
            self.finished = True
            phase, reason, message = self.terminal
            completed = JobView(self.job or {}).completed_indexes
            for i in open_tasks:
                if i in completed:
                    self._task(i, Phase.SUCCEEDED, 0)
                else:
                    task_phase = Phase.CANCELLED if phase is Phase.CANCELLED else Phase.FAILED
                    self._task(i, task_phase, None, reason, message)
            pods = list(self.pods.values())
            for timer in (self.grace, self.pending_timer, *(p.slow_timer for p in pods)):
                if timer is not None:
                    timer.cancel()
        for p in pods:
            if p.log is not None and not p.ended:
                p.log.stop()
        self._progress()
        self.emit(RunFinished(self.run_id, phase, reason, message))
        self.on_end(self.run_id)

    def stop(self, phase: Phase, reason: str, message: str) -> bool:
        """Delete the Job with its pods; the run ends when the deletion is seen (or at once if it is gone)."""
        with self.lock:
            if self.finished or self.stopping is not None:
                return False
            self.stopping = (phase, reason, message)
        try:
            stop_job(self.kube, self.namespace, self.run_id, stop_mark(phase, reason, message))
        except ApiError as exc:
            if exc.status not in (404, 409):
                with self.lock:
                    self.stopping = None
                raise
        with self.lock:
            self.terminal = self.stopping
        for p in list(self.pods.values()):
            if p.log is not None:
                p.log.stop()
        self.maybe_finish(force=True)
        return True

    def _pending_expired(self) -> None:
        with self.lock:
            if self.running or self.finished:
                return
            pods = [p for p in self.pods.values() if p.last]
        for p in pods[:MAX_SLOW_LOOKUPS]:  # the autoscaler's verdict may only be in the events
            events = self._events(p.name)
            d = diagnosis.diagnose_pod(self.run_id, p.last, events, count=self.count)
            if d is not None:
                self.last_diagnosis = d
        d = diagnosis.pending_timeout(self.run_id, self.pending_timeout or 0, self.last_diagnosis)
        self.emit(d)
        with contextlib.suppress(Exception):
            self.stop(Phase.FAILED, d.reason, d.sentence)
