"""The Job controller (batch/v1): NonIndexed and Indexed completion modes,
parallelism, backoffLimit / backoffLimitPerIndex, activeDeadlineSeconds,
suspend, pod tracking with the `batch.kubernetes.io/job-tracking` finalizer,
conditions (SuccessCriteriaMet/FailureTarget then Complete/Failed) and events.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .controller import Controller
from .errors import ApiError
from .resources import JOBS, PODS
from .store import Change
from .util import (
    Obj,
    compress_indexes,
    condition,
    condition_true,
    deep,
    get_path,
    now_iso,
    parse_indexes,
    parse_time,
    set_condition,
)

if TYPE_CHECKING:
    from .cluster import FakeCluster

TRACKING = "batch.kubernetes.io/job-tracking"
INDEX = "batch.kubernetes.io/job-completion-index"
FAILURES = "batch.kubernetes.io/job-index-failure-count"
COMPLETED_MSG = "Reached expected number of succeeded pods"
FAILURE_MESSAGES = {
    "BackoffLimitExceeded": "Job has reached the specified backoff limit",
    "DeadlineExceeded": "Job was active longer than specified deadline",
    "FailedIndexes": "Job has failed indexes",
    "MaxFailedIndexesExceeded": "Job has exceeded the specified maximal number of failed indexes",
}


def controller_of(obj: Obj) -> Obj | None:
    for ref in get_path(obj, "metadata", "ownerReferences", default=[]):
        if ref.get("controller"):
            return dict(ref)
    return None


def pod_index(pod: Obj) -> int | None:
    v = get_path(pod, "metadata", "annotations", INDEX)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def terminal(pod: Obj) -> bool:
    return get_path(pod, "status", "phase") in ("Succeeded", "Failed")


class JobController(Controller):
    name = "job-controller"

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(cluster)
        self._index_failures: dict[str, dict[int, int]] = {}
        self._last_failure: dict[str, tuple[int, float]] = {}
        self._api_failures: dict[str, tuple[int, float]] = {}   # job uid -> (failed creations in a row, retry at)

    def on_change(self, change: Change) -> None:
        meta = change.obj["metadata"]
        if change.resource == JOBS.key:
            self.enqueue((meta["namespace"], meta["name"]))
        elif change.resource == PODS.key:
            ref = controller_of(change.obj)
            if ref and ref.get("kind") == "Job":
                self.enqueue((meta["namespace"], ref["name"]))
            elif change.type != "DELETED" and TRACKING in (meta.get("finalizers") or []):
                self.enqueue(("orphan-pod", meta["namespace"], meta["name"]))   # its Job was orphaned away

    def _event(self, job: Obj, reason: str, message: str, type: str = "Normal") -> None:
        self.cluster.events.record(job, reason, message, component="job-controller", type=type)

    def _remove_finalizer(self, pod: Obj) -> None:
        def drop(p: Obj) -> None:
            fins = [f for f in p["metadata"].get("finalizers") or [] if f != TRACKING]
            if fins:
                p["metadata"]["finalizers"] = fins
            else:
                p["metadata"].pop("finalizers", None)
        self.api.mutate(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], drop,
                        uid=pod["metadata"]["uid"])

    def _delete_pod(self, job: Obj, pod: Obj) -> None:
        try:
            self.api.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], uid=pod["metadata"]["uid"])
        except ApiError:
            return
        self._event(job, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")

    def reconcile(self, key: Any) -> None:
        if key[0] == "orphan-pod":
            pod = self.store.get(PODS.key, key[1], key[2])
            if pod is not None and controller_of(pod) is None:
                self._remove_finalizer(pod)
            return
        ns, name = key
        job = self.store.get(JOBS.key, ns, name)
        all_pods, _ = self.store.list(PODS.key, ns, copy=False)   # read-only
        if job is None or job["metadata"].get("deletionTimestamp"):
            uid = job["metadata"]["uid"] if job else None
            for p in all_pods:
                ref = controller_of(p)
                if ref and ref.get("kind") == "Job" and ref.get("name") == name and (
                        ref.get("uid") == uid or not self.store.exists_uid(ref.get("uid", ""))) \
                        and TRACKING in (p["metadata"].get("finalizers") or []):
                    self._remove_finalizer(p)
            return
        uid = job["metadata"]["uid"]
        pods = [p for p in all_pods if (controller_of(p) or {}).get("uid") == uid]
        spec, old_status = job["spec"], job.get("status") or {}
        status = deep(old_status)
        indexed = spec.get("completionMode") == "Indexed"
        per_index = spec.get("backoffLimitPerIndex")
        completed = parse_indexes(status.get("completedIndexes"))
        failed_indexes = parse_indexes(status.get("failedIndexes"))
        failures = self._index_failures.setdefault(uid, {})

        # 1. account terminated pods still carrying the tracking finalizer
        counted = []
        for p in pods:
            if not terminal(p) or TRACKING not in (p["metadata"].get("finalizers") or []):
                continue
            counted.append(p)
            idx = pod_index(p)
            if get_path(p, "status", "phase") == "Succeeded":
                if indexed and idx is not None:
                    if idx not in failed_indexes:
                        completed.add(idx)
                else:
                    status["succeeded"] = status.get("succeeded", 0) + 1
            else:
                status["failed"] = status.get("failed", 0) + 1
                if indexed and idx is not None and per_index is not None and idx not in completed:
                    prior = int(get_path(p, "metadata", "annotations", FAILURES, default="0"))
                    failures[idx] = max(failures.get(idx, 0), prior + 1)
                    if failures[idx] > per_index:
                        failed_indexes.add(idx)
                n, _ = self._last_failure.get(uid, (0, 0.0))
                self._last_failure[uid] = (n + 1, time.monotonic())
        if indexed:
            status["succeeded"] = len(completed)
            status["completedIndexes"] = compress_indexes(completed)
        if per_index is not None:
            status["failedIndexes"] = compress_indexes(failed_indexes)

        active = [p for p in pods if not terminal(p) and not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in pods if not terminal(p) and p["metadata"].get("deletionTimestamp")]
        conds = status.setdefault("conditions", [])
        now = time.time()
        requeue: float | None = None

        finished = condition_true(job, "Complete") or condition_true(job, "Failed")
        if not finished:
            requeue = self._sync(job, status, conds, active, terminating, completed, failed_indexes, now)
            active = [p for p in self.store.list(PODS.key, ns, copy=False)[0]
                      if (controller_of(p) or {}).get("uid") == uid and not terminal(p)
                      and not p["metadata"].get("deletionTimestamp")]
        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if condition_true(p, "Ready"))
        status["terminating"] = len(terminating)
        status.setdefault("uncountedTerminatedPods", {})
        for k in ("active", "succeeded", "failed"):
            if not status.get(k):
                status.pop(k, None)
        if not status.get("completedIndexes"):
            status.pop("completedIndexes", None)
        if not conds:
            status.pop("conditions", None)
        if status != old_status:
            self.api.mutate(JOBS, ns, name, lambda j: j.__setitem__("status", status), uid=uid)
        for p in counted:
            self._remove_finalizer(p)
        if requeue is not None:
            self.enqueue(key, requeue)

    def _sync(self, job: Obj, status: Obj, conds: list[Obj], active: list[Obj], terminating: list[Obj],
              completed: set[int], failed_indexes: set[int], now: float) -> float | None:
        """Drive an unfinished job; returns a delay after which to look again, if any."""
        spec, uid = job["spec"], job["metadata"]["uid"]
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        parallelism = spec.get("parallelism", 1)
        if spec.get("suspend"):
            for p in active:
                self._delete_pod(job, p)
            if set_condition(conds, "Suspended", "True", "JobSuspended", "Job suspended", probe=True):
                self._event(job, "Suspended", "Job suspended")
            status.pop("startTime", None)
            return None
        if condition_true(job, "Suspended"):
            set_condition(conds, "Suspended", "False", "JobResumed", "Job resumed", probe=True)
            self._event(job, "Resumed", "Job resumed")
            status["startTime"] = now_iso()
        status.setdefault("startTime", now_iso())
        start = parse_time(status["startTime"])

        # failure
        target = condition(job, "FailureTarget")
        reason = target["reason"] if target and target.get("status") == "True" else None
        deadline = spec.get("activeDeadlineSeconds")
        if reason is None:
            backoff = spec.get("backoffLimit", 6)
            restarts = sum(cs.get("restartCount", 0) for p in active
                           for cs in get_path(p, "status", "containerStatuses", default=[])
                           + get_path(p, "status", "initContainerStatuses", default=[]))
            on_failure = get_path(spec, "template", "spec", "restartPolicy") == "OnFailure"
            max_failed = spec.get("maxFailedIndexes")
            all_indexes = set(range(completions or 0))
            if deadline is not None and now >= start + deadline:
                reason = "DeadlineExceeded"
            elif status.get("failed", 0) > backoff or (on_failure and restarts and (
                    restarts > 0 if backoff == 0 else restarts >= backoff)):
                reason = "BackoffLimitExceeded"
            elif max_failed is not None and len(failed_indexes) > max_failed:
                reason = "MaxFailedIndexesExceeded"
            elif indexed and failed_indexes and (completed | failed_indexes) >= all_indexes:
                reason = "FailedIndexes"
            if reason is not None:
                set_condition(conds, "FailureTarget", "True", reason, FAILURE_MESSAGES[reason], probe=True)
                self._event(job, reason, FAILURE_MESSAGES[reason], "Warning")
        if reason is not None:
            for p in active:
                self._delete_pod(job, p)
            if not terminating and not active:
                set_condition(conds, "Failed", "True", reason, FAILURE_MESSAGES[reason], probe=True)
            return None

        # success
        succeeded = status.get("succeeded", 0)
        if indexed:
            done = completed >= set(range(completions or 0))
        elif completions is not None:
            done = succeeded >= completions
        else:
            done = succeeded > 0 and not active
        if done:
            if set_condition(conds, "SuccessCriteriaMet", "True", "CompletionsReached", COMPLETED_MSG, probe=True):
                pass
            for p in active:
                self._delete_pod(job, p)
            if not active and not terminating:
                set_condition(conds, "Complete", "True", "CompletionsReached", COMPLETED_MSG, probe=True)
                status["completionTime"] = now_iso()
                self._event(job, "Completed", "Job completed")
            return None

        # pods
        requeue = None if deadline is None else max(0.0, start + deadline - now)
        fails, last = self._last_failure.get(uid, (0, 0.0))
        base = self.cluster.options.job_backoff
        if fails and base > 0:
            wait: float = last + min(base * 2 ** (fails - 1), 360.0) - time.monotonic()
            if wait > 0:
                return wait if requeue is None else min(wait, requeue)
        api_wait = self._api_wait(uid)
        if api_wait is not None:
            return api_wait if requeue is None else min(api_wait, requeue)
        replace_when_failed = spec.get("podReplacementPolicy") == "Failed"
        busy = active + (terminating if replace_when_failed else [])
        if indexed:
            used = {pod_index(p) for p in busy}
            todo = [i for i in range(completions or 0)
                    if i not in completed and i not in failed_indexes and i not in used]
            for i in todo[:max(0, parallelism - len(busy))]:
                if not self._create_pod(job, i):
                    break
            extra = sorted(active, key=lambda p: -(pod_index(p) or 0))[:max(0, len(active) - parallelism)]
        else:
            want = parallelism if completions is None else min(parallelism, completions - succeeded)
            if completions is None and succeeded > 0:
                want = 0
            for _ in range(max(0, want - len(busy))):
                if not self._create_pod(job, None):
                    break
            extra = active[:max(0, len(active) - want)]
        for p in extra:
            self._delete_pod(job, p)
        retry = self._api_wait(uid)
        if retry is not None:
            requeue = retry if requeue is None else min(retry, requeue)
        return requeue

    def _api_wait(self, uid: str) -> float | None:
        """After a failed pod creation, the next attempt waits for the controller's API backoff (the real one:
        1 s doubling to 60 s, DefaultJobApiBackOff / MaxJobApiBackOff); a successful creation resets it."""
        n, retry_at = self._api_failures.get(uid, (0, 0.0))
        wait = retry_at - time.monotonic()
        return wait if n and wait > 0 else None

    def _create_pod(self, job: Obj, index: int | None) -> bool:
        meta, template = job["metadata"], deep(job["spec"]["template"])
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        # The labels of the Job's generated selector, which the API server adds to its template (1.27+: both forms).
        for key, value in (("job-name", meta["name"]), ("controller-uid", meta["uid"])):
            labels.setdefault(f"batch.kubernetes.io/{key}", value)
            labels.setdefault(key, value)
        annotations = dict(tmeta.get("annotations") or {})
        spec = template.get("spec") or {}
        prefix = f"{meta['name']}-"
        if index is not None:
            prefix = f"{meta['name']}-{index}-"
            labels[INDEX] = annotations[INDEX] = str(index)
            per_index = job["spec"].get("backoffLimitPerIndex")
            if per_index is not None:
                annotations[FAILURES] = str(self._index_failures.get(meta["uid"], {}).get(index, 0))
            spec.setdefault("hostname", f"{meta['name']}-{index}")
            env_var = {"name": "JOB_COMPLETION_INDEX",
                       "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{INDEX}']"}}}
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                env = c.setdefault("env", [])
                if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                    env.append(dict(env_var))
        pod: Obj = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": prefix, "namespace": meta["namespace"], "labels": labels,
                         "annotations": annotations, "finalizers": [TRACKING],
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": spec,
        }
        if not annotations:
            del pod["metadata"]["annotations"]
        try:
            created = self.api.create(PODS, pod, meta["namespace"], validate=False)
        except ApiError as e:
            # Like controller.RealPodControl: a Warning FailedCreate on the Job, no pod; the sync is retried.
            self._event(job, "FailedCreate", f"Error creating: {e.message}", "Warning")
            n = self._api_failures.get(meta["uid"], (0, 0.0))[0] + 1
            o = self.cluster.options
            delay = min(o.job_api_backoff * 2 ** (n - 1), o.job_api_backoff_max)
            self._api_failures[meta["uid"]] = (n, time.monotonic() + delay)
            return False
        self._api_failures.pop(meta["uid"], None)
        self._event(job, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        return True
