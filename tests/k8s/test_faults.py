"""Faults of real clusters, produced by the fake, driven through the public API.

For each: no run is reported wrongly, no completed run is deleted, no log line is lost or
repeated (or one sentence says why logs are unavailable), and nothing is left behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kjupyter import remote
from kjupyter.backends.kubernetes import client as k8s_client
from kjupyter.backends.kubernetes import lookups
from kjupyter.errors import BackendError, RunCancelled, RunFailed
from kjupyter.run_events import Diagnosis, LogLine, RunFinished
from kjupyter.session import Session
from tests.fakekube import Autoscaler, NodeGroup, NodeSpec
from tests.fakekube.cluster import FakeCluster
from tests.k8s.helpers import kube_session


@pytest.fixture(autouse=True)
def nothing_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each fault: no pod still holds a node, no Job waits suspended, no Secret without its Job."""
    cluster: FakeCluster | None = request.getfixturevalue("cluster") if "cluster" in request.fixturenames else None
    yield  # (the cluster is torn down after this fixture, the test's session before it)
    if cluster is None:
        return

    def clean() -> bool:
        jobs = {j["metadata"]["uid"] for j in cluster.objects("jobs")}
        busy = [p for p in cluster.objects("pods") if p["status"].get("phase") in ("Pending", "Running")]
        suspended = [j for j in cluster.objects("jobs") if j["spec"].get("suspend")]
        orphans = [s for s in cluster.objects("secrets")
                   if not {o["uid"] for o in s["metadata"].get("ownerReferences", [])} & jobs]  # fmt: skip
        return not busy and not suspended and not orphans

    cluster.wait_for(clean, timeout=60, message="a pod still running, a suspended Job or an orphaned Secret")


@pytest.fixture
def inline_session(tmp_path: Path, cluster: FakeCluster) -> Iterator[Session]:
    yield from kube_session(tmp_path, cluster.kubeconfig_path, store=False)


def lines(n: int, pause: float = 0.05) -> int:
    for i in range(n):
        print(f"line {i}", flush=True)
        time.sleep(pause)
    return n


def double(x: int) -> int:
    return 2 * x


class Seen:
    """Everything a run's future delivered: log lines, diagnoses, the end."""

    def __init__(self, future: Any) -> None:
        self.events: list[Any] = []
        future.subscribe(self.events.append)

    @property
    def lines(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, LogLine)]

    def diagnoses(self, reason: str | None = None) -> list[Diagnosis]:
        return [e for e in self.events if isinstance(e, Diagnosis) and (reason is None or e.reason == reason)]

    def wait_end(self, timeout: float = 30) -> RunFinished:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ends = [e for e in self.events if isinstance(e, RunFinished)]
            if ends:
                return ends[0]
            time.sleep(0.05)
        raise AssertionError(f"no RunFinished within {timeout}s: {self.events[-5:]}")


def job_deletes(cluster: FakeCluster) -> int:
    return len([r for r in cluster.requests("delete", "jobs")])


def nothing_left(cluster: FakeCluster, timeout: float = 30) -> None:
    cluster.wait_for(lambda: (not cluster.objects("pods") and not [j for j in cluster.objects("jobs")
                                                                   if not j["metadata"].get("deletionTimestamp")])
                     or all(_finished(j) for j in cluster.objects("jobs")), timeout=timeout)  # fmt: skip


def _finished(job: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in job.get("status", {}).get("conditions") or [])  # fmt: skip


# --- streams ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["pods", "jobs"])
def test_a_silent_watch_never_turns_a_finished_run_into_a_failed_one(
    session: Session, cluster: FakeCluster, resource: str
) -> None:
    cluster.silence_watches(count=None, resource=resource)
    future = remote(lines).submit(10)
    seen = Seen(future)
    assert future.result(60) == 10
    assert seen.lines == [f"line {i}" for i in range(10)]  # every line, once, in order
    assert job_deletes(cluster) == 0  # a completed run is never deleted
    assert not seen.diagnoses("PendingTimeout")


def test_a_silent_watch_is_dropped_and_resumed_within_seconds(session: Session, cluster: FakeCluster) -> None:
    assert remote(double).submit(1).result(30) == 2  # the watches are open and have seen bookmarks
    time.sleep(2.5)  # bookmarks came: the watch knows the server's pace (1 s here, about 60 s on a real one)
    cluster.silence_watches(count=1, resource="pods")
    cluster.restart()  # every stream is cut: the pod watch resumes, into the silent one
    cluster.clear_requests()
    cluster.wait_for(lambda: len(cluster.requests("watch", "pods")) >= 1, timeout=10)
    started = time.monotonic()
    cluster.wait_for(lambda: len(cluster.requests("watch", "pods")) >= 2, timeout=20)
    assert time.monotonic() - started < 10  # three bookmark gaps of the fake's 1 s, not the 60 s server timeout
    assert not cluster.requests("list", "pods")  # resumed from its resourceVersion, not re-listed
    assert remote(double).submit(2).result(30) == 4


def test_a_log_that_ends_early_is_resumed_with_no_line_lost_or_repeated(session: Session, cluster: FakeCluster) -> None:
    cluster.end_logs_early(count=None, after_lines=3)
    future = remote(lines).submit(12)
    seen = Seen(future)
    assert future.result(60) == 12
    seen.wait_end()
    assert seen.lines == [f"line {i}" for i in range(12)]


def test_an_inline_result_survives_a_log_that_ends_early(inline_session: Session, cluster: FakeCluster) -> None:
    cluster.end_logs_early(count=None, after_lines=2)
    future = remote(lines).submit(6)
    seen = Seen(future)
    assert future.result(60) == 6  # never "failed (Completed): every task succeeded"
    seen.wait_end()
    assert seen.lines == [f"line {i}" for i in range(6)]


def test_a_silent_log_stream_loses_no_line(session: Session, cluster: FakeCluster) -> None:
    cluster.silence_logs(count=None, after_lines=2)
    future = remote(lines).submit(8)
    seen = Seen(future)
    assert future.result(60) == 8
    seen.wait_end()
    assert seen.lines == [f"line {i}" for i in range(8)]


def test_forbidden_logs_are_said_once_and_not_asked_for_again(session: Session, cluster: FakeCluster) -> None:
    cluster.deny("get", "pods/log")
    future = remote(lines).submit(3)
    seen = Seen(future)
    assert future.result(60) == 3  # the run itself is fine: its result goes through the store
    seen.wait_end()
    (said,) = seen.diagnoses("LogsForbidden")
    assert "pods/log get" in said.sentence
    assert len(cluster.requests("get", "pods/log")) <= 2  # not hundreds of refused requests


def test_forbidden_logs_fail_an_inline_run_saying_why(inline_session: Session, cluster: FakeCluster) -> None:
    cluster.deny("get", "pods/log")
    with pytest.raises(BackendError, match=r"may not read pod logs \(pods/log get"):
        remote(double).submit(3).result(60)


def test_forbidden_watches_tell_the_user_and_never_delete_the_run(session: Session, cluster: FakeCluster) -> None:
    cluster.deny("watch", "pods")
    future = remote(lines).submit(3)
    with pytest.raises(BackendError, match="may not watch pods"):
        future.result(60)
    cluster.wait_for(lambda: any(_finished(j) for j in cluster.objects("jobs")), timeout=60)
    assert job_deletes(cluster) == 0  # it completed in the cluster; nobody deleted it


# --- verdicts --------------------------------------------------------------------------------------


def test_an_image_pull_that_fails_then_recovers_is_not_a_failure(session: Session, cluster: FakeCluster) -> None:
    cluster.flaky_image("python:3.11", failures=2)
    future = remote(double).submit(21)
    seen = Seen(future)
    assert future.result(90) == 42
    assert seen.diagnoses("ImagePullRetrying"), seen.events
    assert "503 Service Unavailable" in seen.diagnoses("ImagePullRetrying")[0].sentence
    assert job_deletes(cluster) == 0


def test_an_image_that_does_not_exist_fails_at_once(tmp_path: Path, cluster: FakeCluster) -> None:
    gen = kube_session(tmp_path, cluster.kubeconfig_path, image='"registry.example/does-not-exist:1"')
    next(gen)
    started = time.monotonic()
    with pytest.raises(RunFailed, match="cannot be pulled"):
        remote(double).submit(1).result(60)
    assert time.monotonic() - started < 20
    gen.close()


@pytest.mark.parametrize("how", ["quota", "webhook"])
def test_pods_the_cluster_refuses_to_create_are_explained_within_seconds(
    session: Session, cluster: FakeCluster, how: str
) -> None:
    if how == "quota":
        cluster.quota(hard={"pods": "0"}, name="team-quota")
    else:
        cluster.deny_pod_creation(reason="webhook", message="GPUs need a cost-center label",
                                  webhook="policy.example.com")  # fmt: skip
    started = time.monotonic()
    future = remote(double).submit(1)
    with pytest.raises(RunFailed) as info:
        future.result(60)
    assert time.monotonic() - started < 15
    text = str(info.value)
    assert ("team-quota" in text) if how == "quota" else ("policy.example.com" in text and "cost-center" in text)
    assert "every task succeeded" not in text
    cluster.wait_for(lambda: not cluster.objects("jobs"), timeout=30)


def test_no_capacity_fails_fast_unless_the_call_asked_to_wait(
    tmp_path: Path, make_fake_cluster: Callable[..., FakeCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lookups, "CAPACITY_CONFIRM_S", 1.0)
    group = NodeGroup("cpu-pool", NodeSpec("cpu", cpu="4", memory="16Gi"), max_size=1)
    cluster = make_fake_cluster(nodes=[{"name": "cpu-1", "cpu": "2", "memory": "8Gi"}],
                                autoscaler=Autoscaler([group]))  # fmt: skip
    gen = kube_session(tmp_path, cluster.kubeconfig_path)
    next(gen)
    started = time.monotonic()
    with pytest.raises(RunFailed, match="cluster autoscaler cannot add one"):
        remote(double).with_options(cpu=64).submit(1).result(60)
    assert time.monotonic() - started < 25  # not the 20 s pending_timeout... plus its own deletion
    waiting = remote(double).with_options(cpu=64, pending_timeout=8).submit(1)
    seen = Seen(waiting)
    with pytest.raises(RunFailed, match="still pending after 8s"):
        waiting.result(60)
    assert not seen.diagnoses("NoCapacity")
    gen.close()


def test_a_rotated_token_is_read_again_and_the_request_retried_once(session: Session, cluster: FakeCluster) -> None:
    assert remote(double).submit(1).result(30) == 2
    cluster.rotate_token()
    cluster.clear_requests()
    assert remote(double).submit(2).result(30) == 4
    assert len(cluster.requests(status=401)) <= 3  # one per connection that still had the old token


def test_a_create_whose_answer_never_comes_is_confirmed_not_duplicated(
    session: Session, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k8s_client, "REQUEST_TIMEOUT", (5.0, 2.0))
    cluster.hang_requests(count=1, verb="create", resource="jobs", apply=True)
    assert remote(double).submit(5).result(60) == 10
    assert len([r for r in cluster.requests("create", "jobs")]) == 1  # the read found it: no second create
    assert len(cluster.requests("get", "jobs")) >= 1


def test_a_pod_killed_for_memory_names_its_limit(session: Session, cluster: FakeCluster) -> None:
    from benchmarks.bench_faults import hog  # (the benchmark measures the same fault)

    with pytest.raises(RunFailed) as info:
        remote(hog, memory="128Mi").submit().result(60)
    assert "ran out of memory" in str(info.value) and "128Mi" in str(info.value)
    assert "BackoffLimitExceeded" not in str(info.value)  # the pod's cause, not the Job's summary


@pytest.mark.parametrize("how", ["preempted", "node-lost", "evicted"])
def test_every_way_a_pod_can_be_stopped_gives_its_real_cause(session: Session, cluster: FakeCluster, how: str) -> None:
    future = remote(lines).submit(400, 0.05)
    cluster.wait_for(lambda: [p for p in cluster.objects("pods") if p["status"].get("phase") == "Running"], timeout=30)
    (pod,) = cluster.objects("pods")
    if how == "preempted":
        cluster.preempt(pod["metadata"]["name"])
    else:
        cluster.remove_node("cpu-1", how="gone" if how == "node-lost" else "evicted")
    with pytest.raises(RunFailed) as info:
        future.result(60)
    text = str(info.value)
    expected = {"preempted": "preempted", "node-lost": "lost with its node", "evicted": "evicted"}[how]
    assert expected in text, text
    assert "BackoffLimitExceeded" not in text


# --- cleanup ---------------------------------------------------------------------------------------


def test_cancel_is_reported_when_the_pods_are_gone(session: Session, cluster: FakeCluster) -> None:
    future = remote(lines).submit(400, 0.05)
    seen = Seen(future)
    cluster.wait_for(lambda: [p for p in cluster.objects("pods") if p["status"].get("phase") == "Running"], timeout=30)
    assert future.cancel() is True
    with pytest.raises(RunCancelled):
        future.result(1)
    seen.wait_end(60)
    assert not cluster.objects("pods")  # said Cancelled only once its pods are gone
    (delete,) = cluster.requests("delete", "jobs")
    assert "Foreground" in str(delete.query)


def test_a_refused_cancel_raises_and_the_run_goes_on(session: Session, cluster: FakeCluster) -> None:
    future = remote(lines).submit(20, 0.05)
    cluster.wait_for(lambda: cluster.objects("pods"), timeout=30)
    cluster.deny("delete", "jobs")
    with pytest.raises(BackendError, match="403 Forbidden"):
        future.cancel()
    assert not future.cancelled()
    assert future.result(60) == 20


def test_a_job_whose_kernel_died_before_its_secret_has_no_pod_and_is_reaped(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kjupyter.backends.kubernetes import reaper

    monkeypatch.setattr(reaper, "MARGIN_S", 0.0)
    gen = kube_session(tmp_path, cluster.kubeconfig_path)
    session = next(gen)
    backend = session.backend(session.config.profile())
    from kjupyter.backends.kubernetes.render import render

    job = render(backend.profile, session.spec_for(backend.profile, {"pending_timeout": 1}), run_id="orphan-abc123",
                 user=session.user, session="dead-session")[0]  # fmt: skip
    assert job["metadata"]["annotations"]["kjupyter.io/pending-timeout"] == "1"
    cluster.create(job)  # the kernel died right after this: no Secret, never resumed
    time.sleep(2.5)
    assert not cluster.objects("pods")  # suspended: no pod waits on a missing Secret, no node is held
    assert remote(double).submit(1).result(30) == 2  # a new session of the user reaps it
    cluster.wait_for(lambda: not [j for j in cluster.objects("jobs") if j["metadata"]["name"] == "orphan-abc123"],
                     timeout=30)  # fmt: skip
    gen.close()


def test_the_reaper_cronjob_is_valid_and_minimal(tmp_path: Path, cluster: FakeCluster, capsys: Any) -> None:
    import kubernetes_validate
    import yaml

    from kjupyter import cli

    gen = kube_session(tmp_path, cluster.kubeconfig_path)
    next(gen)
    assert cli.main(["render", "--reaper"]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding", "CronJob"]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.33.0", strict=True)
    role = objects[1]
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "patch", "delete"]}]
    gen.close()
