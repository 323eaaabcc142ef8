"""One run on Kubernetes: turns pod and job watch events into kjupyter events.

Guarantees (the Backend contract): each task ends with one ``TaskFinished`` after its retries and after
its log was read to the end; the run ends with exactly one ``RunFinished``, after every ``TaskFinished``.

Everything here runs on the run's work lane (watch events, timers), never on a watch thread. No
verdict rests on a view that may be stale: what watches cannot say is read first (``lookups``).
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kjupyter import run_events as ev
from kjupyter.backends.kubernetes import diagnosis
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes.client import Kube
from kjupyter.backends.kubernetes.items import Items, claims_note
from kjupyter.backends.kubernetes.logs import LogAccess, Outcomes, PodLog
from kjupyter.backends.kubernetes.lookups import Lookups
from kjupyter.backends.kubernetes.state import JobView, PodView, Verdict
from kjupyter.backends.kubernetes.usage import run_usage
from kjupyter.backends.kubernetes.warm_run import WarmRun
from kjupyter.backends.kubernetes.writes import stop_run
from kjupyter.errors import ApiError, BackendError
from kjupyter.event_hub import EventHub, Timer, Timers
from kjupyter.run_events import Event, EventSink, Phase

FINISH_GRACE_S = 5.0  # after the Job ended, how long pod events may lag before the pods are read
LOG_WAIT_S = 30.0
DELETED_OUTSIDE = (
    "the Job was deleted outside kjupyter (by kubectl, a controller or a person), so the run cannot finish"
)
JOB_SUMMARIES = ("BackoffLimitExceeded", "FailedIndexes", "MaxFailedIndexesExceeded", "Failed")


@dataclass
class _Pod:
    name: str
    index: int
    phase: str = ""
    log: PodLog | None = None
    ended: bool = False
    settled: bool = False
    log_started: bool = False
    slow_timer: Timer | None = None
    last: dict[str, Any] = field(default_factory=dict)


class KubeRun:
    def __init__(self, kube: Kube, namespace: str, run_id: str, *, kind: str, count: int, retries: int,
                 sink: EventSink, slots: threading.Semaphore, pending_timeout: float | None,
                 on_end: Callable[[str], None], timers: Timers, log_access: LogAccess | None = None,
                 wait_for_capacity: bool = False, run_key: bytes | None = None, workers: int = 0,
                 claims: str = "") -> None:  # fmt: skip
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
        self.timers = timers
        self.log_access = log_access or LogAccess()
        self.outcomes = Outcomes(run_key)  # inline outcomes: only frames signed with the run's key count
        self.lock = threading.RLock()
        self.pods: dict[str, _Pod] = {}
        self.failures: dict[int, set[str]] = collections.defaultdict(set)
        self.done: dict[int, Phase] = {}
        self.succeeded = 0  # of done (kept as tasks settle: a progress count is O(1), not O(tasks))
        self.task_verdicts: dict[int, tuple[str, str]] = {}  # index -> (reason, sentence) of a failed task
        self.tails: dict[int, collections.deque[str]] = collections.defaultdict(lambda: collections.deque(maxlen=20))
        self.job: dict[str, Any] | None = None
        self.terminal: Verdict | None = None
        self.stopping: Verdict | None = None  # cancelled / pending timeout / fatal
        self.finished = False
        self.running = False
        self.diagnosed: set[tuple[str, int | None]] = set()
        self.last_diagnosis: ev.Diagnosis | None = None
        self.fatal_by_index: dict[int | None, ev.Diagnosis] = {}
        self.pending_timeout = pending_timeout
        self.wait_for_capacity = wait_for_capacity
        self.timer_handles: list[Timer] = []
        self.verified_pods = False  # the pods were read after the Job ended
        self.marked: Verdict | None = None  # another client marked the Job before deleting it
        self.logs_forbidden_said = False
        self.lookups = Lookups(self)
        # This process creates the run's Secret right after its Job: a pod that looked for it a
        # moment too early (FailedMount) starts once it exists, so that is no news for the user.
        self.own_payload_secret = False
        self.items = Items(workers, claims)  # a worker-pod map: which pod runs which item
        self.warm: WarmRun | None = None  # a run in a warm worker (kjupyter.backends.kubernetes.warm)

    # --- events out (queued: subscribers run on the run's lane, never here) -------------------
    def emit(self, event: Event) -> None:
        self.hub.publish(event)

    def add_sink(self, sink: EventSink) -> None:
        self.hub.subscribe(sink)

    def remove_sink(self, sink: EventSink) -> None:
        self.hub.unsubscribe(sink)

    def after(self, delay: float, fn: Callable[[], Any]) -> Timer:
        """Call ``fn`` on this run's work lane in ``delay`` seconds (cancelled when the run ends)."""
        timer = self.timers.after(delay, self.run_id, fn)
        with self.lock:
            self.timer_handles = [t for t in self.timer_handles if not t.cancelled] + [timer]
        return timer

    def start(self) -> None:
        message = f"{self.count} task(s) on {self.namespace}"
        if self.items.workers:
            message = f"{claims_note(self.items.workers, self.count, self.items.claims)}, on {self.namespace}"
        self.emit(ev.PhaseChanged(self.run_id, Phase.PENDING, message=message))
        self._progress()
        if self.pending_timeout:
            self.after(self.pending_timeout, self.lookups.pending_expired)
        self.lookups.watch_for_missing_pods()

    def abandon(self) -> None:
        """The Job could not be created: no events, no timers."""
        with self.lock:
            self.finished = True
        self._cancel_timers()

    def lost(self, reason: str, sentence: str) -> None:
        """The watches are refused: say so once; no verdict on the run, which may go on in the cluster."""
        with self.lock:
            if self.finished:
                return
            self.finished = True
        self._cancel_timers()
        for p in list(self.pods.values()):
            if p.log is not None:
                p.log.stop()
        self.emit(ev.Diagnosis(self.run_id, reason, sentence, fatal=True))
        self.emit(ev.RunLost(self.run_id, reason, sentence))
        self.on_end(self.run_id)

    def _progress(self) -> None:
        if self.kind != "map":
            return
        with self.lock:
            ok = self.succeeded
            bad = len(self.done) - ok
            running = len({p.index for p in self.pods.values() if p.phase == "Running" and p.index not in self.done})
            running = self.items.running() if self.items.workers else running
        self.emit(ev.Progress(self.run_id, self.count, ok, bad, running, max(0, self.count - ok - bad - running)))

    # --- watch events in --------------------------------------------------------------------
    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        view = PodView(pod)
        with self.lock:
            if self.finished:
                return
            state = self.pods.get(view.uid)
            if state is None:
                if kind == "DELETED" or (self.warm is not None and not self.warm.owns(pod)):
                    return
                state = self.pods[view.uid] = _Pod(view.name, view.index)
                emit = functools.partial(self._line, state.index)
                on_item = None
                if self.items.workers:  # a worker's lines belong to the item it is on
                    emit = functools.partial(self._worker_line, state)
                    on_item = functools.partial(self.items.on_frame, self, state)
                state.log = PodLog(self.kube, self.namespace, state.name, mf.CONTAINER, emit, self.outcomes,
                                   self.log_access, on_forbidden=self._logs_forbidden, on_item=on_item)  # fmt: skip
                if self.warm is not None:
                    self.warm.prepare_log(state.log)
            if kind == "DELETED":
                self._stop_slow_timer(state)
                if state.log is not None and not state.log_started:
                    state.log.finished.set()  # it never ran: there is no log to read
                    state.log_started = True
                if state.log is not None and not state.ended:
                    state.log.end(trust_stream=False)  # (its final read still gets what it printed)
                if not state.ended:
                    state.ended = True
                    threading.Thread(target=self._settle, args=(state, pod, True), daemon=True).start()
                return
            state.last = pod
            phase = view.phase
            changed = phase != state.phase
            state.phase = phase
            first_running = phase == "Running" and not self.running
            if first_running:
                self.running = True
            if phase == "Pending" and state.slow_timer is None and not view.ran:
                state.slow_timer = self.after(
                    self.lookups.slow_pending_delay(), functools.partial(self.lookups.slow_pending, state)
                )
            elif phase != "Pending":
                self._stop_slow_timer(state)
        if changed and phase in ("Pending", "Running"):
            if first_running:
                self.emit(ev.PhaseChanged(self.run_id, Phase.RUNNING, pod=state.name, node=view.node))
            if not self.items.workers:  # (a worker's items say when they run)
                self.emit(ev.PhaseChanged(self.run_id, Phase(phase), index=state.index, pod=state.name, node=view.node))
            self._progress()
        self.diagnose(state, pod)
        settle = False
        with self.lock:
            if view.ended and not state.ended:
                state.ended = settle = True
                if state.log is not None:  # (before its reader starts: it then reads once, not follows)
                    state.log.end(trust_stream=view.ended_cleanly)
            if state.log is not None and not state.log_started and (view.ended or view.ran):
                # Its log is read from the moment the container ran (never while it is being created: that
                # would be a request answered "waiting to start" and retried).
                state.log_started = True
                if view.ran:
                    threading.Thread(target=state.log.run, args=(self.slots,), daemon=True,
                                     name=f"kjupyter-log-{state.name}").start()  # fmt: skip
                else:
                    state.log.finished.set()  # it ended without ever running
        if settle:
            threading.Thread(target=self._settle, args=(state, pod, False), daemon=True).start()

    def _stop_slow_timer(self, state: _Pod) -> None:
        if state.slow_timer is not None:  # (cancelled, not cleared: a pod gets one slow look at most)
            state.slow_timer.cancel()

    def _worker_line(self, state: _Pod, text: str) -> None:
        self._line(self.items.item_of(state), text)

    def _line(self, index: int, text: str) -> None:
        self.tails[index].append(text)
        self.emit(ev.LogLine(self.run_id, text, index=index))

    def _logs_forbidden(self, exc: ApiError) -> None:
        with self.lock:
            if self.logs_forbidden_said:
                return
            self.logs_forbidden_said = True
        self.emit(ev.Diagnosis(
            self.run_id, "LogsForbidden",
            f"Logs are forbidden for your account (pods/log get in namespace {self.namespace}): this run's "
            "output cannot be shown.",
            "`kjupyter doctor` prints the Role kjupyter needs; the run itself is not affected.",
        ))  # fmt: skip

    def diagnose(self, state: _Pod, pod: dict[str, Any], events: list[dict[str, Any]] | None = None) -> None:
        """Diagnose from the pod itself; its events are read only when it shows a sign of trouble."""
        if self.items.workers and PodView(pod).ended:
            return  # a worker that ended: the item it was on says why (items.worker_ended); the Job replaces it
        if events is None:
            events = self.lookups.events_on_trouble(state, pod)
        d = diagnosis.diagnose_pod(self.run_id, pod, events, count=self.items.workers or self.count,
                                   log_tail=list(self.tails[state.index]))  # fmt: skip
        if d is None:
            return
        if d.reason == "FailedMount" and self.own_payload_secret and f'"{mf.PAYLOAD_VOLUME}"' in d.sentence:
            return
        d = self.lookups.escalate(state, d)
        self.report(d, running=PodView(pod).ended)

    def report(self, d: ev.Diagnosis, *, running: bool = False) -> None:
        """Emit a diagnosis once per (reason, task); a fatal one stops a run that cannot start."""
        key = (d.reason, d.index)
        with self.lock:
            if key in self.diagnosed or self.finished:
                return
            self.diagnosed.add(key)
            self.last_diagnosis = d
            if d.fatal:
                self.fatal_by_index[d.index] = d
        self.emit(d)
        self.lookups.on_diagnosis(d)
        if d.fatal and not running:  # it will never start: stop the run now
            try:
                self.stop(Phase.FAILED, d.reason, d.sentence)
            except BackendError as exc:
                self.emit(
                    ev.Diagnosis(self.run_id, "DeleteRefused", f"The run could not be deleted: {exc}", fatal=True)
                )

    def _settle(self, state: _Pod, pod: dict[str, Any], deleted: bool) -> None:
        if state.log is not None:
            state.log.finished.wait(LOG_WAIT_S)
        with self.lock:
            if state.settled or self.finished:
                return
            state.settled = True
            index = state.index
            if self.items.workers:
                self.items.worker_ended(self, state, pod, deleted)
            elif index not in self.done:
                code, reason, message = PodView(pod).exit()
                if pod.get("status", {}).get("phase") == "Succeeded" or (code == 0 and not deleted):
                    self._task(index, Phase.SUCCEEDED, 0)
                elif self.stopping is None and self.marked is None:  # (a pod of a stopped run is no failure)
                    self.failures[index].add(pod.get("metadata", {}).get("uid", state.name))
                    known = self.fatal_by_index.get(index)
                    if known is not None:  # the pod's own cause, never a termination message or a log line
                        reason, message = known.reason, known.sentence
                    elif code is not None:
                        message = f"exit code {code}"
                    if len(self.failures[index]) > self.retries:
                        self.task_verdicts[index] = (reason, message)
                        self._task(index, Phase.FAILED, code, reason, message)
                    else:
                        self.emit(ev.Diagnosis(self.run_id, "Retrying", f"Task {index} failed ({reason or code}); "
                                            f"retry {len(self.failures[index])} of {self.retries}.", index=index))  # fmt: skip
        self._progress()
        self.lookups.when_tasks_done()
        self.maybe_finish()

    def _task(self, index: int, phase: Phase, code: int | None, reason: str = "", message: str = "") -> None:
        self.succeeded += (phase is Phase.SUCCEEDED) - (self.done.get(index) is Phase.SUCCEEDED)
        self.done[index] = phase
        self.emit(ev.TaskFinished(self.run_id, index, phase, code, reason, message))

    def on_job(self, kind: str, job: dict[str, Any]) -> None:
        deleted_outside = pod_reason = False
        view = JobView(job)
        with self.lock:
            if self.finished:
                return
            mark = view.mark or self.marked
            if kind == "DELETED":
                if self.stopping is None:
                    deleted_outside = mark is None
                    self.stopping = mark or (Phase.FAILED, "JobDeleted", DELETED_OUTSIDE)
                self.terminal = self.stopping
            else:
                self.job = job
                self.marked = mark  # the Job is about to be deleted by a kjupyter client: say why when it is
                self.terminal = self.terminal or view.terminal
                pod_reason = any(d.index is not None for d in self.fatal_by_index.values())
        if deleted_outside:
            self.emit(ev.Diagnosis(self.run_id, "JobDeleted", f"The run failed: {DELETED_OUTSIDE}.",
                                "`kjupyter cancel RUN` or the Cancel button cancel a run cleanly.", fatal=True))  # fmt: skip
        if kind != "DELETED" and self.terminal and self.terminal[0] is Phase.FAILED and not pod_reason:
            d = diagnosis.diagnose_job(self.run_id, job)  # the Job's summary only when no pod said why
            if d is not None:
                self.report(d, running=True)
        self.maybe_finish(force=kind == "DELETED")

    # --- ending -----------------------------------------------------------------------------
    def maybe_finish(self, force: bool = False, grace_over: bool = False) -> None:
        """End the run once the Job ended and every task settled (``force``: now, whatever is open)."""
        with self.lock:
            if self.finished or self.terminal is None:
                return
            if self.stopping is not None and not force:
                return  # a stopped run ends when its Job is gone (its pods with it), not before
            open_tasks = [i for i in range(self.count) if i not in self.done]
            in_flight = any(p.ended and not p.settled for p in self.pods.values())
            if open_tasks and not force:
                if in_flight:
                    return  # the pod's settle calls back
                if not grace_over:
                    self.lookups.after_job_ended()  # pod events may lag the Job's: read the pods, then settle
                    return
            self.finished = True
            phase, reason, message = self.terminal
            if phase is Phase.FAILED and reason in JOB_SUMMARIES and self.task_verdicts:
                reason, message = next(iter(self.task_verdicts.values()))  # the pod's cause, not the Job's summary
            completed = JobView(self.job or {}).completed_indexes
            if self.items.workers:  # (a completed index is a worker; its items' outcomes are in the store)
                completed = set(range(self.count)) if phase is Phase.SUCCEEDED else set()
                failed = sum(1 for p in self.done.values() if p is Phase.FAILED)
                if phase is Phase.SUCCEEDED and failed:
                    phase, reason, message = Phase.FAILED, "Failed", f"{failed} of {self.count} item(s) failed"
            for i in open_tasks:
                if i in completed:
                    self._task(i, Phase.SUCCEEDED, 0)
                else:
                    task_phase = Phase.CANCELLED if phase is Phase.CANCELLED else Phase.FAILED
                    self._task(i, task_phase, None, reason, message)
            pods = list(self.pods.values())
        self._cancel_timers()
        for p in pods:
            if p.log is not None and not p.ended:
                p.log.stop()
        self._progress()
        since = self.warm.since_wall if self.warm is not None else None  # (a warm pod counts this run only)
        end = JobView(self.job or {}).ended or None  # (a pod whose end the watch has not told yet ended by then)
        self.emit(run_usage(self.run_id, [p.last for p in pods], self.kube.profile, end, since))  # (in run.json)
        self.emit(ev.RunFinished(self.run_id, phase, reason, message))
        self.on_end(self.run_id)

    def _cancel_timers(self) -> None:
        with self.lock:
            timers, self.timer_handles = self.timer_handles, []
        for timer in timers:
            timer.cancel()

    def stop(self, phase: Phase, reason: str, message: str) -> bool:
        """Delete the Job with its pods; False if it had already finished (see :func:`writes.stop_run`)."""
        return self.warm.stop(self, phase, reason, message) if self.warm else stop_run(self, phase, reason, message)
