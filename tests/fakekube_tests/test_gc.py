"""Garbage collection through ownerReferences: Background, Foreground, Orphan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client  # type: ignore[import-untyped]

from tests.fakekube.cluster import FakeCluster

from .helpers import job, pods_of, raw


def owned_secret(job_obj: Any) -> dict[str, Any]:
    return {"metadata": {"name": f"{job_obj.metadata.name}-payload", "ownerReferences": [{
        "apiVersion": "batch/v1", "kind": "Job", "name": job_obj.metadata.name, "uid": job_obj.metadata.uid,
        "controller": False, "blockOwnerDeletion": True}]}, "stringData": {"payload": "x"}}


SLEEP = "import time; print('up', flush=True); time.sleep(60)"


def test_deleted_job_takes_pods_and_owned_secrets(fake_cluster: FakeCluster, k8s: Any) -> None:
    created = k8s.batch.create_namespaced_job("default", job("gone", SLEEP, completions=2, parallelism=2))
    k8s.core.create_namespaced_secret("default", owned_secret(created))
    fake_cluster.wait_for(lambda: len([p for p in pods_of(fake_cluster, "gone")
                                       if p["status"].get("phase") == "Running"]) == 2)
    body = k8s.batch.delete_namespaced_job("gone", "default", propagation_policy="Background")
    body = body.to_dict() if hasattr(body, "to_dict") else body
    assert body["status"] == "Success" and body["details"]["name"] == "gone"
    fake_cluster.wait_for(lambda: not pods_of(fake_cluster, "gone") and fake_cluster.get("secrets", "gone-payload")
                          is None, 10)
    assert fake_cluster.get("jobs", "gone") is None
    assert k8s.core.list_namespaced_pod("default", label_selector="job-name=gone").items == []


def test_foreground_deletion_waits_for_dependents(fake_cluster: FakeCluster, k8s: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    code = f"""
import os, signal, sys, time
def term(*_):
    while not os.path.exists({str(gate)!r}):
        time.sleep(0.01)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
print("up", flush=True)
time.sleep(60)
"""
    k8s.batch.create_namespaced_job("default", job("fg", code))
    fake_cluster.wait_for(lambda: any(fake_cluster.logs(p["metadata"]["name"]) for p in pods_of(fake_cluster, "fg")))
    k8s.batch.delete_namespaced_job("fg", "default", propagation_policy="Foreground")
    fake_cluster.wait_for(lambda: all(p["metadata"].get("deletionTimestamp") for p in pods_of(fake_cluster, "fg")))
    during = k8s.batch.read_namespaced_job("fg", "default")     # the pod is still terminating
    assert during.metadata.deletion_timestamp and "foregroundDeletion" in during.metadata.finalizers
    gate.touch()
    fake_cluster.wait_for(lambda: fake_cluster.get("jobs", "fg") is None, 10)
    assert pods_of(fake_cluster, "fg") == []


def test_default_propagation_for_jobs_orphans_pods(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.batch.create_namespaced_job("default", job("orph"))
    fake_cluster.wait_for(lambda: (fake_cluster.get("jobs", "orph") or {}).get("status", {}).get("succeeded"))
    status, _, headers = raw(fake_cluster, "DELETE", "/apis/batch/v1/namespaces/default/jobs/orph")
    assert status == 200 and "child pods are preserved by default" in headers.get("Warning", "")
    fake_cluster.wait_for(lambda: fake_cluster.get("jobs", "orph") is None)
    (p,) = pods_of(fake_cluster, "orph")
    name = p["metadata"]["name"]
    def released() -> bool:
        meta = (fake_cluster.get("pods", name) or {}).get("metadata", {})
        return not meta.get("ownerReferences") and not meta.get("finalizers")

    fake_cluster.wait_for(released)
    k8s.core.delete_namespaced_pod(name, "default")     # an orphan pod is not stuck on the job-tracking finalizer
    fake_cluster.wait_for(lambda: fake_cluster.get("pods", name) is None)


def test_orphan_leaves_secret_and_dangling_owner_is_collected(fake_cluster: FakeCluster, k8s: Any) -> None:
    created = k8s.batch.create_namespaced_job("default", job("keep"))
    k8s.core.create_namespaced_secret("default", owned_secret(created))
    k8s.batch.delete_namespaced_job("keep", "default", body=client.V1DeleteOptions(propagation_policy="Orphan"))
    fake_cluster.wait_for(lambda: fake_cluster.get("jobs", "keep") is None)
    secret = fake_cluster.wait_for(lambda: (lambda s: s if s and not s["metadata"].get("ownerReferences") else None)(
        fake_cluster.get("secrets", "keep-payload")))
    assert secret["data"]["payload"] == "eA=="
    dangling = owned_secret(created)
    dangling["metadata"]["name"] = "dangling"
    k8s.core.create_namespaced_secret("default", dangling)   # its owner no longer exists
    fake_cluster.wait_for(lambda: fake_cluster.get("secrets", "dangling") is None)
