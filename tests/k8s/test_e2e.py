"""The Kubernetes backend on the fake cluster: request counts, diagnoses, faults, bad input."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kjupyter import remote
from kjupyter.errors import BackendError, ConfigError, KjupyterError, RunFailed
from kjupyter.run_events import Diagnosis, LogLine
from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster
from tests.k8s.helpers import kube_session

WRITES = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def session(tmp_path: Path, cluster: FakeCluster) -> Iterator[Session]:
    extra = '[clusters.kube.gpus.H100]\nnode_selector = { "gpu" = "h100" }\n'
    yield from kube_session(tmp_path, cluster.kubeconfig_path, store=True, extra=extra)


def double(x: int) -> int:
    return 2 * x


def ticker(n: int) -> int:
    for i in range(n):
        print(f"line {i}", flush=True)
        time.sleep(0.05)
    return n


def allocate(mb: int) -> int:
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(5)
    return len(block)


def crash() -> None:
    print("about to crash", flush=True)
    os._exit(7)


def diagnoses(future: Any) -> list[Diagnosis]:
    out: list[Diagnosis] = []
    future.subscribe(lambda e: out.append(e) if isinstance(e, Diagnosis) else None)
    return out


def test_call_creates_one_job_and_map_of_1000_makes_few_writes(session: Session, cluster: FakeCluster) -> None:
    assert remote(double).submit(4).result(30) == 8
    assert len(cluster.requests("create", "jobs")) == 1
    assert len(cluster.requests("create", "secrets")) == 1  # the run's key (it authenticates payload and results)
    cluster.clear_requests()
    future = remote(double).submit_map(range(1000), parallelism=1)
    future.cancel()  # the request count is what matters, not running 1000 pods on 2 cores
    writes = [r for r in cluster.requests() if r.method in WRITES]
    assert len(cluster.requests("create", "jobs")) == 1 and len(writes) <= 10, writes
    (job,) = [j for j in cluster.objects("jobs") if j["spec"]["completions"] == 1000] or [None]
    assert job is None or job["spec"]["completionMode"] == "Indexed"


def test_run_uses_constant_watches_and_no_polling(session: Session, cluster: FakeCluster) -> None:
    remote(double).submit(1).result(30)  # the session's watches are open now
    cluster.clear_requests()
    future = remote(ticker).submit(60)  # ~3 s of output
    assert future.result(30) == 60
    reads = [r for r in cluster.requests() if r.method == "GET"]
    assert not [r for r in reads if r.verb in ("list", "watch") and r.resource in ("pods", "jobs")], reads
    assert all(r.resource in ("pods", "events") for r in reads)  # log stream of the pod (+ nothing periodic)
    assert len([r for r in reads if r.subresource == "log"]) <= 3


def test_unschedulable_gpu_is_reported_fast_and_deleted_at_pending_timeout(
    session: Session, cluster: FakeCluster
) -> None:
    found = threading.Event()
    seen: list[Diagnosis] = []

    def listen(e: object) -> None:
        if isinstance(e, Diagnosis):
            seen.append(e)
            if e.reason == "Unschedulable":
                found.set()

    future = remote(double, gpu="H100:1", pending_timeout=3).submit(1)
    started = time.monotonic()  # (from the moment it is sent: a first submit also imports the kubernetes client)
    future.subscribe(listen)
    assert found.wait(5), seen
    assert time.monotonic() - started < 5
    assert "nodes are available" in next(d for d in seen if d.reason == "Unschedulable").sentence
    with pytest.raises(RunFailed, match="pending after 3s"):
        future.result(20)
    cluster.wait_for(lambda: not cluster.objects("jobs"), 10)


@pytest.mark.parametrize(
    ("options", "fn", "args", "reason"),
    [
        ({"image": "does-not-exist:1"}, double, (1,), "ImagePull"),
        ({"secrets": ["missing-secret"]}, double, (1,), "CreateContainerConfigError"),
        ({"memory": "64Mi"}, allocate, (200,), "OOMKilled"),
        ({}, crash, (), "Crashed"),
    ],
)
def test_failures_have_their_own_sentence(session: Session, options: dict[str, Any], fn: Any, args: tuple[Any, ...],
                                          reason: str) -> None:  # fmt: skip
    future = remote(fn, **options).submit(*args)
    seen = diagnoses(future)
    with pytest.raises(RunFailed) as info:
        future.result(30)
    future.wait_ended(10)
    assert any(reason in d.reason for d in seen), seen
    assert reason.replace("ImagePull", "pulled").replace("CreateContainerConfigError", "missing-secret")[:6] in str(
        info.value
    ) or any(d.sentence in str(info.value) for d in seen)


@pytest.mark.parametrize("fault", ["drop", "expire", "restart"])
def test_faults_lose_no_completion_and_no_log_line(session: Session, cluster: FakeCluster, fault: str) -> None:
    remote(double).submit(1).result(30)
    lines: list[str] = []
    future = remote(ticker).submit(40)
    future.subscribe(lambda e: lines.append(e.text) if isinstance(e, LogLine) else None)
    cluster.wait_for(lambda: len(lines) >= 5, 20)
    if fault == "drop":
        cluster.drop_watches(count=2)
        cluster.restart()  # cut the open streams; the rule then bites the reconnects
    elif fault == "expire":
        cluster.compact()
        cluster.restart()
    else:
        cluster.restart(down_for=0.5)
    assert future.result(30) == 40
    assert future.wait_ended(10)
    assert lines == [f"line {i}" for i in range(40)]


def test_cancel_leaves_nothing_behind(tmp_path: Path, cluster: FakeCluster) -> None:
    sess_gen = kube_session(tmp_path, cluster.kubeconfig_path, store=False)
    next(sess_gen)
    future = remote(ticker).submit(1000)
    cluster.wait_for(lambda: any(p["status"].get("phase") == "Running" for p in cluster.objects("pods")), 20)
    future.cancel()
    assert future.wait_ended(10)
    cluster.wait_for(
        lambda: not cluster.objects("jobs") and not cluster.objects("pods") and not cluster.objects("secrets"), 15
    )
    sess_gen.close()


def test_bad_input_gives_one_sentence(tmp_path: Path, cluster: FakeCluster) -> None:
    gen = kube_session(tmp_path / "a", cluster.kubeconfig_path, context='"nope"')
    (tmp_path / "a").mkdir()
    gen = kube_session(tmp_path / "a", cluster.kubeconfig_path, context='"nope"')
    next(gen)
    with pytest.raises(ConfigError, match="no context 'nope'"):
        remote(double).submit(1)
    gen.close()
    (tmp_path / "b").mkdir()
    gen = kube_session(tmp_path / "b", cluster.kubeconfig_path)
    next(gen)
    cluster.deny("create", "jobs")
    with pytest.raises(BackendError, match="403 Forbidden"):
        remote(double).submit(1)
    cluster.allow("create", "jobs")
    gen.close()
    cfg = tmp_path / "dead.kubeconfig"
    cfg.write_text(Path(cluster.kubeconfig_path).read_text().replace(cluster.url, "http://127.0.0.1:9"))
    (tmp_path / "c").mkdir()
    gen = kube_session(tmp_path / "c", str(cfg))
    next(gen)
    with pytest.raises(KjupyterError, match="cannot reach the Kubernetes API server") as info:
        remote(double).submit(1)
    assert "Traceback" not in str(info.value)
    gen.close()
