"""Typed views over the Job and pod objects the API returns: "has it ended, how, and why", once.

Every rule about what a Job's conditions or a pod's container states mean lives here, so the
run tracker, the backend's listings and the diagnosis read them the same way. Pure: plain dicts
in (camelCase, as the API sends them), plain values out. Timestamps are the cluster's own
(RFC 3339, UTC) and are converted with :func:`k8s_time`, never with the local time zone.
"""

from __future__ import annotations

import calendar
import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kjupyter.backends.kubernetes.objects import CONTAINER, INDEX_ANNOTATION, INDEX_LABEL
from kjupyter.run_events import Phase

Obj = Mapping[str, Any]
STARTING = ("", "ContainerCreating", "PodInitializing")  # waiting reasons of a pod that is merely starting

# Annotations a kjupyter client puts on a Job just before it deletes it, so every other client watching the
# run (another kernel, the CLI's `logs -f`, the JupyterLab sidebar) reports why it ended.
ANNOTATION_CANCELLED_BY = "kjupyter.io/cancelled-by"  # the user who cancelled it
ANNOTATION_STOPPED = "kjupyter.io/stopped"  # "<reason>: <sentence>" of a run kjupyter ended as failed
Verdict = tuple[Phase, str, str]  # (phase, reason, sentence)


def dig(obj: Any, *path: Any, default: Any = None) -> Any:
    """``obj[path[0]][path[1]]...``, or ``default`` where a key or an index is missing."""
    for key in path:
        if isinstance(obj, Mapping):
            obj = obj.get(key)
        elif isinstance(obj, Sequence) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return default
        if obj is None:
            return default
    return obj


def k8s_time(stamp: Any) -> float:
    """Seconds since the epoch of an RFC 3339 UTC timestamp (``2026-03-29T01:30:00.5Z``); 0.0 if none.

    ``calendar.timegm`` reads the fields as UTC whatever the local time zone and its daylight
    saving rules (``time.mktime`` would read them as local time).
    """
    if not stamp:
        return 0.0
    text = str(stamp)
    try:
        base = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0
    frac = text[19:].rstrip("Z")
    if frac.startswith("."):
        digits = "".join(ch for ch in frac[1:] if ch.isdigit())
        return base + (int(digits) / 10 ** len(digits) if digits else 0.0)
    return float(base)


class PodView:
    """One pod of a run: its task index, phase, and how its task container is doing."""

    def __init__(self, obj: Obj) -> None:
        self.obj = obj
        self.meta: Obj = obj.get("metadata") or {}
        self.status: Obj = obj.get("status") or {}

    @property
    def name(self) -> str:
        return str(self.meta.get("name", ""))

    @property
    def uid(self) -> str:
        return str(self.meta.get("uid", ""))

    @property
    def phase(self) -> str:
        return str(self.status.get("phase", ""))

    @property
    def node(self) -> str | None:
        return dig(self.obj, "spec", "nodeName")  # type: ignore[no-any-return]

    @property
    def index(self) -> int:
        """The task index of a pod of an Indexed Job (0 when it has none)."""
        text = dig(self.meta, "labels", INDEX_LABEL) or dig(self.meta, "annotations", INDEX_ANNOTATION)
        try:
            return int(text)
        except (TypeError, ValueError):
            return 0

    def container(self, name: str | None = CONTAINER) -> Obj:
        for cs in self.status.get("containerStatuses") or []:
            if name is None or cs.get("name") == name:
                return dict(cs)
        return {}

    @property
    def ended(self) -> bool:
        """The pod is over, or its task container terminated."""
        return self.phase in ("Succeeded", "Failed") or "terminated" in (self.container().get("state") or {})

    @property
    def ran(self) -> bool:
        """The task container is running or has run: it has a log."""
        cs = self.container()
        state, last = cs.get("state") or {}, cs.get("lastState") or {}
        return "running" in state or "terminated" in state or "terminated" in last

    @property
    def disruption(self) -> str:
        """The DisruptionTarget condition's message (node lost, preempted, evicted), or ''."""
        cond = self.disruption_condition
        return str(cond.get("message") or cond.get("reason") or "disrupted") if cond else ""

    @property
    def disruption_condition(self) -> Obj:
        for cond in self.status.get("conditions") or []:
            if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
                return cond  # type: ignore[no-any-return]
        return {}

    @property
    def ended_cleanly(self) -> bool:
        """The container terminated by itself (not evicted, not deleted): its followed log ended with it."""
        if self.meta.get("deletionTimestamp") or self.status.get("reason") == "Evicted" or self.disruption:
            return False
        return "terminated" in (self.container().get("state") or {})

    @property
    def trouble(self) -> bool:
        """A Pending pod shows a sign that its events may explain (a pod being created shows none)."""
        if self.phase != "Pending":
            return False  # (events only ever explain why a pod does not start)
        for cond in self.status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return True
        for cs in [*(self.status.get("initContainerStatuses") or []), *(self.status.get("containerStatuses") or [])]:
            state = cs.get("state") or {}
            if "waiting" in state and str((state["waiting"] or {}).get("reason", "")) not in STARTING:
                return True
            if "terminated" in state and (state["terminated"] or {}).get("exitCode") not in (0, None):
                return True
        return False

    @property
    def problem_key(self) -> str:
        parts = [str(c.get("reason")) for c in self.status.get("conditions") or [] if c.get("status") == "False"]
        for cs in self.status.get("containerStatuses") or []:
            parts.append(str((cs.get("state") or {}).get("waiting", {}).get("reason")))
        return ",".join(parts)

    def exit(self) -> tuple[int | None, str, str]:
        """``(exit code, reason, message)`` of the task container (code None: it never terminated)."""
        term = (self.container().get("state") or {}).get("terminated")
        if term:
            return term.get("exitCode"), str(term.get("reason", "")), str(term.get("message", ""))[-500:]
        cond = self.disruption_condition
        if cond:
            return None, str(cond.get("reason") or "Disrupted"), str(cond.get("message", ""))
        return None, str(self.status.get("reason", "") or "PodDeleted"), str(self.status.get("message", ""))


class JobView:
    """One run's Job: whether it ended and how, which indexes completed, and who stopped it."""

    def __init__(self, obj: Obj) -> None:
        self.obj = obj
        self.meta: Obj = obj.get("metadata") or {}
        self.spec: Obj = obj.get("spec") or {}
        self.status: Obj = obj.get("status") or {}

    def condition(self, *types: str) -> Obj | None:
        for cond in self.status.get("conditions") or []:
            if cond.get("status") == "True" and cond.get("type") in types:
                return cond  # type: ignore[no-any-return]
        return None

    @property
    def terminal(self) -> Verdict | None:
        """How the Job ended (Complete or Failed), or None while it has not."""
        if self.condition("Complete") is not None:
            return Phase.SUCCEEDED, "Completed", "every task succeeded"
        failed = self.condition("Failed")
        if failed is None:
            return None
        reason = str(failed.get("reason", "Failed"))
        message = str(failed.get("message", ""))
        if reason == "DeadlineExceeded":
            message = f"the run exceeded its timeout of {self.spec.get('activeDeadlineSeconds')}s"
        return Phase.FAILED, reason, message

    @property
    def phase(self) -> Phase:
        """The run's phase as ``kjupyter jobs`` shows it."""
        terminal = self.terminal
        if terminal is not None:
            return terminal[0]
        if self.meta.get("deletionTimestamp"):  # stopped: as the kjupyter client that deleted it said, if one did
            mark = self.mark
            return mark[0] if mark is not None else Phase.CANCELLED
        return Phase.RUNNING if self.status.get("active") else Phase.PENDING

    @property
    def ended(self) -> float:
        """When the run ended (epoch seconds; 0.0 while it has not): completed, failed, or deleted."""
        failed = self.condition("Failed")
        for stamp in (self.status.get("completionTime"), failed and failed.get("lastTransitionTime"),
                      self.meta.get("deletionTimestamp")):  # fmt: skip
            if stamp and k8s_time(stamp):
                return k8s_time(stamp)
        return 0.0

    @property
    def completed_indexes(self) -> set[int]:
        out: set[int] = set()
        for part in str(self.status.get("completedIndexes") or "").split(","):
            if not part:
                continue
            lo, _, hi = part.partition("-")
            with contextlib.suppress(ValueError):
                out.update(range(int(lo), int(hi or lo) + 1))
        return out

    @property
    def mark(self) -> Verdict | None:
        """How a kjupyter client that deleted the Job said the run ended (None: no kjupyter client did)."""
        annotations = self.meta.get("annotations") or {}
        who = annotations.get(ANNOTATION_CANCELLED_BY)
        if who is not None:
            return Phase.CANCELLED, "Cancelled", f"the run was cancelled by {who}" if who else "the run was cancelled"
        stopped = annotations.get(ANNOTATION_STOPPED)
        if stopped:
            reason, _, message = str(stopped).partition(": ")
            return Phase.FAILED, reason, message
        return None
