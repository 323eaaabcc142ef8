"""Label/field selectors on list and watch, resume, timeouts, 410 Expired, bookmarks."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import watch  # type: ignore[import-untyped]
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]
from urllib3.exceptions import ProtocolError

from tests.fakekube.cluster import FakeCluster

from .helpers import raw


def cm(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def names(items: Any) -> list[str]:
    return sorted(i.metadata.name for i in items)


def test_label_selectors_on_list(k8s: Any) -> None:
    k8s.core.create_namespaced_config_map("default", cm("a", env="prod", tier="web"))
    k8s.core.create_namespaced_config_map("default", cm("b", env="dev", tier="db"))
    k8s.core.create_namespaced_config_map("default", cm("c", env="test"))

    def sel(s: str) -> list[str]:
        return names(k8s.core.list_namespaced_config_map("default", label_selector=s).items)

    assert sel("env=prod") == sel("env==prod") == ["a"]
    assert sel("env!=prod") == ["b", "c"]
    assert sel("env in (prod, dev)") == ["a", "b"]
    assert sel("env notin (prod,dev)") == ["c"]
    assert sel("tier") == ["a", "b"]
    assert sel("!tier") == ["c"]
    assert sel("tier,env!=dev") == ["a"]
    assert sel("env in (prod),tier notin (db)") == ["a"]


def test_field_selectors_and_cluster_scope(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_config_map("default", cm("one"))
    k8s.core.create_namespaced_config_map("default", cm("two"))
    assert names(k8s.core.list_namespaced_config_map("default", field_selector="metadata.name=two").items) == ["two"]
    assert names(k8s.core.list_namespaced_config_map("default", field_selector="metadata.name!=two").items) == ["one"]
    fake_cluster.add_namespace("other")
    spec = {"schedulerName": "none", "containers": [{"name": "c", "image": "i"}]}
    k8s.core.create_namespaced_pod("default", {"metadata": {"name": "p1"}, "spec": spec})
    k8s.core.create_namespaced_pod("other", {"metadata": {"name": "p2"}, "spec": spec})
    assert names(k8s.core.list_pod_for_all_namespaces().items) == ["p1", "p2"]
    assert names(k8s.core.list_pod_for_all_namespaces(field_selector="status.phase=Pending").items) == ["p1", "p2"]
    assert names(k8s.core.list_pod_for_all_namespaces(field_selector="metadata.namespace=other").items) == ["p2"]
    assert k8s.core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-1").items == []
    status, body, _ = raw(fake_cluster, "GET", "/api/v1/pods?fieldSelector=spec.color%3Dred")
    assert status == 400 and body["reason"] == "BadRequest" and "field label not supported: spec.color" in body["message"]


def test_event_field_selectors(fake_cluster: FakeCluster, k8s: Any) -> None:
    job = k8s.batch.create_namespaced_job("default", {
        "metadata": {"name": "ev"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "python:3", "command": ["python", "-c", "pass"]}]}}}})
    fake_cluster.wait_for(lambda: fake_cluster.events_for("ev", reason="Completed"))
    uid = job.metadata.uid
    by_uid = k8s.core.list_namespaced_event("default", field_selector=f"involvedObject.uid={uid}").items
    assert {e.reason for e in by_uid} == {"SuccessfulCreate", "Completed"}
    assert all(e.source.component == "job-controller" for e in by_uid)
    by_kind = k8s.core.list_event_for_all_namespaces(field_selector="involvedObject.kind=Pod,reason=Started").items
    assert len(by_kind) == 1 and by_kind[0].involved_object.field_path == "spec.containers{c}"
    by_name = k8s.core.list_namespaced_event("default", field_selector="involvedObject.name=ev").items
    assert len(by_name) == 2


def test_watch_with_selectors_and_transitions(fake_cluster: FakeCluster, k8s: Any) -> None:
    events: list[tuple[str, str]] = []
    w = watch.Watch()
    ready = threading.Event()

    def run() -> None:
        ready.set()
        for ev in w.stream(k8s.core.list_namespaced_config_map, "default", label_selector="app=x",
                           timeout_seconds=5):
            events.append((ev["type"], ev["object"].metadata.name))
            if len(events) == 4:
                w.stop()

    t = threading.Thread(target=run)
    t.start()
    ready.wait()
    fake_cluster.wait_for(lambda: fake_cluster.requests(verb="watch", resource="configmaps"))
    k8s.core.create_namespaced_config_map("default", cm("hidden", app="y"))
    k8s.core.create_namespaced_config_map("default", cm("shown", app="x"))
    k8s.core.patch_namespaced_config_map("hidden", "default", {"metadata": {"labels": {"app": "x"}}})
    k8s.core.patch_namespaced_config_map("shown", "default", {"metadata": {"labels": {"app": "z"}}})
    k8s.core.delete_namespaced_config_map("hidden", "default")
    t.join(10)
    assert events == [("ADDED", "shown"), ("ADDED", "hidden"), ("DELETED", "shown"), ("DELETED", "hidden")]


def first_events(k8s: Any, n: int, **kwargs: Any) -> list[tuple[str, str]]:
    w, seen = watch.Watch(), []
    for e in w.stream(k8s.core.list_namespaced_config_map, "default", timeout_seconds=5, **kwargs):
        seen.append((e["type"], e["object"].metadata.name))
        if len(seen) == n:
            w.stop()
    return seen


def test_watch_resumes_from_resource_version(k8s: Any) -> None:
    first = k8s.core.create_namespaced_config_map("default", cm("r1"))
    k8s.core.create_namespaced_config_map("default", cm("r2"))
    k8s.core.patch_namespaced_config_map("r1", "default", {"data": {"x": "1"}})
    seen = first_events(k8s, 2, resource_version=first.metadata.resource_version)
    assert seen == [("ADDED", "r2"), ("MODIFIED", "r1")]
    # without a resourceVersion: synthetic ADDED for the current state, then live changes
    k8s.core.delete_namespaced_config_map("r2", "default")
    seen = first_events(k8s, 1)
    assert seen == [("ADDED", "r1")]


def test_watch_timeout_closes_stream_cleanly(fake_cluster: FakeCluster, k8s: Any) -> None:
    t0 = time.monotonic()
    resp = k8s.core.list_namespaced_pod("default", watch=True, timeout_seconds=1, _preload_content=False)
    body = resp.read()          # a clean chunked end: read() returns instead of raising
    assert body == b"" and 0.9 < time.monotonic() - t0 < 3


@pytest.mark.fake_cluster(watch_history=3)
def test_watch_from_stale_resource_version_gets_410(fake_cluster: FakeCluster, k8s: Any) -> None:
    old = k8s.core.create_namespaced_config_map("default", cm("old")).metadata.resource_version
    for i in range(5):
        k8s.core.create_namespaced_config_map("default", cm(f"n{i}"))
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(k8s.core.list_namespaced_config_map, "default", resource_version=old,
                                      timeout_seconds=2):
            pass
    assert e.value.status == 410 and "too old resource version" in str(e.value.reason)
    # the raw stream is one ERROR event carrying an Expired Status
    resp = k8s.core.list_namespaced_config_map("default", watch=True, resource_version=old, _preload_content=False)
    import json

    line = json.loads(resp.read().splitlines()[0])
    assert line["type"] == "ERROR"
    assert {k: line["object"][k] for k in ("kind", "apiVersion", "status", "reason", "code")} == {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410}
    assert line["object"]["message"].startswith(f"too old resource version: {old} (")


def test_expire_and_drop_faults(fake_cluster: FakeCluster, k8s: Any) -> None:
    for i in range(3):
        k8s.core.create_namespaced_config_map("default", cm(f"d{i}"))
    fake_cluster.expire_next_watch()
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(k8s.core.list_namespaced_config_map, "default", timeout_seconds=2):
            pass
    assert e.value.status == 410
    fake_cluster.drop_watches(after_events=2)
    got: list[str] = []
    with pytest.raises(ProtocolError):   # the connection was cut mid-stream
        for ev in watch.Watch().stream(k8s.core.list_namespaced_config_map, "default", timeout_seconds=5):
            got.append(ev["object"].metadata.name)
    assert got == ["d0", "d1"]
    fake_cluster.drop_watches(after_events=1, clean=True)
    resp = k8s.core.list_namespaced_config_map("default", watch=True, _preload_content=False)
    assert len(resp.read().splitlines()) == 1


@pytest.mark.fake_cluster(bookmark_interval=0.1)
def test_bookmarks(k8s: Any) -> None:
    import json

    resp = k8s.core.list_namespaced_config_map("default", watch=True, allow_watch_bookmarks=True,
                                               timeout_seconds=5, _preload_content=False)
    first = json.loads(next(resp.stream(amt=None, decode_content=False)).splitlines()[0])
    resp.close()
    assert first["type"] == "BOOKMARK" and first["object"]["kind"] == "ConfigMap"
    assert int(first["object"]["metadata"]["resourceVersion"]) > 0


def test_a_client_resetting_a_kept_alive_connection_is_not_an_error(fake_cluster: FakeCluster,
                                                                     capfd: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Clients drop kept-alive connections all the time (thousands in a big run): no traceback on the fake's stderr."""
    import socket
    import struct

    conn = socket.create_connection(("127.0.0.1", fake_cluster.port))
    conn.sendall(f"GET /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Bearer {fake_cluster.token}\r\n\r\n".encode())  # fmt: skip
    assert conn.recv(65536).startswith(b"HTTP/1.1 200")
    server = fake_cluster._httpd
    assert server is not None
    port = conn.getsockname()[1]
    (ours,) = [c for c in list(server.conns) if _peer_port(c) == port]
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # a reset while the server waits for the next request on the connection
    deadline = time.monotonic() + 10
    while ours in server.conns and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ours not in server.conns  # the server saw the connection end
    assert "Traceback" not in capfd.readouterr().err


def _peer_port(sock: Any) -> int | None:
    try:
        return int(sock.getpeername()[1])
    except OSError:
        return None
