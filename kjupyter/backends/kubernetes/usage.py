"""Resource-seconds of a run's pods, from the task containers' own start and end times.

Each pod counts from its task container's ``startedAt`` (state ``running`` or ``terminated``) to its
``finishedAt`` (a container still running when the run ends, say a cancelled one, to its pod's
``deletionTimestamp``, else to now), times what it asked for: the cpu and memory requests (the limits
where there are no requests) and the GPUs in its limits, whose type is the profile's GPU type whose
node selector the pod carries. Earlier attempts of a restarted container (``lastState``) count too.
A pod that never started its container used nothing. Pure: pod dicts in, a :class:`~kjupyter.run_events.Usage` out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from kjupyter.backends.kubernetes.objects import CONTAINER
from kjupyter.backends.kubernetes.state import dig, k8s_time
from kjupyter.config import Profile
from kjupyter.errors import BackendError
from kjupyter.run_events import Usage

_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
}  # fmt: skip


def quantity(value: Any) -> float:
    """A Kubernetes quantity as a number: ``"500m"`` 0.5, ``"16Gi"`` 17179869184, ``"1e3"`` 1000, ``2`` 2.

    Every form the API server returns is read (it keeps the form a quantity was written in, such as a
    LimitRange's); anything else is a BackendError, never a resource silently left out.
    """
    text = str(value).strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix) and text[: -len(suffix)]:
            number, scale = text[: -len(suffix)], _SUFFIXES[suffix]
            break
    else:
        number, scale = text, 1
    try:
        amount = float(number) * scale
    except ValueError:
        raise BackendError(f"a pod's resource quantity {value!r} is not a Kubernetes quantity") from None
    if amount != amount or amount < 0:  # NaN, negative
        raise BackendError(f"a pod's resource quantity {value!r} is not a Kubernetes quantity")
    return amount


def container_seconds(pod: Mapping[str, Any], now: float, since: float | None = None) -> float:
    """How long the task container ran, in seconds, over its attempts in this pod."""
    status: Mapping[str, Any] = next(
        (c for c in dig(pod, "status", "containerStatuses", default=[]) if c.get("name") == CONTAINER), {}
    )
    total = 0.0
    for state in (status.get("state") or {}, status.get("lastState") or {}):
        term = state.get("terminated")
        if term and k8s_time(term.get("startedAt")):
            start = max(k8s_time(term.get("startedAt")), since or 0.0)
            total += max(0.0, k8s_time(term.get("finishedAt")) - start)
        running = state.get("running")
        if running and k8s_time(running.get("startedAt")):
            end = k8s_time(dig(pod, "metadata", "deletionTimestamp")) or now
            total += max(0.0, end - max(k8s_time(running.get("startedAt")), since or 0.0))
    return total


def pod_resources(pod: Mapping[str, Any], profile: Profile) -> dict[str, float]:
    """What the task container asked for: ``cpu`` cores, ``memory_gib``, and ``gpu.<TYPE>`` (or ``gpu``) GPUs."""
    spec: Mapping[str, Any] = next(
        (c for c in dig(pod, "spec", "containers", default=[]) if c.get("name") == CONTAINER), {}
    )
    requests = dig(spec, "resources", "requests", default={})
    limits = dig(spec, "resources", "limits", default={})
    out: dict[str, float] = {}
    cpu = requests.get("cpu") or limits.get("cpu")
    if cpu:
        out["cpu"] = quantity(cpu)
    memory = requests.get("memory") or limits.get("memory")
    if memory:
        out["memory_gib"] = quantity(memory) / 2**30
    selector = dig(pod, "spec", "nodeSelector", default={})
    kinds = [g for g in profile.gpus.values() if g.node_selector and all(selector.get(k) == v
                                                                         for k, v in g.node_selector.items())]  # fmt: skip
    resources = {g.resource for g in profile.gpus.values()} | {"nvidia.com/gpu"}
    for resource in sorted(resources):
        count = limits.get(resource)
        if count and str(count).isdigit() and int(count) > 0:
            kind = next((g.name for g in kinds if g.resource == resource), None)
            key = f"gpu.{kind}" if kind else "gpu"
            out[key] = out.get(key, 0.0) + int(count)
    return out


def run_usage(run_id: str, pods: Iterable[Mapping[str, Any]], profile: Profile, now: float | None = None,
              since: float | None = None) -> Usage:  # fmt: skip
    """The :class:`Usage` of a run from the last state seen of each of its pods (never raises: the run's end
    follows it; what could not be measured is said in its ``source``). ``since``: a run handed to a warm
    worker counts from then (the pod's earlier runs and idle time are not this run's)."""
    try:
        return _run_usage(run_id, pods, profile, now, since)
    except Exception as exc:  # (a pod object of a shape no API server sends)
        return Usage(run_id, (), source=f"pods; not measured: {type(exc).__name__}: {exc}")


def _run_usage(run_id: str, pods: Iterable[Mapping[str, Any]], profile: Profile, now: float | None,
               since: float | None) -> Usage:  # fmt: skip
    now = time.time() if now is None else now
    total: dict[str, float] = {}
    unread: list[str] = []
    for pod in pods:
        seconds = container_seconds(pod, now, since) if pod else 0.0
        if seconds <= 0:
            continue
        try:
            asked = pod_resources(pod, profile)
        except BackendError as exc:  # (said in the record's usage_source; the run still ends as it should)
            unread.append(f"{dig(pod, 'metadata', 'name')}: {exc}")
            continue
        for key, amount in asked.items():
            total[key] = total.get(key, 0.0) + amount * seconds
    source = "pods" + (f"; not counted: {'; '.join(unread[:3])}" if unread else "")
    return Usage(run_id, tuple(sorted((k, round(v, 3)) for k, v in total.items())), source=source)
