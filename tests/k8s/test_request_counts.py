"""What a run costs the API server, counted from the fake's request log.

- A healthy map lists no events (a pod being created is no sign of trouble) and reads each pod's log
  once: the followed stream that ends with its container delivered every line.
- A cut log stream costs one more request and loses no line.
- A pod that stays Pending gets its events looked at once.
- A Job cancelled by another kjupyter process (the CLI, the JupyterLab sidebar) is marked before it is
  deleted, so the kernel waiting on it reports Cancelled; a Job deleted by anyone else is a failure
  that says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kjupyter import remote
from kjupyter import store as st
from kjupyter.backends.kubernetes import lookups as k8s_lookups
from kjupyter.errors import RunCancelled, RunFailed
from kjupyter.run_events import Diagnosis, Event, LogLine, Phase, RunFinished
from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster
from tests.k8s.helpers import kube_session


def ticker(n: int) -> int:
    for i in range(n):
        print(f"line {i}", flush=True)
        time.sleep(0.05)
    return n


def double(x: int) -> int:
    return 2 * x


@pytest.fixture
def inline_session(tmp_path: Path, cluster: FakeCluster) -> Iterator[Session]:
    yield from kube_session(tmp_path, cluster.kubeconfig_path, store=False)


def collect(future: Any) -> list[Event]:
    seen: list[Event] = []
    future.subscribe(seen.append)
    return seen


def log_reads(cluster: FakeCluster) -> Counter[str]:
    return Counter(r.name for r in cluster.requests("get", "pods/log"))


def test_a_healthy_map_lists_no_events_and_reads_each_workers_log_once(session: Session, cluster: FakeCluster) -> None:
    assert remote(double).submit(1).result(30) == 2  # the session's watches are open
    cluster.clear_requests()
    future = remote(ticker).submit_map([10] * 6, parallelism=3)
    events = collect(future)
    assert future.result(60) == [10] * 6
    assert future.wait_ended(10)
    pods = {p["metadata"]["name"] for p in cluster.objects("pods") if p["metadata"]["name"].startswith(future.run_id)}
    assert len(pods) == 3  # worker pods: P of them for N items (was one per item)
    assert cluster.requests("list", "events") == []  # was one LIST per pod
    assert log_reads(cluster) == Counter(dict.fromkeys(pods, 1))  # was two per pod (follow + final read)
    assert Counter(e.index for e in events if isinstance(e, LogLine)) == Counter(dict.fromkeys(range(6), 10))


def test_a_cut_log_stream_loses_no_line_and_costs_one_request_more(session: Session, cluster: FakeCluster) -> None:
    assert remote(double).submit(1).result(30) == 2
    cluster.clear_requests()
    future = remote(ticker).submit(60)
    lines: list[str] = []
    future.subscribe(lambda e: lines.append(e.text) if isinstance(e, LogLine) else None)
    cluster.wait_for(lambda: len(lines) >= 5, 20)
    cluster.restart()  # cuts the followed log stream (and the watches) mid-run
    assert future.result(30) == 60
    assert future.wait_ended(10)
    assert lines == [f"line {i}" for i in range(60)]
    reads = cluster.requests("get", "pods/log")
    # The cut stream, then one that resumes from before its last line and ends with the container:
    # that one delivered the rest, so no final read.
    assert [(r.query.get("follow"), "sinceSeconds" in r.query) for r in reads] == [("True", False), ("True", True)]
    assert cluster.requests("list", "events") == []


def test_a_pod_that_stays_pending_gets_one_look_at_its_events(
    inline_session: Session, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k8s_lookups, "SLOW_PENDING_S", 1.0)
    assert remote(double).submit(1).result(30) == 2
    cluster.clear_requests()
    # The payload Secret comes 3 s late: the pod waits in ContainerCreating (FailedMount), no other sign.
    cluster.add_latency(3.0, count=1, verb="create", resource="secrets")
    future = remote(double).submit(21)
    seen = collect(future)
    assert future.result(30) == 42
    assert future.wait_ended(10)
    (listed,) = cluster.requests("list", "events")
    assert listed.query["fieldSelector"].startswith(f"involvedObject.name={future.run_id}")
    assert not [e for e in seen if isinstance(e, Diagnosis)]  # our own late Secret is no news for the user


# --- a Job deleted by another process ---------------------------------------------------------------


def waiter(marker: str) -> str:
    print("ready", flush=True)
    while not os.path.exists(marker):
        time.sleep(0.05)
    return "done"


def started(future: Any) -> None:
    ready = threading.Event()
    future.subscribe(lambda e: ready.set() if isinstance(e, LogLine) else None)
    assert ready.wait(30), "the run never printed"


def cli(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KJUPYTER_CONFIG": str(tmp_path / "kjupyter.toml")}
    return subprocess.run([sys.executable, "-m", "kjupyter.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=60, check=False)  # fmt: skip


def test_kjupyter_cancel_from_another_process_is_reported_as_cancelled(
    session: Session, cluster: FakeCluster, tmp_path: Path
) -> None:
    future = remote(waiter).submit(str(tmp_path / "never"))
    events = collect(future)
    started(future)
    cluster.clear_requests()
    done = cli(tmp_path, "cancel", future.run_id)
    assert done.returncode == 0 and f"{future.run_id}: cancelled" in done.stdout, done.stderr
    with pytest.raises(RunCancelled):
        future.result_or_raise(30)
    assert future.wait_ended(10)
    # The CLI's writes: the mark, then the delete (of that same Job, by uid); nothing else.
    writes = [
        (r.method, r.resource, r.name) for r in cluster.requests() if r.method in ("POST", "PUT", "PATCH", "DELETE")
    ]
    assert writes == [("PATCH", "jobs", future.run_id), ("DELETE", "jobs", future.run_id)]
    (end,) = [e for e in events if isinstance(e, RunFinished)]
    assert end.phase is Phase.CANCELLED and end.message == f"the run was cancelled by {session.user}"
    assert not [e for e in events if isinstance(e, Diagnosis)]
    meta = st.RunStore(f"file://{tmp_path / 'store'}").run(session.user, future.run_id).read_json(st.RUN_JSON)
    assert meta["phase"] == "Cancelled" and meta["counts"]["cancelled"] == 1 and meta["counts"]["failed"] == 0
    cluster.wait_for(lambda: not cluster.objects("jobs") and not cluster.objects("pods"), 20)
    again = cli(tmp_path, "cancel", future.run_id)  # gone: nothing to cancel, one request
    assert again.returncode == 0 and "already finished" in again.stdout
    assert len(cluster.requests("patch", "jobs")) == 2 and len(cluster.requests("delete", "jobs")) == 1


def test_a_job_deleted_by_someone_else_fails_and_says_so(
    session: Session, cluster: FakeCluster, tmp_path: Path
) -> None:
    future = remote(waiter).submit(str(tmp_path / "never"))
    events = collect(future)
    started(future)
    client.BatchV1Api(cluster.api_client()).delete_namespaced_job(
        future.run_id, "default", propagation_policy="Background"
    )  # kubectl delete job
    with pytest.raises(RunFailed, match="the Job was deleted outside kjupyter"):
        future.result(30)
    assert future.wait_ended(10)
    (end,) = [e for e in events if isinstance(e, RunFinished)]
    assert end.phase is Phase.FAILED and end.reason == "JobDeleted"
    assert [e.reason for e in events if isinstance(e, Diagnosis)] == ["JobDeleted"]
    meta = st.RunStore(f"file://{tmp_path / 'store'}").run(session.user, future.run_id).read_json(st.RUN_JSON)
    assert meta["phase"] == "Failed" and meta["reason"] == "JobDeleted"


def test_the_kernels_own_cancel_marks_the_job_too(session: Session, cluster: FakeCluster, tmp_path: Path) -> None:
    future = remote(waiter).submit(str(tmp_path / "never"))
    started(future)
    cluster.clear_requests()
    assert future.cancel()
    assert future.wait_ended(10)
    writes = [(r.method, r.resource) for r in cluster.requests() if r.method in ("POST", "PUT", "PATCH", "DELETE")]
    assert writes == [("PATCH", "jobs"), ("DELETE", "jobs")]
    (delete,) = cluster.requests("delete", "jobs")
    assert delete.status == 200
