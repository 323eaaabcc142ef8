"""default-scheduler over the fake nodes, plus an optional cluster-autoscaler knob.

Filters run in the real plugin order (NodeUnschedulable, TaintToleration,
NodeAffinity, NodeResourcesFit); the first failing filter gives a node's
reasons, and the FailedScheduling message is built like the real FitError.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from .controller import Controller
from .nodes import NodeSpec, node_object
from .resources import NODES, PODS
from .store import Change
from .util import Obj, get_path, parse_quantity, set_condition

if TYPE_CHECKING:
    from .cluster import FakeCluster

UNRESOLVABLE = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"


@dataclass
class NodeGroup:
    """An autoscaler node group: new nodes are copies of `template` named `<name>-<n>`."""

    name: str
    template: NodeSpec
    max_size: int = 3
    size: int = 0


@dataclass
class Autoscaler:
    node_groups: list[NodeGroup] = field(default_factory=list)
    scale_up_delay: float = 0.5


def pod_requests(pod: Obj) -> dict[str, Fraction]:
    """Effective requests: sum over containers, max with each init container, plus overhead."""
    spec = pod.get("spec") or {}

    def reqs(c: Obj) -> dict[str, Fraction]:
        res = c.get("resources") or {}
        merged = dict(res.get("limits") or {})
        merged.update(res.get("requests") or {})   # limits count as requests when requests are absent
        return {k: parse_quantity(v) for k, v in merged.items()}

    out: dict[str, Fraction] = {}
    for c in spec.get("containers") or []:
        for k, v in reqs(c).items():
            out[k] = out.get(k, Fraction(0)) + v
    for c in spec.get("initContainers") or []:
        for k, v in reqs(c).items():
            out[k] = max(out.get(k, Fraction(0)), v)
    for k, v in (spec.get("overhead") or {}).items():
        out[k] = out.get(k, Fraction(0)) + parse_quantity(v)
    return out


def tolerates(tolerations: list[Obj], taint: Obj) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _expr_match(expr: Obj, labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    present, value = key in labels, labels.get(key or "")
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            return int(value or "") > int(values[0]) if op == "Gt" else int(value or "") < int(values[0])
        except ValueError:
            return False
    return False


def affinity_match(pod: Obj, node: Obj) -> bool:
    labels = get_path(node, "metadata", "labels", default={})
    for k, v in (get_path(pod, "spec", "nodeSelector", default={}) or {}).items():
        if labels.get(k) != v:
            return False
    terms = get_path(pod, "spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                     "nodeSelectorTerms", default=None)
    if terms:
        name = node["metadata"]["name"]
        fields = {"metadata.name": name}
        return any(all(_expr_match(e, labels) for e in t.get("matchExpressions") or [])
                   and all(_expr_match(e, fields) for e in t.get("matchFields") or []) for t in terms)
    return True


def filter_node(pod: Obj, node: Obj, used: dict[str, Fraction], used_pods: int) -> tuple[list[str], str]:
    """([] , "") when the pod fits, else (reasons, preemption category)."""
    if get_path(node, "spec", "unschedulable"):
        return ["node(s) were unschedulable"], UNRESOLVABLE
    tolerations = get_path(pod, "spec", "tolerations", default=[])
    for taint in get_path(node, "spec", "taints", default=[]):
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"], UNRESOLVABLE
    if not affinity_match(pod, node):
        return ["node(s) didn't match Pod's node affinity/selector"], UNRESOLVABLE
    alloc = {k: parse_quantity(v) for k, v in get_path(node, "status", "allocatable", default={}).items()}
    reasons = []
    if used_pods + 1 > alloc.get("pods", Fraction(110)):
        reasons.append("Too many pods")
    for res, amount in sorted(pod_requests(pod).items()):
        if amount > 0 and used.get(res, Fraction(0)) + amount > alloc.get(res, Fraction(0)):
            reasons.append(f"Insufficient {res}")
    return reasons, (NO_VICTIMS if reasons else "")


def fit_message(total: int, results: list[tuple[list[str], str]]) -> str:
    if total == 0:
        return "no nodes available to schedule pods"
    reasons: Counter[str] = Counter(r for rs, _ in results for r in rs)
    cats: Counter[str] = Counter(c for _, c in results)
    msg = f"0/{total} nodes are available: " + ", ".join(sorted(f"{n} {r}" for r, n in reasons.items())) + "."
    msg += f" preemption: 0/{total} nodes are available: " + ", ".join(sorted(f"{n} {c}" for c, n in cats.items()))
    return msg + "."


class Scheduler(Controller):
    name = "scheduler"

    def __init__(self, cluster: FakeCluster, autoscaler: Autoscaler | None = None) -> None:
        super().__init__(cluster)
        self.autoscaler = autoscaler
        self._pending: set[tuple[str, str]] = set()
        self._scaling: set[str] = set()
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []

    def stop(self) -> None:
        with self._lock:
            timers, self._timers = self._timers, []
        for t in timers:   # pending scale-ups: no thread outlives the cluster
            t.cancel()
            if t is not threading.current_thread():
                t.join(timeout=2)
        super().stop()

    def on_change(self, change: Change) -> None:
        obj = change.obj
        if change.resource == NODES.key:
            self._enqueue_pending()
            return
        if change.resource != PODS.key:
            return
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if change.type != "DELETED" and not get_path(obj, "spec", "nodeName"):
            with self._lock:
                self._pending.add(key)
            if change.type == "ADDED":
                self.enqueue(key)
            return
        with self._lock:
            self._pending.discard(key)
        if not get_path(obj, "spec", "nodeName"):
            return
        terminal = get_path(obj, "status", "phase") in ("Succeeded", "Failed")
        was_terminal = get_path(change.old, "status", "phase") in ("Succeeded", "Failed")
        if change.type == "DELETED" or (terminal and not was_terminal):
            self._enqueue_pending()

    def _enqueue_pending(self) -> None:
        with self._lock:
            keys = list(self._pending)
        for k in keys:
            self.enqueue(k, 0.01)

    def usage(self) -> tuple[dict[str, dict[str, Fraction]], dict[str, int]]:
        used: dict[str, dict[str, Fraction]] = {}
        counts: dict[str, int] = {}
        pods, _ = self.store.list(PODS.key, copy=False, where=lambda p: bool(get_path(p, "spec", "nodeName")))
        for p in pods:
            node = get_path(p, "spec", "nodeName")
            if not node or get_path(p, "status", "phase") in ("Succeeded", "Failed"):
                continue
            acc = used.setdefault(node, {})
            for k, v in pod_requests(p).items():
                acc[k] = acc.get(k, Fraction(0)) + v
            counts[node] = counts.get(node, 0) + 1
        return used, counts

    def reconcile(self, key: Any) -> None:
        ns, name = key
        pod = self.store.get(PODS.key, ns, name)
        if (pod is None or get_path(pod, "spec", "nodeName") or pod["metadata"].get("deletionTimestamp")
                or get_path(pod, "spec", "schedulerName", default="default-scheduler") != "default-scheduler"):
            return
        nodes, _ = self.store.list(NODES.key, copy=False)
        used, counts = self.usage()
        results: list[tuple[list[str], str]] = []
        feasible: list[tuple[float, str]] = []
        for node in nodes:
            n = node["metadata"]["name"]
            reasons, cat = filter_node(pod, node, used.get(n, {}), counts.get(n, 0))
            results.append((reasons, cat))
            if not reasons:
                feasible.append((self._score(pod, node, used.get(n, {})), n))
        if feasible:
            feasible.sort()
            self._bind(pod, feasible[0][1])
            return
        message = fit_message(len(nodes), results)

        def unschedulable(p: Obj) -> None:
            conds = p.setdefault("status", {}).setdefault("conditions", [])
            set_condition(conds, "PodScheduled", "False", "Unschedulable", message, probe=False)
            for c in conds:
                if c["type"] == "PodScheduled":
                    c["lastProbeTime"] = None
        self.api.mutate(PODS, ns, name, unschedulable, uid=pod["metadata"]["uid"])
        self.cluster.events.record(pod, "FailedScheduling", message, component="default-scheduler",
                                   type="Warning")
        if self.autoscaler is not None:
            self._autoscale(pod)

    @staticmethod
    def _score(pod: Obj, node: Obj, used: dict[str, Fraction]) -> float:
        """LeastAllocated: prefer the node with the lowest requested fraction of cpu and memory."""
        alloc = get_path(node, "status", "allocatable", default={})
        req = pod_requests(pod)
        total = 0.0
        for r in ("cpu", "memory"):
            cap = parse_quantity(alloc.get(r, "0"))
            if cap:
                total += float((used.get(r, Fraction(0)) + req.get(r, Fraction(0))) / cap)
        return total

    def _bind(self, pod: Obj, node: str) -> None:
        meta = pod["metadata"]

        def bind(p: Obj) -> Any:
            if get_path(p, "spec", "nodeName"):
                return False
            p["spec"]["nodeName"] = node
            conds = p.setdefault("status", {}).setdefault("conditions", [])
            set_condition(conds, "PodScheduled", "True")
            for c in conds:
                if c["type"] == "PodScheduled":
                    c["lastProbeTime"] = None
            return None
        if self.api.mutate(PODS, meta["namespace"], meta["name"], bind, uid=meta["uid"]) is not None:
            self.cluster.events.record(pod, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} "
                                       f"to {node}", component="default-scheduler", action="Binding")

    # -- cluster-autoscaler -------------------------------------------------------------
    def _autoscale(self, pod: Obj) -> None:
        assert self.autoscaler is not None
        uid = pod["metadata"]["uid"]
        if uid in self._scaling:
            return
        reasons: Counter[str] = Counter()
        for group in self.autoscaler.node_groups:
            if group.size >= group.max_size:
                reasons["max node group size reached"] += 1
                continue
            template = node_object(group.template, 0)
            rs, _ = filter_node(pod, template, {}, 0)
            if rs:
                reasons.update(rs)
                continue
            self._scaling.add(uid)
            group.size += 1
            msg = f"pod triggered scale-up: [{{{group.name} {group.size - 1}->{group.size} (max: {group.max_size})}}]"
            self.cluster.events.record(pod, "TriggeredScaleUp", msg, component="cluster-autoscaler")
            spec = NodeSpec(**{**group.template.__dict__, "name": f"{group.name}-{group.size}"})
            timer = threading.Timer(self.autoscaler.scale_up_delay, self._add_node, (spec,))
            timer.daemon = True
            with self._lock:
                self._timers = [t for t in self._timers if t.is_alive()] + [timer]
            timer.start()
            return
        detail = ", ".join(sorted(f"{n} {r}" for r, n in reasons.items()))
        self.cluster.events.record(pod, "NotTriggerScaleUp", f"pod didn't trigger scale-up: {detail}",
                                   component="cluster-autoscaler")

    def _add_node(self, spec: NodeSpec) -> None:
        if not self.cluster.stopped:
            self.cluster.add_node(spec)
