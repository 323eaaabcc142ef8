"""401/403 on watches and pods/log, a kubeconfig token that rotates while clients run, and requests whose
answer never comes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch  # type: ignore[import-untyped]
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]
from urllib3.exceptions import HTTPError

from tests.fakekube.cluster import FakeCluster

from .helpers import job, job_finished, pod

USER = "system:serviceaccount:default:default"


def status_of(e: pytest.ExceptionInfo[ApiException]) -> tuple[int, str, str]:
    body = json.loads(e.value.body)
    return e.value.status, body["reason"], body["message"]


def test_forbidden_watches(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.deny("watch", "pods")
    fake_cluster.deny("watch", "jobs")
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(k8s.core.list_namespaced_pod, "default", timeout_seconds=1):
            pass
    assert status_of(e) == (403, "Forbidden", f'pods is forbidden: User "{USER}" cannot watch resource "pods" in '
                                              'API group "" in the namespace "default"')
    with pytest.raises(ApiException) as e:   # a watch of one object names it, as the apiserver's RequestInfo does
        for _ in watch.Watch().stream(k8s.core.list_namespaced_pod, "default", field_selector="metadata.name=x",
                                      timeout_seconds=1):
            pass
    assert status_of(e)[2] == (f'pods "x" is forbidden: User "{USER}" cannot watch resource "pods" in API group "" '
                               'in the namespace "default"')
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(k8s.batch.list_namespaced_job, "default", timeout_seconds=1):
            pass
    assert status_of(e) == (403, "Forbidden", f'jobs.batch is forbidden: User "{USER}" cannot watch resource "jobs" '
                                              'in API group "batch" in the namespace "default"')
    assert k8s.core.list_namespaced_pod("default").items == []       # list is still allowed
    assert [r.status for r in fake_cluster.requests(verb="watch")] == [403, 403, 403]


def test_forbidden_pod_logs(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod("x", "import time; print('hi', flush=True); time.sleep(30)"))
    fake_cluster.wait_for(lambda: fake_cluster.logs("x"))
    fake_cluster.deny("get", "pods/log")
    expected = (403, "Forbidden", f'pods "x" is forbidden: User "{USER}" cannot get resource "pods/log" in API group '
                                  '"" in the namespace "default"')
    for follow in (False, True):
        with pytest.raises(ApiException) as e:
            k8s.core.read_namespaced_pod_log("x", "default", follow=follow, _preload_content=False)
        assert status_of(e) == expected
    assert k8s.core.read_namespaced_pod("x", "default").metadata.name == "x"   # pods themselves: allowed
    fake_cluster.clear_faults()
    assert k8s.core.read_namespaced_pod_log("x", "default", _preload_content=False).data == b"hi\n"


def kubeconfig_token(path: str) -> str:
    line = next(line for line in Path(path).read_text().splitlines() if line.strip().startswith("token:"))
    return line.split(":", 1)[1].strip()


def test_token_rotation(fake_cluster: FakeCluster) -> None:
    cached = client.CoreV1Api(fake_cluster.api_client())    # keeps the token it read at the start
    old = fake_cluster.token
    new = fake_cluster.rotate_token(grace=1.0)
    assert new != old and fake_cluster.token == new and kubeconfig_token(fake_cluster.kubeconfig_path) == new
    cached.list_namespaced_pod("default")                    # within the grace period both tokens work
    reread = client.CoreV1Api(fake_cluster.api_client())     # a client that re-reads the kubeconfig
    reread.list_namespaced_pod("default")
    time.sleep(1.1)
    with pytest.raises(ApiException) as e:
        cached.list_namespaced_pod("default")
    assert status_of(e) == (401, "Unauthorized", "Unauthorized")
    with pytest.raises(ApiException) as e:                   # watches too
        for _ in watch.Watch().stream(cached.list_namespaced_pod, "default", timeout_seconds=1):
            pass
    assert e.value.status == 401
    reread.list_namespaced_pod("default")
    # no grace: the old token stops at once; an explicit new token is used as given
    assert fake_cluster.rotate_token("second-token") == "second-token"
    assert kubeconfig_token(fake_cluster.kubeconfig_path) == "second-token"
    with pytest.raises(ApiException) as e:
        reread.list_namespaced_pod("default")
    assert e.value.status == 401
    client.CoreV1Api(fake_cluster.api_client()).list_namespaced_pod("default")
    fake_cluster.clear_faults()                              # every token issued is accepted again
    cached.list_namespaced_pod("default")
    reread.list_namespaced_pod("default")


def test_hung_create_is_applied_but_never_answered(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.hang_requests()            # the next create of a Job
    t0 = time.monotonic()
    with pytest.raises(HTTPError):          # urllib3's read timeout: the client gave up
        k8s.batch.create_namespaced_job("default", job("hung"), _request_timeout=1)
    assert 0.9 < time.monotonic() - t0 < 3
    assert fake_cluster.get("jobs", "hung") is not None     # it was created all the same
    with pytest.raises(ApiException) as e:                  # so a blind retry collides with it
        k8s.batch.create_namespaced_job("default", job("hung"))
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "AlreadyExists"
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "hung")) == "Complete"
    assert [r.status for r in fake_cluster.requests(verb="create", resource="jobs")] == [0, 409]
    server = fake_cluster._httpd
    assert server is not None
    fake_cluster.wait_for(lambda: not server.holding)       # released when the client closed


def test_hung_request_not_applied(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.hang_requests(count=2, verb="create", resource="configmaps", apply=False)
    for _ in range(2):
        with pytest.raises(HTTPError):
            k8s.core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}}, _request_timeout=0.5)
    assert fake_cluster.get("configmaps", "cm") is None
    k8s.core.list_namespaced_config_map("default")          # other verbs are untouched
    assert k8s.core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}}).metadata.name == "cm"


def test_hung_request_released_at_stop(make_fake_cluster: Any) -> None:
    cluster = make_fake_cluster()
    cluster.hang_requests(verb="list", resource="pods")
    api = client.CoreV1Api(cluster.api_client())
    import threading

    outcome: list[str] = []

    def call() -> None:
        try:
            api.list_namespaced_pod("default")        # no client timeout: only the server can end it
            outcome.append("answered")
        except Exception as e:
            outcome.append(type(e).__name__)

    t = threading.Thread(target=call)
    t.start()
    cluster.wait_for(lambda: cluster._httpd is not None and cluster._httpd.holding)
    t0 = time.monotonic()
    cluster.stop()
    assert time.monotonic() - t0 < 2
    t.join(5)
    assert not t.is_alive() and outcome and outcome[0] != "answered"
