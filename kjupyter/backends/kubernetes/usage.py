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
from kjupyter.errors import SpecError
from kjupyter.run_events import Usage
from kjupyter.spec import parse_cpu, parse_memory


def container_seconds(pod: Mapping[str, Any], now: float) -> float:
    """How long the task container ran, in seconds, over its attempts in this pod."""
    status: Mapping[str, Any] = next(
        (c for c in dig(pod, "status", "containerStatuses", default=[]) if c.get("name") == CONTAINER), {}
    )
    total = 0.0
    for state in (status.get("state") or {}, status.get("lastState") or {}):
        term = state.get("terminated")
        if term and k8s_time(term.get("startedAt")):
            total += max(0.0, k8s_time(term.get("finishedAt")) - k8s_time(term.get("startedAt")))
        running = state.get("running")
        if running and k8s_time(running.get("startedAt")):
            end = k8s_time(dig(pod, "metadata", "deletionTimestamp")) or now
            total += max(0.0, end - k8s_time(running.get("startedAt")))
    return total


def pod_resources(pod: Mapping[str, Any], profile: Profile) -> dict[str, float]:
    """What the task container asked for: ``cpu`` cores, ``memory_gib``, and ``gpu.<TYPE>`` (or ``gpu``) GPUs."""
    spec: Mapping[str, Any] = next(
        (c for c in dig(pod, "spec", "containers", default=[]) if c.get("name") == CONTAINER), {}
    )
    requests = dig(spec, "resources", "requests", default={})
    limits = dig(spec, "resources", "limits", default={})
    out: dict[str, float] = {}
    try:
        cpu = requests.get("cpu") or limits.get("cpu")
        if cpu:
            out["cpu"] = parse_cpu(str(cpu)) / 1000
        memory = requests.get("memory") or limits.get("memory")
        if memory:
            out["memory_gib"] = parse_memory(str(memory)) / 2**30
    except SpecError:
        pass  # (a quantity this parser does not read, such as "1e3": that resource is not counted)
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


def run_usage(run_id: str, pods: Iterable[Mapping[str, Any]], profile: Profile, now: float | None = None) -> Usage:
    """The :class:`Usage` of a run from the last state seen of each of its pods."""
    now = time.time() if now is None else now
    total: dict[str, float] = {}
    for pod in pods:
        seconds = container_seconds(pod, now) if pod else 0.0
        if seconds <= 0:
            continue
        for key, amount in pod_resources(pod, profile).items():
            total[key] = total.get(key, 0.0) + amount * seconds
    return Usage(run_id, tuple(sorted((k, round(v, 3)) for k, v in total.items())), source="pods")
