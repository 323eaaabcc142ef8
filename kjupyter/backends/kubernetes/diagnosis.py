"""Why a run is stuck or failed, in one sentence: pure functions of Kubernetes objects.

Input: pod, job and event objects as the API returns them (JSON dicts,
camelCase keys). Output: a :class:`kjupyter.run_events.Diagnosis` (or ``None``
when all is well). No network, no globals, so every rule is unit-tested on
recorded objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kjupyter.backends.kubernetes.state import JobView, PodView, dig
from kjupyter.run_events import Diagnosis

Obj = Mapping[str, Any]
_IMAGE_PULL = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
# Words of a pull error that no retry can fix: the image or tag does not exist, or the registry refuses us.
_PERMANENT_PULL = ("not found", "notfound", "manifest unknown", "name unknown", "repository does not exist",
                   "pull access denied", "unauthorized", "authentication required", "denied", "invalid reference")  # fmt: skip
_KJUPYTER_EXIT_CODES = (0, 1, 2)  # the runner's own codes: the outcome envelope explains those
_TAIL = 10


_DISRUPTIONS = {
    "DeletionByPodGC": ("NodeLost", "{who} was lost with its node: {message}",
                        "The node went away (scale-down, spot reclaim, failure); retries= runs it again elsewhere."),
    "PreemptionByScheduler": ("Preempted", "{who} was preempted by a higher-priority pod: {message}",
                              "Use a higher priority class, or retries= to run it again."),
    "TerminationByKubelet": ("Evicted", "{who} was evicted by its node's kubelet: {message}",
                             "The node ran short of a resource; ask for more memory= or retry with retries=."),
    "EvictionByEvictionAPI": ("Evicted", "{who} was evicted (a node drain or a disruption budget): {message}",
                              "Retry the run, or set retries= to do it automatically."),
}  # fmt: skip


def _get_terminated(cs: Obj) -> Obj | None:
    return dig(cs, "state", "terminated")  # type: ignore[no-any-return]


def _disruption(run_id: str, who: str, cond: Obj, index: int) -> Diagnosis:
    reason, sentence, hint = _DISRUPTIONS.get(
        str(cond.get("reason", "")), ("Disrupted", "{who} was stopped by the cluster: {message}",
                                      "Retry the run, or set retries= to do it automatically."),
    )  # fmt: skip
    message = str(cond.get("message") or cond.get("reason") or "").strip().rstrip(".")
    return Diagnosis(run_id, reason, sentence.format(who=who, message=message) + ".", hint, fatal=True, index=index)


def _where(index: int, count: int) -> str:
    return "The task" if count <= 1 else f"Task {index}"


def _memory_limit(pod: Obj, name: str | None) -> str:
    for c in dig(pod, "spec", "containers", default=[]) or []:
        if name is None or c.get("name") == name:
            return str(dig(c, "resources", "limits", "memory", default=""))
    return ""


def _tail(lines: Iterable[str]) -> str:
    kept = [line for line in lines if line.strip()][-_TAIL:]
    return ("Last log lines:\n" + "\n".join(kept)) if kept else ""


def diagnose_pod(
    run_id: str,
    pod: Obj,
    events: Iterable[Obj] = (),
    *,
    count: int = 1,
    container: str | None = "task",
    log_tail: Iterable[str] = (),
) -> Diagnosis | None:
    """The most important thing wrong with one pod, or None."""
    index = PodView(pod).index
    who = _where(index, count)
    status = dig(pod, "status", default={})
    events = list(events)
    if status.get("reason") == "Evicted":
        return Diagnosis(
            run_id, "Evicted", f"{who} was evicted from its node: {str(status.get('message', '')).strip()}",
            "The node ran short of memory or disk; ask for more memory= (requests) or retry with retries=.",
            fatal=True, index=index,
        )  # fmt: skip
    view = PodView(pod)
    cs = view.container(container)
    cond = view.disruption_condition
    if cond and not _get_terminated(cs) and view.phase != "Succeeded":
        return _disruption(run_id, who, cond, index)
    terminated = dig(cs, "state", "terminated") or dig(cs, "lastState", "terminated")
    if terminated:
        reason = terminated.get("reason", "")
        code = terminated.get("exitCode")
        if reason == "OOMKilled" or (code == 137 and reason != "Error" and not PodView(pod).disruption):
            limit = _memory_limit(pod, container)
            return Diagnosis(
                run_id, "OOMKilled",
                f"{who} ran out of memory and was killed (OOMKilled{', limit ' + limit if limit else ''}).",
                f"Raise memory= (for example memory=\"{_double(limit)}\")." if limit else "Set a larger memory=.",
                fatal=True, index=index,
            )  # fmt: skip
        if reason == "DeadlineExceeded":
            return Diagnosis(run_id, "DeadlineExceeded", f"{who} exceeded its timeout.",
                             "Raise timeout= if the work needs longer.", fatal=True, index=index)  # fmt: skip
        if code in (137, 143) and dig(pod, "metadata", "deletionTimestamp"):
            return None  # stopped because its pod is being deleted: the deletion's own reason is the news
        if code not in _KJUPYTER_EXIT_CODES and code is not None:
            disrupted = PodView(pod).disruption
            if disrupted:
                return Diagnosis(run_id, "Disrupted", f"{who} was stopped by the cluster: {disrupted}",
                                 "Retry the run, or set retries= to do it automatically.", fatal=True, index=index)  # fmt: skip
            message = str(terminated.get("message", "")).strip()
            tail = _tail(log_tail) or (f"Last log lines:\n{message}" if message else "")
            return Diagnosis(
                run_id, "Crashed", f"{who} crashed with exit code {code}{_signal(code)}.",
                tail or "The process died without a Python exception; look at `kjupyter logs " + run_id + "`.",
                fatal=True, index=index,
            )  # fmt: skip
    waiting = dig(cs, "state", "waiting") or {}
    wreason = waiting.get("reason", "")
    wmessage = str(waiting.get("message", "")).strip()
    if wreason in _IMAGE_PULL:
        image = cs.get("image") or _image(pod, container)
        pull_message = _pull_message(wmessage, events)
        detail = f": {pull_message}" if pull_message else ""
        if image_pull_is_permanent(wreason, pull_message):
            return Diagnosis(
                run_id, wreason, f"The image {image!r} cannot be pulled ({wreason}){detail}.",
                "Check the image name and tag, and add imagePullSecrets to the profile for a private registry.",
                fatal=True, index=index,
            )  # fmt: skip
        return Diagnosis(
            run_id, "ImagePullRetrying", f"The image {image!r} could not be pulled yet; still retrying{detail}.",
            "The registry may be briefly unavailable; kjupyter waits a few back-off rounds before it gives up.",
            index=index,
        )  # fmt: skip
    if wreason == "CreateContainerConfigError":
        return Diagnosis(
            run_id, wreason, f"The container cannot be created: {wmessage or 'its configuration is invalid'}.",
            f"Create the missing secret in namespace {dig(pod, 'metadata', 'namespace', default='?')!r}, "
            "or remove it from secrets=.",
            fatal=True, index=index,
        )  # fmt: skip
    if wreason == "CrashLoopBackOff":
        return Diagnosis(run_id, wreason, f"{who} keeps crashing ({wmessage or 'CrashLoopBackOff'}).",
                         _tail(log_tail), fatal=True, index=index)  # fmt: skip
    mount = _last_event(events, "FailedMount")
    if mount is not None and status.get("phase") == "Pending":
        return Diagnosis(run_id, "FailedMount", f"A volume cannot be mounted: {mount.get('message', '')}",
                         "Check that the secrets named in the profile exist in the namespace.", index=index)  # fmt: skip
    if status.get("phase") == "Pending":
        return _scheduling(run_id, pod, events, index)
    return None


def _scheduling(run_id: str, pod: Obj, events: list[Obj], index: int) -> Diagnosis | None:
    nope = _last_event(events, "NotTriggerScaleUp")
    if nope is not None:
        return Diagnosis(
            run_id, "NotTriggerScaleUp", f"The cluster autoscaler will not add a node: {nope.get('message', '')}",
            "No node group can fit this pod: ask for less cpu/memory/gpu, or use a cluster that offers it.",
            index=index,
        )  # fmt: skip
    for cond in dig(pod, "status", "conditions", default=[]) or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            message = str(cond.get("message", "")).strip()
            up = _last_event(events, "TriggeredScaleUp")
            if up is not None:
                return Diagnosis(run_id, "TriggeredScaleUp", "Waiting for the cluster autoscaler to add a node.",
                                 str(up.get("message", "")), index=index)  # fmt: skip
            hint = "Ask for fewer resources, or pick a cluster whose nodes can run it."
            if "gpu" in message.lower():
                hint = "No node offers the GPUs asked for: lower gpu=, choose another GPU type, or another cluster."
            return Diagnosis(run_id, "Unschedulable", f"No node can run the pod: {message}", hint, index=index)
    failed = _last_event(events, "FailedScheduling")
    if failed is not None:
        return Diagnosis(run_id, "Unschedulable", f"No node can run the pod: {failed.get('message', '')}",
                         "Ask for fewer resources, or pick a cluster whose nodes can run it.", index=index)  # fmt: skip
    return None


def diagnose_job(run_id: str, job: Obj) -> Diagnosis | None:
    """Why a Job failed, from its conditions (None if it has not failed)."""
    for cond in dig(job, "status", "conditions", default=[]) or []:
        if cond.get("type") in ("Failed", "FailureTarget") and cond.get("status") == "True":
            reason = cond.get("reason", "")
            message = str(cond.get("message", "")).strip()
            if reason == "DeadlineExceeded":
                deadline = dig(job, "spec", "activeDeadlineSeconds")
                return Diagnosis(run_id, reason, f"The run exceeded its timeout of {deadline}s and was stopped.",
                                 "Raise timeout= if the work needs longer.", fatal=True)  # fmt: skip
            if reason == "BackoffLimitExceeded":
                return Diagnosis(run_id, reason, "The task failed and has no retries left.",
                                 "Raise retries= to try again automatically.", fatal=True)  # fmt: skip
            return Diagnosis(run_id, reason or "Failed", f"The Job failed: {message or reason}.", fatal=True)
    return None


def job_summary(run_id: str, job: Obj) -> str:
    """The one sentence ``kjupyter jobs`` shows for a run, from its Job alone (no request beyond the listing).

    Why a kjupyter client stopped it (its mark), else why the Job failed; "" when neither says anything.
    Why a run waits (its pods, their events) would cost requests per run: the run's widget says that.
    """
    mark = JobView(job).mark
    text = (mark[2] or mark[1]) if mark is not None else ""
    if not text:
        d = diagnose_job(run_id, job)
        text = d.sentence if d is not None else ""
    return text[:1].upper() + text[1:] + ("" if not text or text.endswith(".") else ".")


def image_pull_is_permanent(reason: str, message: str) -> bool:
    """True when a pull error cannot fix itself (no such image, access refused); transient otherwise (5xx, timeouts)."""
    if reason in ("InvalidImageName", "ErrImageNeverPull"):
        return True
    lowered = message.lower()
    return any(word in lowered for word in _PERMANENT_PULL)


def _pull_message(waiting_message: str, events: list[Obj]) -> str:
    """The registry's own words: the kubelet's last "Failed to pull image" event, else the waiting message."""
    failed = [e for e in events if e.get("reason") == "Failed" and "pull" in str(e.get("message", "")).lower()
              and not str(e.get("message", "")).startswith("Error: ")]  # fmt: skip
    if failed:
        return str(failed[-1].get("message", "")).strip()
    return waiting_message if not waiting_message.startswith("Back-off pulling image") else ""


def diagnose_job_events(run_id: str, events: Iterable[Obj]) -> Diagnosis | None:
    """Why a Job has no pods: its own FailedCreate events (quota, admission webhook, LimitRange)."""
    failed = [e for e in events if e.get("reason") == "FailedCreate"]
    if not failed:
        return None
    message = str(failed[-1].get("message", "")).strip()
    why = message.split("is forbidden: ", 1)[-1] if "is forbidden: " in message else message
    why = why.removeprefix("Error creating: ")
    if "exceeded quota" in why:
        quota = why.split("exceeded quota: ", 1)[1].split(",", 1)[0].strip()
        fatal = quota_can_never_fit(why)
        return Diagnosis(
            run_id, "QuotaExceeded",
            f"The cluster refused to create the run's pods: the namespace's ResourceQuota {quota!r} is exhausted ({why}).",
            "Ask for less (cpu=, memory=, gpu=) or ask your admin to raise the quota."
            if fatal else "It starts when other pods in the namespace free their share of the quota.",
            fatal=fatal,
        )  # fmt: skip
    if "admission webhook" in why:
        webhook = why.split("admission webhook ", 1)[1].split(" denied", 1)[0].strip().strip('"')
        return Diagnosis(run_id, "WebhookDenied",
                         f"The admission webhook {webhook!r} refused the run's pods: {why}.",
                         "Change what the webhook's policy objects to, or ask its owner.", fatal=True)  # fmt: skip
    return Diagnosis(run_id, "FailedCreate", f"The cluster refused to create the run's pods: {why}.",
                     "A LimitRange or policy of the namespace forbids this pod; adjust cpu=, memory= or gpu=.",
                     fatal=True)  # fmt: skip


def quota_can_never_fit(message: str) -> bool:
    """True if what the pod requests is above the quota's limit by itself (not just above what is left)."""

    def amounts(label: str) -> dict[str, float]:
        # "... requested: limits.memory=2Gi,requests.memory=2Gi, used: ..., limited: limits.memory=1Gi,..."
        part = message.split(f"{label}: ", 1)
        if len(part) < 2:
            return {}
        out: dict[str, float] = {}
        for item in part[1].split(", ", 1)[0].split(","):
            key, _, value = item.partition("=")
            try:
                out[key.strip()] = _quantity(value.strip())
            except ValueError:
                continue
        return out

    requested, limited = amounts("requested"), amounts("limited")
    return any(key in limited and requested[key] > limited[key] for key in requested)


def _quantity(text: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def pending_timeout(run_id: str, seconds: float, last: Diagnosis | None) -> Diagnosis:
    """The diagnosis of a run deleted because it stayed Pending too long."""
    why = f" {last.sentence}" if last is not None else ""
    return Diagnosis(
        run_id, "PendingTimeout", f"The run was still pending after {seconds:g}s and was deleted.{why}",
        (last.hint if last is not None and last.hint else "Raise pending_timeout= or ask for fewer resources."),
        fatal=True,
    )  # fmt: skip


def _last_event(events: list[Obj], reason: str) -> Obj | None:
    found = [e for e in events if e.get("reason") == reason]
    return found[-1] if found else None


def _image(pod: Obj, container: str | None) -> str:
    for c in dig(pod, "spec", "containers", default=[]) or []:
        if container is None or c.get("name") == container:
            return str(c.get("image", "?"))
    return "?"


def _signal(code: int) -> str:
    names = {134: "SIGABRT", 137: "SIGKILL", 139: "SIGSEGV", 143: "SIGTERM"}
    return f" ({names[code]})" if code in names else ""


def _double(limit: str) -> str:
    digits = "".join(ch for ch in limit if ch.isdigit())
    unit = limit[len(digits) :]
    return f"{int(digits) * 2}{unit}" if digits and limit.startswith(digits) else limit
