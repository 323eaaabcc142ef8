"""OOM retries that grow, and reruns of only what failed, on the fake cluster: counted from its request log."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kjupyter import BackendError, Retry, RunCancelled, RunFailed, SpecError, remote
from kjupyter import store as st
from kjupyter.run_events import Diagnosis
from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster
from tests.k8s.helpers import kube_session


def eat_250mi_at_3(x: int) -> int:
    """Item 3 needs ~250 MiB: more than 200Mi, less than 400Mi."""
    if x == 3:
        hog = bytearray(250 * 2**20)
        hog[::4096] = b"x" * len(hog[::4096])
        time.sleep(4)
    return x


def eat_400mi() -> str:
    hog = bytearray(400 * 2**20)
    hog[::4096] = b"x" * len(hog[::4096])
    time.sleep(4)
    return "never"


def broken_2_and_5(item: tuple[int, str]) -> int:
    i, fixed = item
    if i in (2, 5) and not os.path.exists(fixed):
        raise ValueError(f"item {i} is broken")
    return 10 * i


def writes(cluster: FakeCluster) -> list[tuple[str, str, str]]:
    return sorted((r.method, r.resource, r.name or "") for r in cluster.requests()
                  if r.method in ("POST", "PUT", "PATCH", "DELETE"))  # fmt: skip


def pod_memory(cluster: FakeCluster) -> dict[str, list[str]]:
    """Job name -> the memory limit of each of its pods."""
    out: dict[str, list[str]] = {}
    for pod in cluster.objects("pods"):
        job = pod["metadata"]["labels"]["job-name"]
        limits = pod["spec"]["containers"][0]["resources"].get("limits", {})
        out.setdefault(job, []).append(limits.get("memory", "none"))
    return out


def test_an_oom_killed_map_item_is_rerun_alone_with_doubled_memory(
    session: Session, cluster: FakeCluster, tmp_path: Path
) -> None:
    assert remote(eat_250mi_at_3).submit(0).result(60) == 0  # the session's watches are open
    cluster.clear_requests()
    before = set(pod_memory(cluster))
    f = remote(eat_250mi_at_3, memory="200Mi", retries=Retry(2, grow_memory=2.0, max_memory="1Gi"))
    future = f.submit_map(range(8), parallelism=2)
    events: list[object] = []
    future.subscribe(events.append)
    assert future.result(120) == list(range(8))
    assert future.wait_ended(10)
    run, again = future.run_id, f"{future.run_id}-a2"
    sentence = "Item 3 ran out of memory (limit 200Mi); retrying it with 400Mi (attempt 2 of 3)."
    assert [e.sentence for e in events if isinstance(e, Diagnosis) and e.reason == "Retrying"] == [sentence]
    memory = {job: sorted(limits) for job, limits in pod_memory(cluster).items() if job not in before}
    # The first Job: its two workers and the replacement of the one item 3 killed; then item 3 alone, grown.
    assert memory == {run: ["200Mi"] * 3, again: ["400Mi"]}
    assert cluster.get("Job", again)["metadata"]["annotations"]["kjupyter.io/count"] == "1"
    assert writes(cluster) == sorted([("POST", "jobs", ""), ("POST", "secrets", ""), ("PATCH", "jobs", run),
                                      ("POST", "jobs", ""), ("POST", "secrets", ""), ("PATCH", "jobs", again)])  # fmt: skip
    store = st.RunStore(f"file://{tmp_path / 'store'}")
    record = store.run(session.user, run).read_json(st.RUN_JSON)
    assert record["phase"] == "Succeeded" and record["attempts"] == [sentence] and record["parts"] == {again: [3]}
    assert record["diagnosis"] == sentence  # (what `kjupyter jobs` shows beside the run)
    assert record["counts"] == {"succeeded": 8, "failed": 0, "running": 0, "pending": 0}
    assert store.run(session.user, again).list_names("results") == ["0.pkl"]


def test_a_run_out_of_memory_at_the_cap_fails_in_one_sentence(session: Session, cluster: FakeCluster) -> None:
    f = remote(eat_400mi, memory="200Mi", retries=Retry(3, grow_memory=2.0, max_memory="300Mi"))
    future = f.submit()
    events: list[object] = []
    future.subscribe(events.append)
    with pytest.raises(RunFailed) as err:
        future.result(120)
    run = future.run_id
    assert str(err.value).startswith(
        "The run ran out of memory at 300Mi, the cap max_memory=300Mi, so no retry can give it more: raise "
        "max_memory= (and memory=), or make it use less memory."
    )
    retrying = [e.sentence for e in events if isinstance(e, Diagnosis) and e.reason == "Retrying"]
    assert retrying == ["The run ran out of memory (limit 200Mi); retrying it with 300Mi (attempt 2 of 4)."]
    assert pod_memory(cluster) == {run: ["200Mi"], f"{run}-a2": ["300Mi"]}  # no retry in place, none past the cap
    assert [j["metadata"]["name"] for j in cluster.objects("jobs")] == [run, f"{run}-a2"]
    assert cluster.get("Job", run)["spec"]["backoffLimit"] == 0


def test_retry_failed_reruns_exactly_the_failed_items(session: Session, cluster: FakeCluster, tmp_path: Path) -> None:
    fixed = str(tmp_path / "fixed")
    items = [(i, fixed) for i in range(8)]
    first = remote(broken_2_and_5).submit_map(items, parallelism=3, return_exceptions=True)
    assert [i for i, r in enumerate(first.result(60)) if isinstance(r, ValueError)] == [2, 5]
    assert first.wait_ended(10)
    Path(fixed).touch()
    cluster.clear_requests()
    again = first.retry_failed()
    assert again.result(60) == [10 * i for i in range(8)]
    assert again.wait_ended(10)
    part = f"{first.run_id}-r1"
    assert writes(cluster) == sorted([("POST", "jobs", ""), ("POST", "secrets", ""), ("PATCH", "jobs", part)])
    job = cluster.get("Job", part)
    assert job["metadata"]["annotations"]["kjupyter.io/count"] == "2" and job["spec"]["completions"] == 2
    store = st.RunStore(f"file://{tmp_path / 'store'}")
    assert sorted(store.run(session.user, part).list_names("results")) == ["0.pkl", "1.pkl"]
    # resume= from the store in a new session finds every item done now: no Job at all.
    cluster.clear_requests()
    assert remote(broken_2_and_5).map(items, resume=first.run_id) == [10 * i for i in range(8)]
    assert writes(cluster) == []


def test_bad_growth_and_resume_input_is_one_sentence(tmp_path: Path, cluster: FakeCluster) -> None:
    with pytest.raises(SpecError, match=r"invalid grow_memory=1\.0: must be greater than 1"):
        Retry(2, grow_memory=1.0)
    with pytest.raises(SpecError, match=r"invalid max_memory='4Gi': the cap is below the memory the run asks for "
                                        r"\(8Gi\), so it could never grow"):  # fmt: skip
        remote(eat_400mi, memory="8Gi", retries=Retry(1, grow_memory=2.0, max_memory="4Gi"))
    extra = '[clusters.kube.defaults]\nmemory = "8Gi"\n'
    gen = kube_session(tmp_path, cluster.kubeconfig_path, store=False, extra=extra)
    next(gen)
    try:
        with pytest.raises(SpecError, match=r"max_memory='2Gi': the cap is below the memory the run asks for \(8Gi\)"):
            remote(eat_400mi, retries=Retry(1, grow_memory=2.0, max_memory="2Gi")).submit()
        with pytest.raises(BackendError, match="cannot be resumed: cluster 'kube' has no store"):
            remote(broken_2_and_5).map([], resume="any-run")
        assert cluster.requests("create", "jobs") == []
    finally:
        gen.close()
    gen = kube_session(tmp_path, cluster.kubeconfig_path, store=True)
    next(gen)
    try:
        with pytest.raises(SpecError, match=r"grows the memory limit of a task that ran out of it, and this run has "
                                            r"none .*: give memory= too"):  # fmt: skip
            remote(eat_400mi, retries=Retry(1, grow_memory=2.0)).submit()
        assert cluster.requests("create", "jobs") == []
    finally:
        gen.close()


def oom_at_3_raise_once_at_1(item: tuple[int, str]) -> int:
    x, folder = item
    if x == 1 and not os.path.exists(os.path.join(folder, "raised")):
        Path(folder, "raised").touch()
        raise ValueError("item 1 fails once")
    return eat_250mi_at_3(x)


def test_reruns_needing_different_memory_go_in_separate_jobs_smallest_first(
    session: Session, cluster: FakeCluster, tmp_path: Path
) -> None:
    f = remote(oom_at_3_raise_once_at_1, memory="200Mi", retries=Retry(1, grow_memory=2.0))
    future = f.submit_map([(i, str(tmp_path)) for i in range(6)], parallelism=2)
    events: list[object] = []
    future.subscribe(events.append)
    assert future.result(120) == list(range(6))
    run = future.run_id
    assert sorted(e.sentence for e in events if isinstance(e, Diagnosis) and e.reason == "Retrying") == [
        "Item 1 failed (Error); retrying it (attempt 2 of 2).",
        "Item 3 ran out of memory (limit 200Mi); retrying it with 400Mi (attempt 2 of 2).",
    ]
    # The exception is rerun with the memory it had, the OOM with twice as much: two Jobs, the smaller first.
    assert pod_memory(cluster) == {run: ["200Mi"] * 3, f"{run}-a2": ["200Mi"], f"{run}-a3": ["400Mi"]}
    record = st.RunStore(f"file://{tmp_path / 'store'}").run(session.user, run).read_json(st.RUN_JSON)
    assert record["parts"] == {f"{run}-a2": [1], f"{run}-a3": [3]}


def test_cancel_stops_the_rerun_that_is_running(session: Session, cluster: FakeCluster) -> None:
    future = remote(eat_then_sleep, memory="200Mi", retries=Retry(1, grow_memory=2.0)).submit()
    again = f"{future.run_id}-a2"
    deadline = time.monotonic() + 60
    while not any(p["metadata"]["labels"]["job-name"] == again and p["status"].get("phase") == "Running"
                  for p in cluster.objects("pods")):  # fmt: skip
        assert time.monotonic() < deadline, "the rerun never ran"
        time.sleep(0.1)
    assert future.live_run_id == again
    assert future.cancel()
    with pytest.raises(RunCancelled):
        future.result(30)
    assert future.wait_ended(30)
    assert cluster.get("Job", again) is None
    assert [r.name for r in cluster.requests("delete", "jobs")] == [again]


def eat_then_sleep() -> str:
    hog = bytearray(250 * 2**20)
    hog[::4096] = b"x" * len(hog[::4096])
    time.sleep(60)
    return "slept"


def test_a_rerun_that_cannot_be_created_fails_the_run_with_the_clusters_answer(
    session: Session, cluster: FakeCluster
) -> None:
    future = remote(eat_400mi, memory="200Mi", retries=Retry(1, grow_memory=2.0)).submit()
    cluster.deny("create", "jobs")  # (the first Job exists: submitting is synchronous)
    with pytest.raises(BackendError, match=rf"the cluster refused to create Job {future.run_id}-a2 \(403 Forbidden\)"):
        future.result(60)
    assert [j["metadata"]["name"] for j in cluster.objects("jobs")] == [future.run_id]
    assert len(cluster.requests("create", "jobs", status=403)) == 1  # refused once, not retried in a loop


def eat_500mi_at_1(x: int) -> int:
    if x == 1:
        hog = bytearray(500 * 2**20)
        hog[::4096] = b"x" * len(hog[::4096])
        time.sleep(4)
    return x


def test_an_item_out_of_memory_on_its_last_attempt_says_so(session: Session, cluster: FakeCluster) -> None:
    f = remote(eat_500mi_at_1, memory="200Mi", retries=Retry(1, grow_memory=2.0, max_memory="1Gi"))
    future = f.submit_map(range(3), return_exceptions=True)
    results = future.result(120)
    assert results[0] == 0 and results[2] == 2
    assert isinstance(results[1], RunFailed)
    assert (
        str(results[1])
        == "Item 1 ran out of memory at 400Mi on its last attempt (2 of 2): raise memory= or the retries."
    )
    # Three workers and the replacement of the one item 1 killed; then item 1's worker and its replacement.
    assert pod_memory(cluster) == {future.run_id: ["200Mi"] * 4, f"{future.run_id}-a2": ["400Mi"] * 2}
    assert future.failures() == [(1, results[1])]
