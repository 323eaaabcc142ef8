"""Fault injection: 429, 500, latency, restart, RBAC 403 + SelfSubjectAccessReview, node loss."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from kubernetes import client, watch  # type: ignore[import-untyped]
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from tests.fakekube.cluster import FakeCluster

from .helpers import job, job_finished, pod, pods_of


def test_429_with_retry_after_then_success(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.throttle(2, retry_after=3, method="POST", path="/apis/batch/v1/*")
    for _ in range(2):
        with pytest.raises(ApiException) as e:
            k8s.batch.create_namespaced_job("default", job("t"))
        assert e.value.status == 429 and e.value.headers["Retry-After"] == "3"
        body = json.loads(e.value.body)
        assert (body["reason"], body["details"]["retryAfterSeconds"]) == ("TooManyRequests", 3)
    k8s.core.list_namespaced_pod("default")                     # other requests are untouched
    assert k8s.batch.create_namespaced_job("default", job("t")).metadata.name == "t"
    assert [r.status for r in fake_cluster.requests(verb="create", resource="jobs")] == [429, 429, 201]


def test_500_on_next_matching_requests(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.fail_requests(1, verb="list", resource="pods")
    with pytest.raises(ApiException) as e:
        k8s.core.list_namespaced_pod("default")
    body = json.loads(e.value.body)
    assert e.value.status == 500 and body["reason"] == "InternalError"
    assert body["message"] == "Internal error occurred: fakekube injected fault"
    assert k8s.core.list_namespaced_pod("default").items == []
    fake_cluster.fail_requests(None, status=503, path="/api/v1/namespaces/default/configmaps")
    for _ in range(3):
        with pytest.raises(ApiException) as e:
            k8s.core.list_namespaced_config_map("default")
        assert e.value.status == 503
    fake_cluster.clear_faults()
    k8s.core.list_namespaced_config_map("default")


def test_latency(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.add_latency(0.3, count=1, resource="pods")
    t0 = time.monotonic()
    k8s.core.list_namespaced_pod("default")
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    k8s.core.list_namespaced_pod("default")
    assert time.monotonic() - t0 < 0.2


def test_restart_cuts_streams_and_keeps_state(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod("long", "import time\nprint('up', flush=True)\ntime.sleep(60)"))
    fake_cluster.wait_for(lambda: fake_cluster.logs("long") == "up\n")
    outcome: dict[str, Any] = {}

    def watcher() -> None:
        try:
            for _ in watch.Watch().stream(k8s.core.list_namespaced_config_map, "default"):
                pass
            outcome["watch"] = "ended"
        except Exception as e:
            outcome["watch"] = type(e).__name__

    def follower() -> None:
        resp = k8s.core.read_namespaced_pod_log("long", "default", follow=True, _preload_content=False)
        try:
            outcome["log"] = b"".join(resp.stream(amt=None, decode_content=False))
        except Exception as e:
            outcome["log"] = type(e).__name__

    threads = [threading.Thread(target=watcher), threading.Thread(target=follower)]
    for t in threads:
        t.start()
    fake_cluster.wait_for(lambda: fake_cluster.requests(verb="watch", resource="configmaps")
                          and fake_cluster.requests(verb="get", resource="pods/log"))
    port = fake_cluster.port
    fake_cluster.restart()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert outcome["watch"] != "ended" and outcome["log"] != b"up\n"   # both cut, not ended cleanly
    assert fake_cluster.port == port
    assert k8s.core.read_namespaced_pod("long", "default").status.phase == "Running"


def test_rbac_denial_and_access_review(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.deny("create", "jobs", namespace="ml")
    fake_cluster.add_namespace("ml")
    with pytest.raises(ApiException) as e:
        k8s.batch.create_namespaced_job("ml", job("nope"))
    body = json.loads(e.value.body)
    assert e.value.status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == ('jobs.batch is forbidden: User "system:serviceaccount:default:default" cannot create '
                               'resource "jobs" in API group "batch" in the namespace "ml"')
    assert body["details"] == {"group": "batch", "kind": "jobs"}
    k8s.batch.create_namespaced_job("default", job("fine"))      # other namespaces are allowed

    def review(verb: str, resource: str, ns: str, group: str = "batch", sub: str | None = None) -> bool:
        attrs = client.V1ResourceAttributes(verb=verb, resource=resource, namespace=ns, group=group, subresource=sub)
        spec = client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs)
        result = k8s.authz.create_self_subject_access_review(client.V1SelfSubjectAccessReview(spec=spec))
        return bool(result.status.allowed)

    assert review("create", "jobs", "ml") is False
    assert review("create", "jobs", "default") is True
    assert review("list", "jobs", "ml") is True
    fake_cluster.deny("get", "pods/log")
    assert review("get", "pods", "default", "", "log") is False
    assert review("get", "pods", "default", "") is True


def test_node_gone_fails_pods_and_job_replaces_them(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.batch.create_namespaced_job("default", job("surv", "import time; print('up', flush=True); time.sleep(60)",
                                                   backoffLimit=3))
    first = fake_cluster.wait_for(lambda: [p for p in pods_of(fake_cluster, "surv")
                                           if p["status"].get("phase") == "Running"])[0]
    node = first["spec"]["nodeName"]
    watched: list[Any] = []
    stop = threading.Event()

    def observe() -> None:
        w = watch.Watch()
        for ev in w.stream(k8s.core.list_namespaced_pod, "default",
                           field_selector=f"metadata.name={first['metadata']['name']}", timeout_seconds=10):
            watched.append(ev["object"])
            if ev["type"] == "DELETED" or stop.is_set():
                w.stop()

    t = threading.Thread(target=observe)
    t.start()
    fake_cluster.wait_for(lambda: watched)
    fake_cluster.remove_node(node)
    t.join(10)
    stop.set()
    last = watched[-1]
    assert last.status.phase == "Failed"
    disruption = next(c for c in last.status.conditions if c.type == "DisruptionTarget")
    assert (disruption.reason, disruption.message) == ("DeletionByPodGC", "PodGC: node no longer exists")
    assert node not in [n.metadata.name for n in k8s.core.list_node().items]
    replacement = fake_cluster.wait_for(lambda: [p for p in pods_of(fake_cluster, "surv")
                                                 if p["status"].get("phase") == "Running"])
    assert replacement[0]["spec"]["nodeName"] != node
    assert k8s.batch.read_namespaced_job_status("surv", "default").status.failed == 1


def test_node_eviction(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod("ev", "import time; print('up', flush=True); time.sleep(60)"))
    fake_cluster.wait_for(lambda: fake_cluster.logs("ev") == "up\n")
    node = fake_cluster.get("pods", "ev")["spec"]["nodeName"]   # type: ignore[index]
    fake_cluster.remove_node(node, how="evicted")
    p = k8s.core.read_namespaced_pod("ev", "default")
    assert (p.status.phase, p.status.reason) == ("Failed", "Evicted")
    assert p.status.message.startswith("The node was low on resource: memory.")
    assert [c.reason for c in p.status.conditions if c.type == "DisruptionTarget"] == ["TerminationByKubelet"]
    assert fake_cluster.events_for("ev", reason="Evicted")


def test_job_survives_api_errors_of_its_client(fake_cluster: FakeCluster, k8s: Any) -> None:
    """Faults hit the client, never the controllers: a job still completes while lists fail."""
    fake_cluster.fail_requests(None, verb="list")
    k8s.batch.create_namespaced_job("default", job("robust"))
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "robust")) == "Complete"
