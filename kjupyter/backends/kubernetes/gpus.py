"""How many GPUs of each configured type a cluster has, and how many are free right now.

Two reads: the nodes (cluster-wide ``list nodes``), then the pods that are not terminated
(``status.phase`` neither Succeeded nor Failed, in every namespace), as ``kubectl describe node``
counts a node's "Allocated resources". A node's GPU type is the profile's: a node matches type T
when it has every label of T's ``node_selector``; with no selector, its ``nvidia.com/gpu.product``
label (set by NVIDIA's GPU feature discovery) names T. Free = allocatable minus what the
non-terminated pods on the node request (limits count as requests for extended resources).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kjupyter.backends.base import GpuCount, GpuReport
from kjupyter.backends.kubernetes.client import Kube
from kjupyter.config import GpuType, Profile
from kjupyter.errors import ApiError, KjupyterError

PRODUCT_LABEL = "nvidia.com/gpu.product"
NOT_TERMINATED = "status.phase!=Succeeded,status.phase!=Failed"


def node_gpu_type(node: Mapping[str, Any], gpus: Mapping[str, GpuType]) -> str | None:
    """The configured GPU type of ``node`` (None: it matches none)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    for name, gpu in gpus.items():
        if gpu.node_selector and all(labels.get(k) == v for k, v in gpu.node_selector.items()):
            return name
    product = str(labels.get(PRODUCT_LABEL, "")).lower()
    for name, gpu in gpus.items():
        if not gpu.node_selector and product and name.lower() in product:
            return name
    return None


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def pod_gpus(pod: Mapping[str, Any], resource: str) -> int:
    """What a pod requests of ``resource``: its containers' sum, at least its largest init container's."""
    spec = pod.get("spec") or {}

    def ask(c: Mapping[str, Any]) -> int:
        res = c.get("resources") or {}
        return _quantity((res.get("requests") or {}).get(resource, (res.get("limits") or {}).get(resource, 0)))

    main = sum(ask(c) for c in spec.get("containers") or [])
    return max([main, *(ask(c) for c in spec.get("initContainers") or [])])


def count(profile: Profile, nodes: list[dict[str, Any]], pods: list[dict[str, Any]] | None) -> tuple[GpuCount, ...]:
    """Per configured type: nodes, allocatable and free GPUs (free None when ``pods`` could not be read)."""
    held: dict[str, dict[str, int]] = {}
    for pod in pods or []:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            for resource in {gpu.resource for gpu in profile.gpus.values()}:
                held.setdefault(node, {}).setdefault(resource, 0)
                held[node][resource] += pod_gpus(pod, resource)
    out = []
    for name, gpu in profile.gpus.items():
        mine = [n for n in nodes if node_gpu_type(n, profile.gpus) == name]
        alloc = {n["metadata"]["name"]: _quantity(((n.get("status") or {}).get("allocatable") or {}).get(gpu.resource, 0))
                 for n in mine}  # fmt: skip
        free = None if pods is None else sum(max(0, a - held.get(node, {}).get(gpu.resource, 0))
                                             for node, a in alloc.items())  # fmt: skip
        out.append(GpuCount(name, len(mine), sum(alloc.values()), free))
    return tuple(out)


def gpu_report(kube: Kube, profile: Profile) -> GpuReport:
    """The profile's GPU types and counts; without the right to list nodes, its configuration and why."""
    configured = tuple(profile.gpus)
    if not configured:
        return GpuReport(profile.name, configured, (), "no GPU types configured")
    try:
        nodes = kube.call("list nodes", kube.core.list_node).get("items") or []
    except ApiError as exc:
        if exc.status not in (401, 403):
            raise
        return GpuReport(profile.name, configured, None,
                         f"your account may not list nodes on {profile.name!r} (403), so its free GPUs are unknown; "
                         f"its configuration offers {', '.join(configured)}")  # fmt: skip
    note = ""
    pods: list[dict[str, Any]] | None
    try:
        pods = kube.call("list pods in all namespaces", kube.core.list_pod_for_all_namespaces,
                         field_selector=NOT_TERMINATED).get("items") or []  # fmt: skip
    except ApiError as exc:
        if exc.status not in (401, 403):
            raise
        pods, note = None, (f"your account may not list pods in all namespaces on {profile.name!r} (403), so only "
                            "allocatable GPUs are counted, not free ones")  # fmt: skip
    return GpuReport(profile.name, configured, count(profile, nodes, pods), note)


def safe_report(kube_of: Any, profile: Profile) -> GpuReport:
    """:func:`gpu_report`, or the configuration and one sentence when the cluster cannot be reached."""
    try:
        return gpu_report(kube_of(), profile)
    except KjupyterError as exc:
        return GpuReport(profile.name, tuple(profile.gpus), None,
                         f"cluster {profile.name!r} could not be asked ({str(exc).rstrip('.')}); its configuration "
                         f"offers {', '.join(profile.gpus) or 'no GPU type'}")  # fmt: skip
