"""Pod disruptions as the real components cause them: node loss (pod GC), node-pressure eviction (kubelet)
and preemption (kube-scheduler)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .resources import NODES, PODS
from .util import Obj, get_path, new_uid, set_condition

if TYPE_CHECKING:
    from .cluster import FakeCluster

EVICTION_MESSAGE = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. "
PODGC_MESSAGE = "PodGC: node no longer exists"


def remove_node(cluster: FakeCluster, name: str, how: str = "gone") -> None:
    """how="gone": the Node is deleted, its pods fail with DisruptionTarget/DeletionByPodGC and are deleted.
    how="evicted": the node stays (MemoryPressure, tainted), its pods fail with reason Evicted."""
    if how not in ("gone", "evicted"):
        raise ValueError("how must be 'gone' or 'evicted'")
    pods = [p for p in cluster.store.list(PODS.key)[0] if get_path(p, "spec", "nodeName") == name]
    if how == "gone":
        cluster.store.remove(NODES.key, "", name)
    else:
        def pressure(n: Obj) -> None:
            set_condition(n["status"]["conditions"], "MemoryPressure", "True", "KubeletHasInsufficientMemory",
                          "kubelet has insufficient memory available")
            n["spec"].setdefault("taints", []).append(
                {"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"})
        cluster.api.mutate(NODES, None, name, pressure)
    cluster.kubelet.lose_node(name)
    message = PODGC_MESSAGE if how == "gone" else EVICTION_MESSAGE
    for p in pods:
        if get_path(p, "status", "phase") in ("Succeeded", "Failed"):
            continue
        meta = p["metadata"]

        def fail(pod: Obj) -> None:
            st = pod.setdefault("status", {})
            st["phase"] = "Failed"
            conds = st.setdefault("conditions", [])
            set_condition(conds, "DisruptionTarget", "True",
                          "DeletionByPodGC" if how == "gone" else "TerminationByKubelet", message.strip())
            for ctype in ("Ready", "ContainersReady"):
                set_condition(conds, ctype, "False", "PodFailed")
            if how == "evicted":
                st["reason"], st["message"] = "Evicted", message
                for cs in st.get("containerStatuses") or []:
                    if "running" in cs.get("state", {}):
                        cs["state"] = {"terminated": {"exitCode": 137, "reason": "Error",
                                                      "startedAt": cs["state"]["running"].get("startedAt"),
                                                      "finishedAt": get_path(conds, 0, "lastTransitionTime")}}
                        cs["ready"] = cs["started"] = False
        cluster.api.mutate(PODS, meta["namespace"], meta["name"], fail, uid=meta["uid"])
        if how == "evicted":
            cluster.events.record(p, "Evicted", message, component="kubelet", host=name, type="Warning")
        else:
            cluster.api.delete(PODS, meta["namespace"], meta["name"], grace=0)


def preempt(cluster: FakeCluster, pod_name: str, namespace: str = "default", by: str | None = None) -> Obj:
    """Preempt a bound pod as kube-scheduler does for a higher-priority pod: condition DisruptionTarget
    (reason PreemptionByScheduler), a graceful delete with the pod's own grace period, and a `Preempted` event.
    `by`: name of the preemptor pod in the same namespace (its uid goes into the event), else a made-up one."""
    pod = cluster.api.get(PODS, namespace, pod_name)
    node = get_path(pod, "spec", "nodeName")
    if not node:
        raise ValueError(f"pod {namespace}/{pod_name} is not bound to a node: nothing to preempt")
    preemptor = cluster.store.get(PODS.key, namespace, by) if by else None
    preemptor_uid = preemptor["metadata"]["uid"] if preemptor else new_uid()
    scheduler = get_path(preemptor or pod, "spec", "schedulerName", default="default-scheduler")
    message = f"{scheduler}: preempting to accommodate a higher priority pod"

    def mark(p: Obj) -> None:
        conds = p.setdefault("status", {}).setdefault("conditions", [])
        set_condition(conds, "DisruptionTarget", "True", "PreemptionByScheduler", message)
    cluster.api.mutate(PODS, namespace, pod_name, mark, uid=pod["metadata"]["uid"])
    result, _ = cluster.api.delete(PODS, namespace, pod_name, uid=pod["metadata"]["uid"])
    cluster.events.record(pod, "Preempted", f"Preempted by pod {preemptor_uid} on node {node}",
                          component="default-scheduler", action="Preempting", related=preemptor)
    return result
