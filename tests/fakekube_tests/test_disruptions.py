"""Pod ends and Job lifecycle edges: preemption, activeDeadlineSeconds killing a running container, suspend of a
running Job, Foreground deletion with grace periods, NotTriggerScaleUp wording, watch timeout + bookmarks, and
nothing left running after stop()."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from kubernetes import client  # type: ignore[import-untyped]

from tests.fakekube.cluster import FakeCluster
from tests.fakekube.nodes import NodeSpec
from tests.fakekube.scheduler import Autoscaler, NodeGroup

from .helpers import has_condition, job, job_finished, job_status, pod, pods_of

SLEEP = "import time; print('up', flush=True); time.sleep(60)"


def running(cluster: FakeCluster, name: str) -> list[dict[str, Any]]:
    return [p for p in pods_of(cluster, name) if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


def test_preemption(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.batch.create_namespaced_job("default", job("victim", SLEEP, backoffLimit=2))
    first = fake_cluster.wait_for(lambda: running(fake_cluster, "victim"))[0]
    name, node = first["metadata"]["name"], first["spec"]["nodeName"]
    k8s.core.create_namespaced_pod("default", pod("vip", SLEEP))
    fake_cluster.preempt(name, by="vip")
    p = k8s.core.read_namespaced_pod(name, "default")
    cond = next(c for c in p.status.conditions if c.type == "DisruptionTarget")
    assert (cond.status, cond.reason, cond.message) == (
        "True", "PreemptionByScheduler", "default-scheduler: preempting to accommodate a higher priority pod")
    assert p.metadata.deletion_timestamp and p.metadata.deletion_grace_period_seconds == 30
    (ev,) = fake_cluster.events_for(name, reason="Preempted")
    vip_uid = fake_cluster.get("pods", "vip")["metadata"]["uid"]   # type: ignore[index]
    assert ev["message"] == f"Preempted by pod {vip_uid} on node {node}"
    assert (ev["type"], ev["source"]["component"], ev["action"]) == ("Normal", "default-scheduler", "Preempting")
    assert (ev["related"]["kind"], ev["related"]["name"], ev["related"]["uid"]) == ("Pod", "vip", vip_uid)
    # SIGTERM ends the container; the Job counts a failure and replaces the pod
    fake_cluster.wait_for(lambda: fake_cluster.get("pods", name) is None, 10)
    fake_cluster.wait_for(lambda: job_status(fake_cluster, "victim").get("failed") == 1 and running(
        fake_cluster, "victim"), 10)


def test_preempting_an_unbound_pod_is_refused(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod("pending", container={"resources": {"limits": {"cpu": "64"}}}))
    with pytest.raises(ValueError, match="not bound"):
        fake_cluster.preempt("pending")


def test_deadline_kills_the_running_container(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.batch.create_namespaced_job("default", job("late", SLEEP, activeDeadlineSeconds=1))
    name = fake_cluster.wait_for(lambda: running(fake_cluster, "late"))[0]["metadata"]["name"]
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "late"), 10) == "Failed"
    status = job_status(fake_cluster, "late")
    (failed,) = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert (failed["reason"], failed["message"]) == ("DeadlineExceeded", "Job was active longer than specified deadline")
    assert not status.get("active") and status["failed"] == 1
    assert [e["message"] for e in fake_cluster.events_for(name, reason="Killing")] == ["Stopping container main"]
    assert fake_cluster.events_for("late", reason="SuccessfulDelete")[0]["message"] == f"Deleted pod: {name}"
    p = fake_cluster.get("pods", name)
    if p is not None:   # terminated by SIGTERM (128 + 15), not left running
        assert p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143


def test_suspending_a_running_job_removes_its_pods(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.batch.create_namespaced_job("default", job("sus", "import time; print('up', flush=True); time.sleep(1)",
                                                   completions=2, parallelism=2))
    fake_cluster.wait_for(lambda: len(running(fake_cluster, "sus")) == 2)
    k8s.batch.patch_namespaced_job("sus", "default", {"spec": {"suspend": True}})
    fake_cluster.wait_for(lambda: not pods_of(fake_cluster, "sus"), 10)
    status = job_status(fake_cluster, "sus")
    assert has_condition(fake_cluster.get("jobs", "sus"), "Suspended") and not status.get("active")
    assert "startTime" not in status
    assert len(fake_cluster.events_for("sus", reason="SuccessfulDelete")) == 2
    time.sleep(0.3)
    assert pods_of(fake_cluster, "sus") == []          # nothing is created while suspended
    k8s.batch.patch_namespaced_job("sus", "default", {"spec": {"suspend": False}})
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "sus"), 15) == "Complete"
    assert [e["message"] for e in fake_cluster.events_for("sus", reason="Resumed")] == ["Job resumed"]


def test_foreground_deletion_keeps_the_job_until_pods_end_their_grace(fake_cluster: FakeCluster, k8s: Any) -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)"
    k8s.batch.create_namespaced_job("default", job("fg", code, pod={"terminationGracePeriodSeconds": 1}))
    name = fake_cluster.wait_for(lambda: running(fake_cluster, "fg"))[0]["metadata"]["name"]
    fake_cluster.wait_for(lambda: fake_cluster.logs(name))          # its SIGTERM handler is in place
    t0 = time.monotonic()
    k8s.batch.delete_namespaced_job("fg", "default", propagation_policy="Foreground")
    p = fake_cluster.wait_for(lambda: (fake_cluster.get("pods", name) or {}).get("metadata", {}).get(
        "deletionTimestamp") and fake_cluster.get("pods", name))
    assert p["metadata"]["deletionGracePeriodSeconds"] == 1
    j = k8s.batch.read_namespaced_job("fg", "default")
    assert j.metadata.deletion_timestamp and j.metadata.finalizers == ["foregroundDeletion"]
    fake_cluster.wait_for(lambda: fake_cluster.get("jobs", "fg") is None, 10)
    assert time.monotonic() - t0 >= 0.9                # the pod ignored SIGTERM: SIGKILL after its 1 s grace
    assert fake_cluster.get("pods", name) is None


def test_not_trigger_scale_up_wording(make_fake_cluster: Any) -> None:
    group = NodeGroup("gpu-pool", NodeSpec("gpu", cpu="8", memory="32Gi", gpu=1), max_size=2)
    cluster = make_fake_cluster(autoscaler=Autoscaler([group], scale_up_delay=0.05))
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_pod("default", pod("sel", nodeSelector={"pool": "a100"},
                                              container={"resources": {"limits": {"nvidia.com/gpu": "1"}}}))
    ev = cluster.wait_for(lambda: cluster.events_for("sel", reason="NotTriggerScaleUp"))
    assert ev[0]["message"] == "pod didn't trigger scale-up: 1 node(s) didn't match Pod's node affinity/selector"
    assert (ev[0]["type"], ev[0]["source"]["component"]) == ("Normal", "cluster-autoscaler")


@pytest.mark.fake_cluster(bookmark_interval=0.2)
def test_watch_timeout_with_bookmarks(k8s: Any) -> None:
    t0 = time.monotonic()
    body = k8s.core.list_namespaced_pod("default", watch=True, timeout_seconds=1, allow_watch_bookmarks=True,
                                        _preload_content=False).read()       # a clean end at the timeout
    assert 0.9 < time.monotonic() - t0 < 2
    events = [json.loads(line) for line in body.splitlines()]
    assert len(events) >= 3 and {e["type"] for e in events} == {"BOOKMARK"}
    assert all(set(e["object"]) == {"kind", "apiVersion", "metadata"} and e["object"]["kind"] == "Pod"
               for e in events)
    body = k8s.core.list_namespaced_pod("default", watch=True, timeout_seconds=1, _preload_content=False).read()
    assert body == b""                                   # no bookmarks unless asked for


def test_stop_leaves_no_thread_or_process(make_fake_cluster: Any) -> None:
    before = set(threading.enumerate())
    group = NodeGroup("pool", NodeSpec("big", cpu="64", memory="256Gi"), max_size=1)
    cluster = make_fake_cluster(autoscaler=Autoscaler([group], scale_up_delay=30))
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_pod("default", pod("chatty", "import time\nwhile True:\n print('x', flush=True)\n "
                                                        "time.sleep(0.05)"))
    core.create_namespaced_pod("default", pod("huge", container={"resources": {"limits": {"cpu": "32"}}}))
    cluster.wait_for(lambda: cluster.events_for("huge", reason="TriggeredScaleUp") and cluster.logs("chatty"))
    cluster.silence_watches()
    cluster.silence_logs()
    cluster.hang_requests(verb="list", resource="configmaps")
    clients: list[threading.Thread] = []
    calls = [lambda: core.list_namespaced_pod("default", watch=True, _preload_content=False).read(),
             lambda: core.read_namespaced_pod_log("chatty", "default", follow=True, _preload_content=False).read(),
             lambda: core.list_namespaced_config_map("default")]
    for call in calls:
        t = threading.Thread(target=lambda c=call: _swallow(c))
        t.start()
        clients.append(t)
    server = cluster._httpd
    cluster.wait_for(lambda: len(server.holding) == 3)
    t0 = time.monotonic()
    cluster.stop()
    assert time.monotonic() - t0 < 4 and not cluster.pids
    for t in clients:
        t.join(10)
        assert not t.is_alive()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and set(threading.enumerate()) - before:
        time.sleep(0.05)
    assert set(threading.enumerate()) - before == set()


def _swallow(call: Any) -> None:
    try:
        call()
    except Exception:
        pass
