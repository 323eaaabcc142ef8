"""The kubelet: real processes, env, volumes, images, logs, OOM, graceful deletion."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from kubernetes import watch  # type: ignore[import-untyped]

from tests.fakekube.cluster import FakeCluster

from .helpers import pod, raw, terminated, waiting_reason


def phase(cluster: FakeCluster, name: str) -> str | None:
    p = cluster.get("pods", name)
    return p["status"].get("phase") if p else None


@pytest.mark.fake_cluster(image_pull_backoff=0.1)
def test_missing_image_gives_err_image_pull_then_backoff(fake_cluster: FakeCluster, k8s: Any) -> None:
    reasons: list[str] = []

    def observe() -> None:
        w = watch.Watch()
        for ev in w.stream(k8s.core.list_namespaced_pod, "default", field_selector="metadata.name=img",
                           timeout_seconds=10):
            for cs in ev["object"].status.container_statuses or []:
                if cs.state.waiting and (not reasons or reasons[-1] != cs.state.waiting.reason):
                    reasons.append(cs.state.waiting.reason)
            if "ImagePullBackOff" in reasons:
                w.stop()

    t = threading.Thread(target=observe)
    t.start()
    fake_cluster.wait_for(lambda: fake_cluster.requests(verb="watch", resource="pods"))
    k8s.core.create_namespaced_pod("default", pod("img", image="registry.example.com/team/does-not-exist:1"))
    t.join(10)
    assert reasons[-2:] == ["ErrImagePull", "ImagePullBackOff"]
    p = k8s.core.read_namespaced_pod("img", "default")
    assert p.status.phase == "Pending"
    assert p.status.container_statuses[0].state.waiting.message == \
        'Back-off pulling image "registry.example.com/team/does-not-exist:1"'
    msgs = [(e.reason, e.type, e.message) for e in k8s.core.list_namespaced_event(
        "default", field_selector="involvedObject.name=img").items]
    assert ("Pulling", "Normal", 'Pulling image "registry.example.com/team/does-not-exist:1"') in msgs
    assert ("Failed", "Warning", "Error: ErrImagePull") in msgs
    assert ("Failed", "Warning", "Error: ImagePullBackOff") in msgs
    assert ("BackOff", "Normal", 'Back-off pulling image "registry.example.com/team/does-not-exist:1"') in msgs
    assert any(r == "Failed" and m.startswith('Failed to pull image "registry.example.com/team/does-not-exist:1": '
                                             "rpc error: code = NotFound") for r, _, m in msgs)
    # logs of a container that never started: 400 like the real API
    from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

    with pytest.raises(ApiException) as e:
        k8s.core.read_namespaced_pod_log("img", "default")
    assert e.value.status == 400 and "is waiting to start: trying and failing to pull image" in e.value.body
    # once the image "exists" the next pull succeeds
    fake_cluster.set_images(available=["*"], missing=[])
    fake_cluster.wait_for(lambda: phase(fake_cluster, "img") == "Succeeded", 10)


def test_missing_secret_gives_create_container_config_error(fake_cluster: FakeCluster, k8s: Any) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}]
    k8s.core.create_namespaced_pod("default", pod("cfg", "import os; print(os.environ['TOKEN'])",
                                                  container={"env": env}))
    fake_cluster.wait_for(lambda: waiting_reason(fake_cluster.get("pods", "cfg")) == "CreateContainerConfigError")
    cs = k8s.core.read_namespaced_pod("cfg", "default").status.container_statuses[0]
    assert cs.state.waiting.message == 'secret "creds" not found'
    assert fake_cluster.events_for("cfg", reason="Failed")[0]["message"] == 'Error: secret "creds" not found'
    k8s.core.create_namespaced_secret("default", {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}})
    fake_cluster.wait_for(lambda: phase(fake_cluster, "cfg") == "Succeeded")
    assert k8s.core.read_namespaced_pod_log("cfg", "default", _preload_content=False).data == b"s3cr3t\n"


def test_env_volumes_and_path_translation(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_secret("default", {"metadata": {"name": "sec"}, "stringData": {"pw": "hunter2"}})
    k8s.core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"mode": "fast",
                                                                                         "cfg.toml": "a = 1\n"}})
    code = """
import json, os, sys
out = {k: os.environ.get(k) for k in ["PLAIN", "SECRET", "CONF", "NAME", "NS", "UID", "LBL", "ANN", "NODE", "SA",
       "IP", "CM_mode", "REF", "MISSING", "OUT", "HOSTNAME", "MEM"]}
out["exe"] = sys.executable
out["cfg"] = open("/etc/app/cfg.toml").read()
out["pw"] = open(os.environ["SECDIR"] + "/pw").read()
out["labels"] = open("/podinfo/labels").read()
open("/scratch/file", "w").write("x")
out["scratch"] = os.listdir("/scratch")
out["cwd_ok"] = os.getcwd() != "/"
print(json.dumps(out), flush=True)
open("/dev/termination-log", "w").write("all good")
"""
    env = [
        {"name": "PLAIN", "value": "v"},
        {"name": "REF", "value": "$(PLAIN)-x $$(PLAIN)"},
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
        {"name": "CONF", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
        {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "LBL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "ANN", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "SECDIR", "value": "/var/secret"},
        {"name": "OUT", "value": "/scratch/out.txt"},
    ]
    manifest = pod("envy", code, volumes=[
        {"name": "s", "secret": {"secretName": "sec"}},
        {"name": "c", "configMap": {"name": "cm", "items": [{"key": "cfg.toml", "path": "cfg.toml"}]}},
        {"name": "e", "emptyDir": {}},
        {"name": "d", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
    ], container={"env": env, "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"},
                                          {"secretRef": {"name": "absent", "optional": True}}],
                  "resources": {"limits": {"memory": "256Mi"}},
                  "volumeMounts": [{"name": "s", "mountPath": "/var/secret"}, {"name": "c", "mountPath": "/etc/app"},
                                   {"name": "e", "mountPath": "/scratch"}, {"name": "d", "mountPath": "/podinfo"}]})
    manifest["metadata"].update(labels={"app": "demo"}, annotations={"note": "hi"})
    created = k8s.core.create_namespaced_pod("default", manifest)
    fake_cluster.wait_for(lambda: phase(fake_cluster, "envy") in ("Succeeded", "Failed"), 10)
    p = k8s.core.read_namespaced_pod("envy", "default")
    assert p.status.phase == "Succeeded", fake_cluster.logs("envy")
    out = json.loads(k8s.core.read_namespaced_pod_log("envy", "default", _preload_content=False).data)
    assert out["PLAIN"] == "v" and out["REF"] == "v-x $(PLAIN)"
    assert out["SECRET"] == "hunter2" and out["CONF"] == "fast" and out["CM_mode"] == "fast"
    assert out["MISSING"] is None
    assert (out["NAME"], out["NS"], out["UID"]) == ("envy", "default", created.metadata.uid)
    assert (out["LBL"], out["ANN"], out["NODE"], out["SA"]) == ("demo", "hi", p.spec.node_name, "default")
    assert out["IP"] == p.status.pod_ip and out["HOSTNAME"] == "envy" and out["MEM"] == "256"
    assert out["cfg"] == "a = 1\n" and out["pw"] == "hunter2" and out["labels"] == 'app="demo"\n'
    assert out["scratch"] == ["file"] and out["cwd_ok"]
    assert not out["OUT"].startswith("/scratch") and out["OUT"].endswith("/volumes/e/out.txt")
    assert os.path.realpath(out["exe"]) == os.path.realpath(fake_cluster.options.python)
    assert p.status.container_statuses[0].state.terminated.message == "all good"
    assert not Path("/scratch").exists() and not Path("/podinfo").exists()


def test_followed_log_stream_is_live(fake_cluster: FakeCluster, k8s: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    code = f"""
import os, time
print("waiting for the gate", flush=True)
while not os.path.exists({str(gate)!r}):
    time.sleep(0.01)
print("gate seen", flush=True)
"""
    k8s.core.create_namespaced_pod("default", pod("live", code))
    fake_cluster.wait_for(lambda: phase(fake_cluster, "live") == "Running")
    resp = k8s.core.read_namespaced_pod_log("live", "default", follow=True, _preload_content=False)
    lines = []
    for chunk in resp.stream(amt=None, decode_content=False):
        lines += chunk.decode().splitlines()
        if lines == ["waiting for the gate"]:
            assert phase(fake_cluster, "live") == "Running"
            gate.touch()
    assert lines == ["waiting for the gate", "gate seen"]   # the stream ended by itself when the process exited
    assert phase(fake_cluster, "live") in ("Running", "Succeeded")


def test_log_options(fake_cluster: FakeCluster, k8s: Any) -> None:
    code = "import time\nfor i in range(5): print('line', i, flush=True); time.sleep(0.02)"
    manifest = pod("opts", code)
    manifest["spec"]["containers"].append({"name": "side", "image": "python:3", "command": ["python", "-c", "pass"]})
    k8s.core.create_namespaced_pod("default", manifest)
    fake_cluster.wait_for(lambda: phase(fake_cluster, "opts") == "Succeeded")
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as e:
        k8s.core.read_namespaced_pod_log("opts", "default")
    assert e.value.status == 400
    assert json.loads(e.value.body)["message"] == \
        "a container name must be specified for pod opts, choose one of: [main side]"

    def log(**kw: Any) -> str:
        data: bytes = k8s.core.read_namespaced_pod_log("opts", "default", container="main", _preload_content=False,
                                                       **kw).data
        return data.decode()

    assert log().splitlines() == [f"line {i}" for i in range(5)]
    assert log(tail_lines=2).splitlines() == ["line 3", "line 4"]
    stamped = log(timestamps=True).splitlines()
    ts, text = stamped[2].split(" ", 1)
    assert text == "line 2" and len(ts) == len("2024-01-01T00:00:00.000000000Z") and ts.endswith("Z")
    assert log(since_seconds=3600).count("line") == 5
    assert log(limit_bytes=6) == "line 0"
    # sinceTime reaches the kubelet with second precision (the apiserver formats it as RFC 3339 seconds): every
    # line stamped at or after the start of that second comes back, "line 2" and maybe some before it.
    status, text, _ = raw(fake_cluster, "GET", f"/api/v1/namespaces/default/pods/opts/log?container=main&sinceTime={ts}")
    expected = [line.split(" ", 1)[1] for line in stamped if line[:19] >= ts[:19]]
    assert status == 200 and text.splitlines() == expected and "line 2" in expected


@pytest.mark.fake_cluster(oom_interval=0.02)
def test_oom_killed_when_rss_exceeds_memory_limit(fake_cluster: FakeCluster, k8s: Any) -> None:
    code = "import time\nx = bytearray(200 * 1024 * 1024)\nfor i in range(0, len(x), 4096): x[i] = 1\ntime.sleep(30)"
    k8s.core.create_namespaced_pod("default", pod("oom", code, container={"resources": {"limits": {"memory": "64Mi"}}}))
    fake_cluster.wait_for(lambda: phase(fake_cluster, "oom") == "Failed", 15)
    state = terminated(fake_cluster.get("pods", "oom"))
    assert state is not None and (state["reason"], state["exitCode"]) == ("OOMKilled", 137)


def test_delete_sends_sigterm_then_pod_disappears(fake_cluster: FakeCluster, k8s: Any, tmp_path: Path) -> None:
    marker = tmp_path / "got-sigterm"
    code = f"""
import signal, sys, time
def bye(*_):
    open({str(marker)!r}, "w").write("yes")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("up", flush=True)
time.sleep(60)
"""
    k8s.core.create_namespaced_pod("default", pod("term", code))
    fake_cluster.wait_for(lambda: fake_cluster.logs("term") == "up\n")
    k8s.core.delete_namespaced_pod("term", "default")
    fake_cluster.wait_for(lambda: fake_cluster.get("pods", "term") is None, 10)
    assert marker.read_text() == "yes"
    kinds = [(e["reason"], e["message"]) for e in fake_cluster.events_for("term")]
    assert ("Killing", "Stopping container main") in kinds


def test_grace_period_ends_with_sigkill(fake_cluster: FakeCluster, k8s: Any) -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)"
    k8s.core.create_namespaced_pod("default", pod("stubborn", code))
    fake_cluster.wait_for(lambda: fake_cluster.logs("stubborn") == "up\n")
    pid = fake_cluster.kubelet.runs[("default", "stubborn")].mains[0].proc.pid  # type: ignore[union-attr]
    t0 = time.monotonic()
    k8s.core.delete_namespaced_pod("stubborn", "default", grace_period_seconds=1)
    p = k8s.core.read_namespaced_pod("stubborn", "default")
    assert p.metadata.deletion_timestamp and p.metadata.deletion_grace_period_seconds == 1
    fake_cluster.wait_for(lambda: fake_cluster.get("pods", "stubborn") is None, 10)
    assert 0.9 < time.monotonic() - t0 < 5
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_missing_secret_volume_gives_failed_mount(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod("mnt", volumes=[{"name": "v", "secret": {"secretName": "gone"}}],
                                                  container={"volumeMounts": [{"name": "v", "mountPath": "/v"}]}))
    ev = fake_cluster.wait_for(lambda: fake_cluster.events_for("mnt", reason="FailedMount"))
    assert ev[0]["message"] == 'MountVolume.SetUp failed for volume "v" : secret "gone" not found'
    assert waiting_reason(fake_cluster.get("pods", "mnt")) == "ContainerCreating"


def test_processes_are_killed_at_stop(make_fake_cluster: Any) -> None:
    cluster = make_fake_cluster()
    from kubernetes import client

    client.CoreV1Api(cluster.api_client()).create_namespaced_pod("default", pod("sleepy", "import time\n"
                                                                                "print('up', flush=True)\n"
                                                                                "time.sleep(120)"))
    cluster.wait_for(lambda: cluster.logs("sleepy") == "up\n")
    pid = cluster.kubelet.runs[("default", "sleepy")].mains[0].proc.pid
    assert psutil.pid_exists(pid)
    cluster.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not os.path.exists(cluster.options.workdir)
