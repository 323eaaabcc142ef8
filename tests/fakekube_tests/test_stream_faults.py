"""Stream faults: watches and followed logs that go silent without closing, followed logs that end early
(log rotation) and how a client resumes them with sinceTime + timestamps."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from urllib3.exceptions import HTTPError

from tests.fakekube.cluster import FakeCluster

from .helpers import pod

CHATTY = "import itertools, sys, time\nfor i in itertools.count():\n    print('tick', i, flush=True)\n    time.sleep(0.05)"


def held(cluster: FakeCluster) -> int:
    """Connections the server holds open and silent (until their client closes them)."""
    server = cluster._httpd
    assert server is not None
    return len(server.holding)


def read_until_error(resp: Any) -> tuple[list[bytes], BaseException | None]:
    lines: list[bytes] = []
    try:
        for chunk in resp.stream(amt=None, decode_content=False):
            lines += chunk.splitlines()
    except (HTTPError, OSError) as e:
        return lines, e
    return lines, None


@pytest.mark.fake_cluster(bookmark_interval=0.1)
def test_silent_watch_stays_open_without_events_bookmarks_or_timeout(fake_cluster: FakeCluster, k8s: Any) -> None:
    for name in ("a", "b"):
        k8s.core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    fake_cluster.silence_watches(resource="configmaps", after_events=1)
    k8s.core.list_namespaced_pod("default", watch=True, timeout_seconds=1, _preload_content=False).read()  # not it
    t0 = time.monotonic()
    resp = k8s.core.list_namespaced_config_map("default", watch=True, timeout_seconds=1, allow_watch_bookmarks=True,
                                               _preload_content=False, _request_timeout=2.5)
    assert resp.status == 200
    k8s.core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})   # never delivered
    fake_cluster.wait_for(lambda: held(fake_cluster) == 1)
    lines, error = read_until_error(resp)
    # the server ended nothing: not at timeoutSeconds=1, no bookmark every 0.1 s; the client gave up at 2.5 s
    assert error is not None and time.monotonic() - t0 >= 2.4
    assert [json.loads(line)["type"] for line in lines] == ["ADDED"]
    fake_cluster.wait_for(lambda: held(fake_cluster) == 0, 5)   # the server let go when the client closed
    # one watch only (count=1): the next one is normal and ends cleanly at its timeout
    body = k8s.core.list_namespaced_config_map("default", watch=True, timeout_seconds=1, _preload_content=False).read()
    assert [json.loads(line)["object"]["metadata"]["name"] for line in body.splitlines()] == ["a", "b", "c"]


def test_silent_watch_from_the_start_and_clear_faults(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    fake_cluster.silence_watches(None)          # every watch, from its first byte on
    resp = k8s.core.list_namespaced_config_map("default", watch=True, _preload_content=False, _request_timeout=1)
    lines, error = read_until_error(resp)
    assert lines == [] and error is not None
    fake_cluster.clear_faults()
    body = k8s.core.list_namespaced_config_map("default", watch=True, timeout_seconds=1, _preload_content=False).read()
    assert len(body.splitlines()) == 1


def test_silent_followed_log_while_the_container_keeps_printing(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod("chatty", CHATTY))
    fake_cluster.wait_for(lambda: "tick 2" in fake_cluster.logs("chatty"))
    fake_cluster.silence_logs(pod="chat*", after_lines=3)
    printed_before = fake_cluster.logs("chatty").count("\n")
    resp = k8s.core.read_namespaced_pod_log("chatty", "default", follow=True, _preload_content=False,
                                            _request_timeout=1.5)
    lines, error = read_until_error(resp)
    assert error is not None and lines == [b"tick 0", b"tick 1", b"tick 2"]
    fake_cluster.wait_for(lambda: held(fake_cluster) == 0, 5)
    assert fake_cluster.logs("chatty").count("\n") > printed_before + 10       # it kept printing meanwhile
    assert fake_cluster.get("pods", "chatty")["status"]["phase"] == "Running"  # type: ignore[index]
    # a non-followed read is not affected, and the next follow streams again
    assert k8s.core.read_namespaced_pod_log("chatty", "default", _preload_content=False).data.startswith(b"tick 0\n")
    resp = k8s.core.read_namespaced_pod_log("chatty", "default", follow=True, tail_lines=1, _preload_content=False)
    got: list[bytes] = []
    for chunk in resp.stream(amt=None, decode_content=False):
        got += chunk.splitlines()
        if len(got) >= 3:
            break
    resp.close()
    assert len(got) >= 3


def log_call(k8s: Any, name: str, **query: str) -> Any:
    """GET .../log with query parameters the generated client lacks (sinceTime), through the official client."""
    resp = k8s.raw.call_api("/api/v1/namespaces/{namespace}/pods/{name}/log", "GET",
                            path_params={"namespace": "default", "name": name}, query_params=list(query.items()),
                            auth_settings=["BearerToken"], _preload_content=False)
    resp = resp[0] if isinstance(resp, tuple) else resp    # the raw urllib3 response (client 36: bare, else a tuple)
    assert resp.status == 200
    return resp


def test_followed_log_ends_early_then_resumes_with_since_time(fake_cluster: FakeCluster, k8s: Any) -> None:
    code = "import time\nfor i in range(30):\n    print('line', i, flush=True)\n    time.sleep(0.04)\ntime.sleep(0.5)"
    k8s.core.create_namespaced_pod("default", pod("rot", code))
    fake_cluster.wait_for(lambda: "line 0" in fake_cluster.logs("rot"))
    fake_cluster.end_logs_early(pod="rot", after_lines=5)
    first = log_call(k8s, "rot", follow="true", timestamps="true").read().splitlines()   # a clean end, no error
    assert len(first) == 5 and fake_cluster.get("pods", "rot")["status"]["phase"] == "Running"  # type: ignore[index]
    seen = [tuple(line.decode().split(" ", 1)) for line in first]
    last_ts = seen[-1][0]
    assert len(last_ts) == len("2026-01-01T00:00:00.123456789Z")   # RFC3339Nano, nine digits
    resumed = log_call(k8s, "rot", follow="true", timestamps="true", sinceTime=last_ts).read().splitlines()
    again = [tuple(line.decode().split(" ", 1)) for line in resumed]
    # sinceTime counts in whole seconds: lines from the start of that second on come back, the last seen included
    assert seen[-1] in again and all(ts[:19] >= last_ts[:19] for ts, _ in again)
    merged = seen + [entry for entry in again if entry not in seen]
    assert [text for _, text in merged] == [f"line {i}" for i in range(30)]
    assert [ts for ts, _ in merged] == sorted(ts for ts, _ in merged)


def test_end_logs_early_at_once_and_only_for_matching_pods(fake_cluster: FakeCluster, k8s: Any) -> None:
    for name in ("p1", "p2"):
        k8s.core.create_namespaced_pod("default", pod(name, "import time; print('hi', flush=True); time.sleep(1)"))
    fake_cluster.wait_for(lambda: fake_cluster.logs("p1") and fake_cluster.logs("p2"))
    fake_cluster.end_logs_early(count=None, pod="p1")
    for _ in range(2):
        assert log_call(k8s, "p1", follow="true").read() == b""
    assert log_call(k8s, "p2", follow="true").read() == b"hi\n"   # followed to the container's exit


def test_restart_releases_silent_streams(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod("chatty", CHATTY))
    fake_cluster.wait_for(lambda: "tick 1" in fake_cluster.logs("chatty"))
    fake_cluster.silence_logs()
    fake_cluster.silence_watches()
    log = k8s.core.read_namespaced_pod_log("chatty", "default", follow=True, _preload_content=False)
    watch = k8s.core.list_namespaced_pod("default", watch=True, _preload_content=False)
    fake_cluster.wait_for(lambda: held(fake_cluster) >= 2)
    t0 = time.monotonic()
    fake_cluster.restart()
    assert time.monotonic() - t0 < 2
    for resp in (log, watch):
        lines, error = read_until_error(resp)
        assert lines == [] and isinstance(error, (HTTPError, OSError))
