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

from kjupyter import diagnose
from kjupyter import manifest as mf
from kjupyter.backends.k8s_client import ApiFailure, Kube
from kjupyter.backends.k8s_logs import Outcomes, PodLog
from kjupyter.events import (
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
STARTING = ("", "ContainerCreating", "PodInitializing")  # waiting reasons of a pod that is merely starting

# Annotations a kjupyter client puts on a Job just before it deletes it, so every other client watching the
# run (another kernel, the CLI's `logs -f`, the JupyterLab sidebar) reports why it ended.
ANNOTATION_CANCELLED_BY = "kjupyter.io/cancelled-by"  # the user who cancelled it
ANNOTATION_STOPPED = "kjupyter.io/stopped"  # "<reason>: <sentence>" of a run kjupyter ended as failed
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
                 on_end: Callable[[str], None]) -> None:  # fmt: skip
        self.kube = kube
        self.namespace = namespace
        self.run_id = run_id
        self.kind = kind
        self.count = count
        self.retries = retries
        self.sinks: list[EventSink] = [sink]
        self.history: list[Event] = []
        self.slots = slots
        self.on_end = on_end
        self.outcomes = Outcomes()
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

    # --- events out -----------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        with self.lock:
            self.history.append(event)
            sinks = list(self.sinks)
        for sink in sinks:
            with contextlib.suppress(Exception):
                sink(event)

    def add_sink(self, sink: EventSink) -> None:
        with self.lock:
            past = list(self.history)
            self.sinks.append(sink)
        for event in past:
            sink(event)

    def remove_sink(self, sink: EventSink) -> None:
        with self.lock, contextlib.suppress(ValueError):
            self.sinks.remove(sink)

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
                state = self.pods[uid] = _Pod(meta.get("name", ""), diagnose.pod_index(pod))
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
            if phase == "Pending" and state.slow_timer is None and not _container_ran(pod):
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
        ended = _container_ended(pod)
        settle = False
        with self.lock:
            if ended and not state.ended:
                state.ended = settle = True
                if state.log is not None:  # (before its reader starts: it then reads once, not follows)
                    state.log.end(trust_stream=_ended_cleanly(pod))
            if state.log is not None and not state.log_started and (ended or _container_ran(pod)):
                # Its log is read from the moment the container ran (never while it is being created: that
                # would be a request answered "waiting to start" and retried).
                state.log_started = True
                if _container_ran(pod):
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
            if _trouble(pod):
                key = (state.name, _problem_key(pod))
                with self.lock:
                    new = key not in self.events_listed
                    self.events_listed.add(key)
                if new:  # one LIST per new problem, triggered by the watch
                    events = self._events(state.name)
        d = diagnose.diagnose_pod(self.run_id, pod, events, count=self.count, log_tail=list(self.tails[state.index]))
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
        if d.fatal and not _container_ended(pod):  # it will never start: stop the run now
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
                code, reason, message = _exit(pod)
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
            mark = _mark(job) or self.marked
            if kind == "DELETED":
                if self.stopping is None:
                    deleted_outside = mark is None
                    self.stopping = mark or (Phase.FAILED, "JobDeleted", DELETED_OUTSIDE)
                self.terminal = self.stopping
            else:
                self.job = job
                self.marked = mark  # the Job is about to be deleted by a kjupyter client: say why when it is
                self.terminal = self.terminal or _job_terminal(job)
        if deleted_outside:
            self.emit(Diagnosis(self.run_id, "JobDeleted", f"The run failed: {DELETED_OUTSIDE}.",
                                "`kjupyter cancel RUN` or the Cancel button cancel a run cleanly.", fatal=True))  # fmt: skip
        if kind != "DELETED" and self.terminal and self.terminal[0] is Phase.FAILED:
            d = diagnose.diagnose_job(self.run_id, job)
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
            completed = _indexes((self.job or {}).get("status", {}).get("completedIndexes"))
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
        except ApiFailure as exc:
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
            d = diagnose.diagnose_pod(self.run_id, p.last, events, count=self.count)
            if d is not None:
                self.last_diagnosis = d
        d = diagnose.pending_timeout(self.run_id, self.pending_timeout or 0, self.last_diagnosis)
        self.emit(d)
        with contextlib.suppress(Exception):
            self.stop(Phase.FAILED, d.reason, d.sentence)


def delete_job(kube: Kube, namespace: str, name: str, uid: str | None = None) -> None:
    """Delete the Job with its pods (``uid``: only if it is still that Job, else 409)."""
    body = {"preconditions": {"uid": uid}} if uid else None
    kube.call(f"delete Job {name}", kube.batch.delete_namespaced_job, name, namespace, body=body,
              propagation_policy="Background", grace_period_seconds=0)  # fmt: skip


def stop_mark(phase: Phase, reason: str, message: str, user: str | None = None) -> dict[str, str]:
    """The annotations that tell other clients why kjupyter deletes a Job (see ``_mark``)."""
    from kjupyter import names

    if phase is Phase.CANCELLED:
        return {ANNOTATION_CANCELLED_BY: user or names.current_user()}
    return {ANNOTATION_STOPPED: f"{reason}: {message}"}


def stop_job(kube: Kube, namespace: str, name: str, mark: dict[str, str], *,
             unless_finished: bool = False) -> bool:  # fmt: skip
    """Mark the Job with why it is stopped, then delete that same Job with its pods.

    Two writes: a JSON patch of its annotations (which also returns the Job) and a delete with its
    uid as precondition. With ``unless_finished`` a Job that already finished is left alone (False).
    A Role without ``patch`` on jobs still deletes it, unmarked (watchers then report a deletion from
    outside kjupyter). 404 when there is no such Job, 409 if it was replaced meanwhile.
    """
    ops = [{"op": "add", "path": "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1"), "value": value}
           for key, value in mark.items()]  # fmt: skip
    job: dict[str, Any] | None
    try:
        job = kube.call(f"mark Job {name} as stopped", kube.batch.patch_namespaced_job, name, namespace, ops)
    except ApiFailure as exc:
        if exc.status != 403:
            raise
        job = kube.call(f"read Job {name}", kube.batch.read_namespaced_job, name, namespace)
    if unless_finished and job is not None and _job_terminal(job) is not None:
        return False
    delete_job(kube, namespace, name, uid=(job or {}).get("metadata", {}).get("uid"))
    return True


def _mark(job: dict[str, Any]) -> tuple[Phase, str, str] | None:
    """How a kjupyter client that deleted the Job said the run ended (None: no kjupyter client did)."""
    annotations = job.get("metadata", {}).get("annotations") or {}
    who = annotations.get(ANNOTATION_CANCELLED_BY)
    if who is not None:
        return Phase.CANCELLED, "Cancelled", f"the run was cancelled by {who}" if who else "the run was cancelled"
    stopped = annotations.get(ANNOTATION_STOPPED)
    if stopped:
        reason, _, message = str(stopped).partition(": ")
        return Phase.FAILED, reason, message
    return None


def _container_ended(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == mf.CONTAINER and "terminated" in (cs.get("state") or {}):
            return True
    return False


def _container_ran(pod: dict[str, Any]) -> bool:
    """The task container is running or has run: it has a log."""
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        if cs.get("name") == mf.CONTAINER:
            state, last = cs.get("state") or {}, cs.get("lastState") or {}
            return "running" in state or "terminated" in state or "terminated" in last
    return False


def _ended_cleanly(pod: dict[str, Any]) -> bool:
    """The container terminated by itself (not evicted, not deleted): its followed log ended with it."""
    status, meta = pod.get("status", {}), pod.get("metadata", {})
    if meta.get("deletionTimestamp") or status.get("reason") == "Evicted":
        return False
    if any(c.get("type") == "DisruptionTarget" and c.get("status") == "True" for c in status.get("conditions") or []):
        return False
    return any(cs.get("name") == mf.CONTAINER and "terminated" in (cs.get("state") or {})
               for cs in status.get("containerStatuses") or [])  # fmt: skip


def _trouble(pod: dict[str, Any]) -> bool:
    """A Pending pod shows a sign that its events may explain (a pod being created shows none)."""
    status = pod.get("status", {})
    if status.get("phase") != "Pending":
        return False  # (events only ever explain why a pod does not start)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return True
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        state = cs.get("state") or {}
        if "waiting" in state and str((state["waiting"] or {}).get("reason", "")) not in STARTING:
            return True
        if "terminated" in state and (state["terminated"] or {}).get("exitCode") not in (0, None):
            return True
    return False


def _problem_key(pod: dict[str, Any]) -> str:
    status = pod.get("status", {})
    parts = [str(c.get("reason")) for c in status.get("conditions") or [] if c.get("status") == "False"]
    for cs in status.get("containerStatuses") or []:
        parts.append(str((cs.get("state") or {}).get("waiting", {}).get("reason")))
    return ",".join(parts)


def _exit(pod: dict[str, Any]) -> tuple[int | None, str, str]:
    status = pod.get("status", {})
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == mf.CONTAINER:
            term = (cs.get("state") or {}).get("terminated")
            if term:
                return term.get("exitCode"), str(term.get("reason", "")), str(term.get("message", ""))[-500:]
    return None, str(status.get("reason", "") or "PodDeleted"), str(status.get("message", ""))


def _job_terminal(job: dict[str, Any]) -> tuple[Phase, str, str] | None:
    for cond in job.get("status", {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return Phase.SUCCEEDED, "Completed", "every task succeeded"
        if cond.get("type") == "Failed":
            reason = str(cond.get("reason", "Failed"))
            message = str(cond.get("message", ""))
            if reason == "DeadlineExceeded":
                deadline = job.get("spec", {}).get("activeDeadlineSeconds")
                message = f"the run exceeded its timeout of {deadline}s"
            return Phase.FAILED, reason, message
    return None


def _indexes(text: Any) -> set[int]:
    out: set[int] = set()
    for part in str(text or "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        with contextlib.suppress(ValueError):
            out.update(range(int(lo), int(hi or lo) + 1))
    return out
