"""The reads a run makes when watches alone cannot say: on a sign of trouble, or before a verdict.

Watches report changes; they cannot report that something did *not* happen. Every verdict that
rests on an absence reads the objects first, once, instead of trusting a view that may be stale:

- a Job with no pod after :data:`MISSING_PODS_S`: its own events (FailedCreate: quota, webhook);
- a pod Pending with a sign of trouble, or for :data:`SLOW_PENDING_S`: its events;
- an image that cannot be pulled: retried by the kubelet for :data:`IMAGE_PULL_GRACE_S`, shown
  as "still retrying" meanwhile, fatal only after (or at once when no retry can fix it);
- NotTriggerScaleUp: confirmed after :data:`CAPACITY_CONFIRM_S`, then fatal unless the call asked
  to wait (an explicit ``pending_timeout=``);
- ``pending_timeout``: the Job and its pods are read; only a run that is still pending is deleted;
- the Job ended but pods are unsettled: the pods are read before tasks are settled from the Job;
- every task ended but the Job did not: the Job is read;
- a stopped run: the Job is read until it is gone, so "cancelled" is said when the pods are.

All of it runs on the run's work lane (timers included), so none of it blocks a watch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from kjupyter.backends.kubernetes import diagnosis
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes.state import PodView
from kjupyter.errors import ApiError, BackendError
from kjupyter.run_events import Diagnosis, Phase

if TYPE_CHECKING:
    from kjupyter.backends.kubernetes.run import KubeRun, _Pod

SLOW_PENDING_S = 10.0  # a pod still Pending this long after it was first seen gets its events looked at once
MAX_SLOW_LOOKUPS = 5  # ... for at most this many pods of a run (a big map's pods are slow for one reason)
MISSING_PODS_S = 3.0  # a Job with no pod this long after it was sent: read its events (then 2x, 4x, ...)
MAX_MISSING_LOOKUPS = 5
IMAGE_PULL_GRACE_S = 60.0  # about three of the kubelet's back-off rounds (10 s, 20 s, 40 s)
CAPACITY_CONFIRM_S = 10.0  # NotTriggerScaleUp must still stand after this long to fail the run
JOB_CONFIRM_S = 10.0  # every task ended: the Job's own end is read if the job watch has not said it by then
STOP_CONFIRM_S = 40.0  # a stopped run whose Job is not seen gone after this long: read it (pods' grace is 30 s)
MAX_STOP_CONFIRMS = 10


class Lookups:
    """The reads of one :class:`~kjupyter.backends.kubernetes.run.KubeRun`."""

    @staticmethod
    def slow_pending_delay() -> float:
        return SLOW_PENDING_S

    def __init__(self, run: KubeRun) -> None:
        self.run = run
        self.events_listed: set[tuple[str, str]] = set()
        self.slow_lookups = 0
        self.missing_lookups = 0
        self.pull_failing_since: dict[int, float] = {}
        self.capacity_timer = False
        self.job_confirm = False
        self.stop_confirms = 0
        self.pods_read_after_end = False

    # --- events of pods and of the Job ------------------------------------------------------
    def events(self, name: str, kind: str = "Pod") -> list[dict[str, Any]]:
        kube = self.run.kube
        try:
            data = kube.call(
                f"list the events of {kind} {name}", kube.core.list_namespaced_event, self.run.namespace,
                field_selector=f"involvedObject.name={name},involvedObject.kind={kind}",
            )  # fmt: skip
        except ApiError as exc:
            if exc.status in (401, 403):
                self.run.report(Diagnosis(self.run.run_id, "EventsForbidden", str(exc)))
            return []
        except BackendError:
            return []  # (a passing failure: the next sign of trouble reads them again)
        return list(data.get("items") or [])

    def events_on_trouble(self, state: _Pod, pod: dict[str, Any]) -> list[dict[str, Any]]:
        """A pod being created (Pending, ContainerCreating) is no sign; one LIST per new problem is."""
        view = PodView(pod)
        if not view.trouble:
            return []
        key = (state.name, view.problem_key)
        with self.run.lock:
            new = key not in self.events_listed
            self.events_listed.add(key)
        return self.events(state.name) if new else []

    def slow_pending(self, state: _Pod) -> None:
        """A pod still Pending after ``SLOW_PENDING_S``: its events may say why (FailedMount, scale-up)."""
        run = self.run
        with run.lock:
            if run.finished or state.ended or state.phase != "Pending" or self.slow_lookups >= MAX_SLOW_LOOKUPS:
                return
            self.slow_lookups += 1
            pod = state.last
        if pod:
            run.diagnose(state, pod, self.events(state.name))

    def watch_for_missing_pods(self, delay: float = MISSING_PODS_S) -> None:
        self.run.after(delay, lambda: self._missing_pods(delay))

    def _missing_pods(self, delay: float) -> None:
        """No pod yet: the Job's own events say why (FailedCreate from a quota, a webhook, a LimitRange)."""
        run = self.run
        with run.lock:
            if run.finished or run.pods or self.missing_lookups >= MAX_MISSING_LOOKUPS:
                return
            self.missing_lookups += 1
        d = diagnosis.diagnose_job_events(run.run_id, self.events(mf.job_name(run.run_id), "Job"))
        if d is not None:
            run.report(d)
        self.watch_for_missing_pods(delay * 2)

    # --- verdicts that wait -----------------------------------------------------------------
    def escalate(self, state: _Pod, d: Diagnosis) -> Diagnosis:
        """A pull error still retrying after ``IMAGE_PULL_GRACE_S`` becomes fatal (the kubelet's own words)."""
        if d.reason != "ImagePullRetrying":
            self.pull_failing_since.pop(state.index, None)
            return d
        now = time.monotonic()
        since = self.pull_failing_since.setdefault(state.index, now)
        if now - since < IMAGE_PULL_GRACE_S:
            if since == now:  # look again when the grace is over, even if the pod says nothing meanwhile
                self.run.after(IMAGE_PULL_GRACE_S, lambda: self._pull_grace_over(state))
            return d
        sentence = d.sentence.replace("could not be pulled yet; still retrying", "cannot be pulled")
        return Diagnosis(d.run_id, "ErrImagePull", f"{sentence.rstrip('.')} (gave up after {now - since:.0f}s of retries).",
                         "Check the registry and the image name; retry the run once the registry is back.",
                         fatal=True, index=d.index)  # fmt: skip

    def _pull_grace_over(self, state: _Pod) -> None:
        with self.run.lock:
            pod = state.last
            if self.run.finished or state.ended or not pod:
                return
        self.run.diagnose(state, pod, self.events(state.name))

    def on_diagnosis(self, d: Diagnosis) -> None:
        if d.reason == "NotTriggerScaleUp" and not self.run.wait_for_capacity and not self.capacity_timer:
            self.capacity_timer = True
            self.run.after(CAPACITY_CONFIRM_S, lambda: self._capacity_confirmed(d))

    def _capacity_confirmed(self, first: Diagnosis) -> None:
        """The autoscaler said it cannot add a node: if it still says so and nothing started, stop now."""
        run = self.run
        with run.lock:
            if run.finished or run.running:
                return
            pending = [p for p in run.pods.values() if p.phase == "Pending" and p.last]
        for p in pending[:MAX_SLOW_LOOKUPS]:
            events = self.events(p.name)
            autoscaler = [e for e in events if e.get("reason") in ("NotTriggerScaleUp", "TriggeredScaleUp")]
            if autoscaler and autoscaler[-1].get("reason") == "NotTriggerScaleUp":
                run.report(Diagnosis(
                    run.run_id, "NoCapacity",
                    f"No node can run this and the cluster autoscaler cannot add one: {first.sentence.split(': ', 1)[-1]}",
                    "Ask for less cpu/memory/gpu, use a cluster that offers it, or pass pending_timeout= to wait anyway.",
                    fatal=True, index=first.index,
                ))  # fmt: skip
                return

    def pending_expired(self) -> None:
        """``pending_timeout`` passed: read the Job and its pods; delete only a run that is still pending."""
        run = self.run
        with run.lock:
            if run.running or run.finished:
                return
        if not self.read_job_and_pods():
            return
        with run.lock:
            if run.running or run.finished or run.terminal is not None:
                return
            pods = [p for p in run.pods.values() if p.last]
        for p in pods[:MAX_SLOW_LOOKUPS]:  # the autoscaler's verdict may only be in the events
            d = diagnosis.diagnose_pod(run.run_id, p.last, self.events(p.name), count=run.count)
            if d is not None:
                run.last_diagnosis = d
        d = diagnosis.pending_timeout(run.run_id, run.pending_timeout or 0, run.last_diagnosis)
        run.emit(d)
        try:
            run.stop(Phase.FAILED, d.reason, d.sentence)
        except BackendError as exc:
            run.emit(Diagnosis(run.run_id, "DeleteRefused", f"The pending run could not be deleted: {exc}", fatal=True))

    def read_job_and_pods(self) -> bool:
        """Read the Job and the run's pods and feed them in as the watches would; False if the reads failed."""
        run = self.run
        kube = run.kube
        try:
            job = kube.call(f"read Job {run.run_id}", kube.batch.read_namespaced_job, mf.job_name(run.run_id),
                            run.namespace)  # fmt: skip
            pods = kube.call("list pods", kube.core.list_namespaced_pod, run.namespace,
                             label_selector=mf.selector(run=run.run_id))  # fmt: skip
        except ApiError as exc:
            if exc.status == 404:
                run.on_job("DELETED", {"metadata": {"name": run.run_id}})
            return False
        except BackendError:
            return False
        run.on_job("SYNC", job)
        for pod in pods.get("items") or []:
            run.on_pod("SYNC", pod)
        return True

    def after_job_ended(self) -> None:
        """The Job ended before every task settled: wait a moment, read the pods, then settle from the Job."""
        if self.pods_read_after_end:
            return
        self.pods_read_after_end = True

        def read_then_settle() -> None:
            self.read_job_and_pods()
            self.run.after(1.0, lambda: self.run.maybe_finish(grace_over=True))

        from kjupyter.backends.kubernetes.run import FINISH_GRACE_S

        self.run.after(FINISH_GRACE_S, read_then_settle)

    def when_tasks_done(self) -> None:
        """Every task ended: if the job watch does not say the Job ended within JOB_CONFIRM_S, read it."""
        run = self.run
        with run.lock:
            if self.job_confirm or len(run.done) < run.count or run.terminal is not None:
                return
            self.job_confirm = True

        def confirm() -> None:
            with run.lock:
                if run.finished or run.terminal is not None:
                    return
            self.read_job_and_pods()

        run.after(JOB_CONFIRM_S, confirm)

    def confirm_gone(self) -> None:
        """After a stop: if the Job's deletion is not seen within STOP_CONFIRM_S, read the Job."""
        run = self.run

        def check() -> None:
            with run.lock:
                if run.finished:
                    return
            kube = run.kube
            try:
                kube.call(f"read Job {run.run_id}", kube.batch.read_namespaced_job, mf.job_name(run.run_id),
                          run.namespace)  # fmt: skip
            except ApiError as exc:
                if exc.status == 404:
                    run.maybe_finish(force=True)
                    return
            except BackendError:
                pass
            self.stop_confirms += 1
            if self.stop_confirms < MAX_STOP_CONFIRMS:
                run.emit(Diagnosis(run.run_id, "Stopping", "The run's pods are still terminating."))
                run.after(STOP_CONFIRM_S, check)

        run.after(STOP_CONFIRM_S, check)
