"""Fake nodes: their specification and the Node objects the API serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .util import Obj, now_iso

GPU = "nvidia.com/gpu"


@dataclass
class NodeSpec:
    """A fake node. `gpu` is the number of `nvidia.com/gpu` devices; `extra` adds other extended resources."""

    name: str
    cpu: str | int = "4"
    memory: str = "16Gi"
    gpu: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    pods: int = 110
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def coerce(cls, value: NodeSpec | dict[str, Any] | str) -> NodeSpec:
        if isinstance(value, NodeSpec):
            return value
        if isinstance(value, str):
            return cls(name=value)
        data = dict(value)
        if GPU in data:
            data["gpu"] = int(data.pop(GPU))
        return cls(**data)


def default_nodes() -> list[NodeSpec]:
    return [NodeSpec(f"node-{i}", cpu="4", memory="16Gi") for i in (1, 2, 3)]


def node_object(spec: NodeSpec, index: int) -> Obj:
    capacity: dict[str, str] = {"cpu": str(spec.cpu), "memory": spec.memory, "pods": str(spec.pods),
                                "ephemeral-storage": "100Gi"}
    if spec.gpu:
        capacity[GPU] = str(spec.gpu)
    capacity.update(spec.extra)
    labels = {"kubernetes.io/hostname": spec.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
              "node.kubernetes.io/instance-type": "fake"}
    labels.update(spec.labels)
    now = now_iso()
    conditions = [
        {"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": now,
         "lastTransitionTime": now}
        for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))
    ]
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                       "lastTransitionTime": now})
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {"taints": [dict(t) for t in spec.taints]} if spec.taints else {},
        "status": {
            "capacity": capacity, "allocatable": dict(capacity), "conditions": conditions,
            # Loopback addresses: the "pods" are local processes, so these are reachable and safe.
            "addresses": [{"type": "InternalIP", "address": f"127.0.1.{index + 1}"},
                          {"type": "Hostname", "address": spec.name}],
            "nodeInfo": {"kubeletVersion": "", "containerRuntimeVersion": "fakekube://1", "operatingSystem": "linux",
                         "architecture": "amd64", "osImage": "fakekube", "kernelVersion": "", "machineID": "",
                         "systemUUID": "", "bootID": "", "kubeProxyVersion": ""},
        },
    }


def node_ip(node: Obj) -> str:
    for a in node.get("status", {}).get("addresses", []):
        if a.get("type") == "InternalIP":
            return str(a["address"])
    return "127.0.0.1"
