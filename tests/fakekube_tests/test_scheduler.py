"""default-scheduler emulation: resources, selectors, taints, retries, autoscaler events."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakekube import Autoscaler, NodeGroup, NodeSpec
from tests.fakekube.cluster import FakeCluster

from .helpers import job_finished, pod


def scheduled_condition(fake_cluster: FakeCluster, name: str) -> dict[str, Any] | None:
    p = fake_cluster.get("pods", name)
    for c in (p or {}).get("status", {}).get("conditions", []):
        if c["type"] == "PodScheduled":
            return dict(c)
    return None


def test_gpu_pod_stays_pending_with_real_condition_and_event(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod("gpu", container={"resources": {"limits": {"nvidia.com/gpu": "1"}}}))
    cond = fake_cluster.wait_for(lambda: scheduled_condition(fake_cluster, "gpu"))
    expected = ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
                "3 No preemption victims found for incoming pod.")
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Unschedulable", expected)
    p = k8s.core.read_namespaced_pod("gpu", "default")
    assert p.status.phase == "Pending" and p.spec.node_name is None
    assert p.spec.containers[0].resources.requests == {"nvidia.com/gpu": "1"}   # limits defaulted into requests
    (ev,) = k8s.core.list_namespaced_event("default", field_selector="involvedObject.name=gpu").items
    assert (ev.type, ev.reason, ev.message) == ("Warning", "FailedScheduling", expected)
    assert ev.source.component == ev.reporting_component == "default-scheduler"
    assert ev.involved_object.kind == "Pod" and ev.involved_object.uid == p.metadata.uid


@pytest.mark.fake_cluster(nodes=[
    {"name": "cpu-1"},
    {"name": "gpu-1", "gpu": 2, "labels": {"accel": "a100"},
     "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
])
def test_selectors_taints_and_tolerations(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod("sel", nodeSelector={"accel": "h100"}))
    cond = fake_cluster.wait_for(lambda: scheduled_condition(fake_cluster, "sel"))
    assert cond["message"] == (
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had "
        "untolerated taint {nvidia.com/gpu: present}. preemption: 0/2 nodes are available: 2 Preemption is not helpful "
        "for scheduling.")
    gpu = {"resources": {"limits": {"nvidia.com/gpu": "1"}}}
    k8s.core.create_namespaced_pod("default", pod("untolerated", container=gpu))
    cond = fake_cluster.wait_for(lambda: scheduled_condition(fake_cluster, "untolerated"))
    assert cond["message"].startswith("0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had "
                                      "untolerated taint {nvidia.com/gpu: present}.")
    tol = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    k8s.core.create_namespaced_pod("default", pod("ok", container=gpu, tolerations=tol,
                                                  nodeSelector={"accel": "a100"}))
    fake_cluster.wait_for(lambda: (fake_cluster.get("pods", "ok") or {}).get("status", {}).get("phase")
                          == "Succeeded")
    p = k8s.core.read_namespaced_pod("ok", "default")
    assert p.spec.node_name == "gpu-1"
    scheduled = k8s.core.list_namespaced_event("default", field_selector="involvedObject.name=ok,reason=Scheduled")
    assert scheduled.items[0].message == "Successfully assigned default/ok to gpu-1"


@pytest.mark.fake_cluster(nodes=[{"name": "small", "cpu": "4", "memory": "8Gi"}])
def test_pending_pod_is_scheduled_when_capacity_frees(fake_cluster: FakeCluster, k8s: Any, tmp_path: Any) -> None:
    gate = tmp_path / "go"
    wait = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)"
    big = {"resources": {"requests": {"cpu": "3", "memory": "1Gi"}}}
    k8s.core.create_namespaced_pod("default", pod("first", wait, container=big))
    fake_cluster.wait_for(lambda: (fake_cluster.get("pods", "first") or {}).get("status", {}).get("phase")
                          == "Running")
    k8s.core.create_namespaced_pod("default", pod("second", container=big))
    cond = fake_cluster.wait_for(lambda: scheduled_condition(fake_cluster, "second"))
    assert cond["message"].startswith("0/1 nodes are available: 1 Insufficient cpu.")
    gate.touch()
    fake_cluster.wait_for(lambda: (fake_cluster.get("pods", "second") or {}).get("status", {}).get("phase")
                          == "Succeeded")


def test_autoscaler_events(make_fake_cluster: Any) -> None:
    group = NodeGroup("gpu-pool", NodeSpec("gpu", cpu="8", memory="32Gi", gpu=1), max_size=1)
    cluster = make_fake_cluster(autoscaler=Autoscaler([group], scale_up_delay=0.05))
    from kubernetes import client

    core = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_pod("default", pod("g1", container={"resources": {"limits": {"nvidia.com/gpu": "1"}}}))
    ev = cluster.wait_for(lambda: cluster.events_for("g1", reason="TriggeredScaleUp"))
    assert ev[0]["message"] == "pod triggered scale-up: [{gpu-pool 0->1 (max: 1)}]"
    assert ev[0]["source"]["component"] == "cluster-autoscaler"
    cluster.wait_for(lambda: (cluster.get("pods", "g1") or {}).get("spec", {}).get("nodeName") == "gpu-pool-1")
    core.create_namespaced_pod("default", pod("g2", container={"resources": {"limits": {"nvidia.com/gpu": "4"}}}))
    ev = cluster.wait_for(lambda: cluster.events_for("g2", reason="NotTriggerScaleUp"))
    assert ev[0]["message"] == "pod didn't trigger scale-up: 1 max node group size reached"


def test_job_pods_pending_on_gpu(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.batch.create_namespaced_job("default", {
        "metadata": {"name": "gj"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "python:3", "command": ["python", "-c", "pass"],
             "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}})
    fake_cluster.wait_for(lambda: [e for e in fake_cluster.objects("events") if e["reason"] == "FailedScheduling"])
    fake_cluster.wait_for(lambda: k8s.batch.read_namespaced_job_status("gj", "default").status.active == 1)
    assert job_finished(fake_cluster, "gj") is None
