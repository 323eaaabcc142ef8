"""Admission of pod creations: ResourceQuota (as the ResourceQuota admission plugin and the pod quota evaluator
of kube-apiserver do) and injected denials (a quota message or a validating webhook's). A denied pod is never
stored; the caller (the HTTP client, or the Job controller) gets the error.

Also the resource-quota controller's part that fills ResourceQuota status.hard / status.used.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from . import errors
from .controller import Controller
from .resources import PODS, RESOURCEQUOTAS, Resource
from .store import Change
from .util import Obj, format_quantity, get_path, parse_quantity, parse_time

if TYPE_CHECKING:
    from .cluster import FakeCluster

# If a quota tracks cpu or memory, every container must state it ("a mistake" kept for compatibility upstream).
_VALIDATION_SET = {"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"}
_POD_RESOURCES = {"count/pods", "pods", "cpu", "memory", "ephemeral-storage", "requests.cpu", "requests.memory",
                  "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage"}


@dataclass
class PodDenial:
    reason: str                       # "quota" | "webhook"
    message: str | None = None
    remaining: int | None = None      # None: until cleared
    namespace: str | None = None
    webhook: str = "policy.example.com"
    code: int = 403
    hits: int = 0

    def __post_init__(self) -> None:
        if self.reason not in ("quota", "webhook"):
            raise ValueError("reason must be 'quota' or 'webhook'")

    def error(self, name: str) -> errors.ApiError:
        if self.reason == "quota":
            msg = self.message or ("exceeded quota: fakekube-quota, requested: pods=1, used: pods=0, "
                                   "limited: pods=0")
            return _forbidden(name, msg)
        text = self.message or "pod rejected by policy"
        reason = {400: "BadRequest", 403: "Forbidden", 422: "Invalid"}.get(self.code, "")
        return errors.ApiError(self.code, reason, f'admission webhook "{self.webhook}" denied the request: {text}')


def _forbidden(name: str, message: str) -> errors.ApiError:
    return errors.ApiError(403, "Forbidden", f'pods "{name}" is forbidden: {message}', {"name": name, "kind": "pods"})


def quota_object(name: str, hard: dict[str, Any]) -> Obj:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
            "spec": {"hard": {k: str(v) for k, v in hard.items()}}}


def _is_extended(resource: str) -> bool:
    return "/" in resource and not resource.startswith(("kubernetes.io/", "requests.", "limits."))


def _container_usage(c: Obj) -> dict[str, Fraction]:
    """podComputeUsageHelper for one container: which quota names it states."""
    req = get_path(c, "resources", "requests", default={}) or {}
    lim = get_path(c, "resources", "limits", default={}) or {}
    out: dict[str, Fraction] = {"pods": Fraction(1)}
    for r in ("cpu", "memory", "ephemeral-storage"):
        if r in req:
            out[r] = out[f"requests.{r}"] = parse_quantity(req[r])
        if r in lim:
            out[f"limits.{r}"] = parse_quantity(lim[r])
    for r, v in req.items():
        if _is_extended(r) or r.startswith("hugepages-"):
            out[f"requests.{r}"] = parse_quantity(v)
    return out


def _pod_totals(pod: Obj, key: str) -> dict[str, Fraction]:
    """PodRequests / PodLimits: sum of containers, max with each init container, plus overhead."""
    spec = pod.get("spec") or {}
    out: dict[str, Fraction] = {}
    for c in spec.get("containers") or []:
        for k, v in (get_path(c, "resources", key, default={}) or {}).items():
            out[k] = out.get(k, Fraction(0)) + parse_quantity(v)
    for c in spec.get("initContainers") or []:
        for k, v in (get_path(c, "resources", key, default={}) or {}).items():
            out[k] = max(out.get(k, Fraction(0)), parse_quantity(v))
    for k, v in (spec.get("overhead") or {}).items():
        out[k] = out.get(k, Fraction(0)) + parse_quantity(v)
    return out


def charged(pod: Obj, now: float | None = None) -> bool:
    """QuotaV1Pod: terminal pods, and pods past their deletion grace, are not charged."""
    if get_path(pod, "status", "phase") in ("Succeeded", "Failed"):
        return False
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds") is not None:
        end = parse_time(meta["deletionTimestamp"]) + int(meta["deletionGracePeriodSeconds"])
        if (now or time.time()) > end:
            return False
    return True


def pod_usage(pod: Obj) -> dict[str, Fraction]:
    """PodUsageFunc: the quota usage of one pod."""
    usage: dict[str, Fraction] = {"count/pods": Fraction(1)}
    if not charged(pod):
        return usage
    requests, limits = _pod_totals(pod, "requests"), _pod_totals(pod, "limits")
    usage["pods"] = Fraction(1)
    for r in ("cpu", "memory", "ephemeral-storage"):
        if r in requests:
            usage[r] = usage[f"requests.{r}"] = requests[r]
        if r in limits:
            usage[f"limits.{r}"] = limits[r]
    for r, v in requests.items():
        if _is_extended(r) or r.startswith("hugepages-"):
            usage[f"requests.{r}"] = v
    return usage


def _tracked(resource: str) -> bool:
    """MatchingResources of the pod evaluator: the quota names pods count against."""
    if resource in _POD_RESOURCES or resource.startswith(("hugepages-", "requests.hugepages-")):
        return True
    return resource.startswith("requests.") and _is_extended(resource[len("requests."):])


def fmt(resource: str, value: Fraction) -> str:
    """Quantity.String() for the values quota messages print."""
    if "memory" in resource or "storage" in resource or "hugepages" in resource:
        return format_quantity(value, "memory")
    if resource.endswith("cpu"):
        return format_quantity(value, "cpu")
    return str(int(value)) if value.denominator == 1 else format_quantity(value, "cpu")


def _pretty(values: dict[str, Fraction]) -> str:
    return ",".join(f"{k}={fmt(k, values[k])}" for k in sorted(values))


class Admission:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.lock = threading.Lock()
        self.denials: list[PodDenial] = []
        self.quotas_made: set[tuple[str, str]] = set()

    def add_denial(self, denial: PodDenial) -> None:
        with self.lock:
            self.denials.append(denial)

    def clear(self) -> list[tuple[str, str]]:
        """Drop the denials; returns the quotas quota() made (for the caller to delete)."""
        with self.lock:
            self.denials.clear()
            made, self.quotas_made = sorted(self.quotas_made), set()
        return made

    def usage(self, namespace: str) -> dict[str, Fraction]:
        total: dict[str, Fraction] = {}
        for p in self.cluster.store.list(PODS.key, namespace, copy=False)[0]:
            for k, v in pod_usage(p).items():
                total[k] = total.get(k, Fraction(0)) + v
        return total

    def admit(self, res: Resource, obj: Obj) -> None:
        """Called by Api.create under the store lock, after defaults, with the generated name set."""
        if res is not PODS:
            return
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        with self.lock:
            for d in self.denials:
                if (d.remaining is None or d.remaining > 0) and d.namespace in (None, ns):
                    if d.remaining is not None:
                        d.remaining -= 1
                    d.hits += 1
                    raise d.error(name)
        quotas = [q for q in self.cluster.store.list(RESOURCEQUOTAS.key, ns, copy=False)[0]
                  if not get_path(q, "spec", "scopes") and not get_path(q, "spec", "scopeSelector")]
        if not quotas:
            return
        used = self.usage(ns)
        delta = pod_usage(obj)
        for q in sorted(quotas, key=lambda q: q["metadata"]["name"]):
            hard = {k: parse_quantity(v) for k, v in (get_path(q, "spec", "hard", default={}) or {}).items()
                    if _tracked(k)}
            if not hard:
                continue
            qname = q["metadata"]["name"]
            required = set(hard) & _VALIDATION_SET
            missing: dict[str, list[str]] = {}
            spec = obj.get("spec") or {}
            for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                for r in sorted(required - set(_container_usage(c))):
                    missing.setdefault(r, []).append(c["name"])
            if missing:
                parts = [f"{r} for: {','.join(sorted(set(names)))}" for r, names in sorted(missing.items())]
                raise _forbidden(name, f"failed quota: {qname}: must specify {'; '.join(parts)}")
            requested = {k: v for k, v in delta.items() if k in hard}
            exceeded = [k for k, v in requested.items() if used.get(k, Fraction(0)) + v > hard[k]]
            if exceeded:
                raise _forbidden(name, f"exceeded quota: {qname}, requested: "
                                 f"{_pretty({k: requested[k] for k in exceeded})}, used: "
                                 f"{_pretty({k: used.get(k, Fraction(0)) for k in exceeded})}, limited: "
                                 f"{_pretty({k: hard[k] for k in exceeded})}")


class QuotaController(Controller):
    """Keeps status.hard / status.used of every ResourceQuota up to date (per namespace)."""

    name = "resourcequota-controller"

    def on_change(self, change: Change) -> None:
        if change.resource in (PODS.key, RESOURCEQUOTAS.key):
            self.enqueue(change.obj["metadata"].get("namespace") or "", 0.05 if change.resource == PODS.key else 0)

    def reconcile(self, key: Any) -> None:
        ns = key
        quotas = self.store.list(RESOURCEQUOTAS.key, ns, copy=False)[0]
        if not quotas:
            return
        used = self.cluster.admission.usage(ns)
        for q in quotas:
            hard = dict(get_path(q, "spec", "hard", default={}) or {})
            status = {"hard": hard, "used": {k: fmt(k, used.get(k, Fraction(0))) for k in hard if _tracked(k)}}
            if q.get("status") != status:
                self.api.mutate(RESOURCEQUOTAS, ns, q["metadata"]["name"], _setter("status", status),
                                uid=q["metadata"]["uid"])


def _setter(key: str, value: Any) -> Callable[[Obj], None]:
    def put(obj: Obj) -> None:
        obj[key] = value
    return put
