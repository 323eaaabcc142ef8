"""Worker-pod maps on the fake cluster: at most P pods for N items, counted from the request log."""

from __future__ import annotations

import time
from pathlib import Path

import kubernetes_validate

from kjupyter import remote
from kjupyter import store as st
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.run_events import PhaseChanged
from kjupyter.session import Session
from kjupyter.spec import RunSpec
from tests.fakekube.cluster import FakeCluster


def double(x: int) -> int:
    return 2 * x


def nap(x: int) -> int:
    time.sleep(0.1)
    return x


def eat_memory(x: int) -> int:
    if x == 3:
        hog = bytearray(400 * 2**20)
        hog[::4096] = b"x" * len(hog[::4096])
        time.sleep(5)
    return x


def run_pods(cluster: FakeCluster, run_id: str) -> list[str]:
    return [p["metadata"]["name"] for p in cluster.objects("pods") if p["metadata"]["name"].startswith(run_id)]


def writes(cluster: FakeCluster) -> list[tuple[str, str]]:
    return [(r.method, r.resource) for r in cluster.requests() if r.method in ("POST", "PUT", "PATCH", "DELETE")]


def test_a_map_runs_on_at_most_p_pods_with_constant_writes(
    session: Session, cluster: FakeCluster, tmp_path: Path
) -> None:
    assert remote(double).submit(1).result(30) == 2  # the session's watches are open
    seen = {}
    for n in (8, 60):
        cluster.clear_requests()
        future = remote(double).submit_map(range(n), parallelism=4)
        events: list[object] = []
        future.subscribe(events.append)
        assert future.result(60) == [2 * i for i in range(n)]
        assert future.wait_ended(10)
        pods = run_pods(cluster, future.run_id)
        assert len(pods) == 4
        seen[n] = writes(cluster)
        assert len(cluster.requests("get", "pods/log")) <= len(pods)
        assert cluster.requests("list", "events") == []
        run_dir = st.RunStore(f"file://{tmp_path / 'store'}").run(session.user, future.run_id)
        assert sorted(run_dir.list_names("results")) == sorted(f"{i}.pkl" for i in range(n))
        assert run_dir.read_json(st.RUN_JSON)["claims"] == "dynamic"
        assert any(isinstance(e, PhaseChanged) and "claimed dynamically" in e.message for e in events)
    assert seen[8] == seen[60] == [("POST", "jobs"), ("POST", "secrets"), ("PATCH", "jobs")]


def test_items_per_pod_one_keeps_a_pod_per_item(session: Session, cluster: FakeCluster) -> None:
    future = remote(double, items_per_pod=1).submit_map(range(6), parallelism=3)
    assert future.result(60) == [0, 2, 4, 6, 8, 10]
    assert future.wait_ended(10)
    assert len(run_pods(cluster, future.run_id)) == 6


def test_an_oom_killed_workers_item_fails_with_the_pods_cause(session: Session, cluster: FakeCluster) -> None:
    future = remote(eat_memory, memory="200Mi").submit_map(range(8), parallelism=2, return_exceptions=True)
    results = future.result(90)
    assert future.wait_ended(10)
    assert [r for i, r in enumerate(results) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
    assert isinstance(results[3], Exception)
    assert "Item 3 ran out of memory" in str(results[3]) and "limit 200Mi" in str(results[3])
    assert len(run_pods(cluster, future.run_id)) == 3  # the two workers and one replacement


def test_attach_follows_a_running_worker_map(session: Session, cluster: FakeCluster) -> None:
    future = remote(nap).submit_map(range(20), parallelism=2)
    time.sleep(0.5)
    again = session.attach(future.run_id)
    assert again.result(60) == list(range(20))
    assert future.result(60) == list(range(20))


def test_render_of_a_map_is_the_worker_job_valid_for_every_supported_version() -> None:
    spec = RunSpec.build(parallelism=20, retries=2)
    for url in ("s3://bucket/runs", None):
        objects = mf.build(run_id="r-000001", kind="map", spec=spec, target=mf.Target(), count=1000, parallelism=20,
                           run_url=url, inline=None if url else {"payload.pkl": b""}, run_key=b"k" * 32)  # fmt: skip
        job = objects.job
        assert job["spec"]["completions"] == job["spec"]["parallelism"] == 20
        assert job["metadata"]["annotations"][mf.ANNOTATION_COUNT] == "1000"
        for v in ("1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"):
            kubernetes_validate.validate(job, v, strict=True)


def pid_of(x: int) -> tuple[int, int]:
    import os

    return x, os.getpid()


def odd_fails(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def test_items_per_pod_k_gives_each_pod_k_consecutive_items(session: Session, cluster: FakeCluster) -> None:
    future = remote(pid_of, items_per_pod=3).submit_map(range(8), parallelism=2)
    results = future.result(60)
    assert future.wait_ended(10)
    assert [x for x, _ in results] == list(range(8))
    pids = [pid for _, pid in results]
    assert pids[0:3] == [pids[0]] * 3 and pids[3:6] == [pids[3]] * 3 and pids[6:8] == [pids[6]] * 2
    assert len(set(pids)) == 3
    assert len(run_pods(cluster, future.run_id)) == 3
    job = cluster.get("Job", future.run_id)
    assert job["spec"]["completions"] == 3 and job["spec"]["parallelism"] == 2
    assert job["metadata"]["annotations"][mf.ANNOTATION_CLAIMS] == "chunks"


def test_jobs_lists_a_worker_map_by_its_items(session: Session, cluster: FakeCluster) -> None:
    """Its pods are not its items: 10 items on 2 pods read 10 in all; failed items make the map Failed."""
    future = remote(odd_fails).submit_map(range(10), parallelism=2, return_exceptions=True)
    results = future.result(60)
    assert future.wait_ended(10)
    assert [r for r in results if not isinstance(r, Exception)] == [0, 2, 4, 6, 8]
    assert cluster.get("Job", future.run_id)["status"].get("succeeded") == 2  # both workers ended well
    [info] = [r for r in session.backend(session.profile_for({})).list_runs() if r.run_id == future.run_id]
    assert (info.total, info.succeeded, info.failed, info.running) == (10, 5, 5, 0)
    assert info.phase.value == "Failed"


def test_render_of_items_per_pod_is_valid_for_every_supported_version() -> None:
    spec = RunSpec.build(parallelism=4, items_per_pod=25)
    job = mf.build(run_id="r-000002", kind="map", spec=spec, target=mf.Target(), count=1000, parallelism=4,
                   run_url="s3://bucket/runs", run_key=b"k" * 32).job  # fmt: skip
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (40, 4)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--claims") + 1] == "chunks" and args[args.index("--chunk") + 1] == "25"
    for v in ("1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"):
        kubernetes_validate.validate(job, v, strict=True)
