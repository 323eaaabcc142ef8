"""Warm workers on the fake cluster: a compatible call goes to the pod that ran the last one.

Counts come from the fake API server's request log; the pod's own behaviour (fresh process
per run, cancel, timeout, its window) from the real runner, run by the fake kubelet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kjupyter import RunCancelled, RunFailed, RunTimeout, remote
from kjupyter import store as st
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.run_events import Diagnosis, LogLine, PhaseChanged
from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster
from tests.k8s.helpers import kube_session

STATE: Any = None


def remember(x: int) -> Any:
    """Sets a module global: a second run in the same process would see the first one's value."""
    global STATE
    before, STATE = STATE, x
    print(f"run with {x}, found {before}")
    return before


def double(x: int) -> int:
    print(f"doubling {x}")
    return 2 * x


def sleepy(seconds: float) -> str:
    print("sleeping", flush=True)
    time.sleep(seconds)
    return "woke"


@pytest.fixture
def session(tmp_path: Path, cluster: FakeCluster) -> Iterator[Session]:
    yield from kube_session(tmp_path, cluster.kubeconfig_path, store=True, keep_warm='"20s"')


def jobs(cluster: FakeCluster) -> list[str]:
    return [j["metadata"]["name"] for j in cluster.objects("jobs")]


def pods(cluster: FakeCluster) -> list[str]:
    return [p["metadata"]["name"] for p in cluster.objects("pods")]


def writes(cluster: FakeCluster) -> list[tuple[str, str]]:
    return [(r.method, r.resource) for r in cluster.requests() if r.method in ("POST", "PUT", "PATCH", "DELETE")]


def lines(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, LogLine)]


def test_a_compatible_call_runs_in_the_warm_pod_with_a_fresh_process(session: Session, cluster: FakeCluster,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    f = remote(remember)
    first = f.submit(1)
    assert first.result(30) is None
    assert writes(cluster) == [("POST", "jobs"), ("POST", "secrets"), ("PATCH", "jobs")]
    for x in (2, 3):
        cluster.clear_requests()
        events: list[object] = []
        future = f.submit(x)
        future.subscribe(events.append)
        assert future.result(30) is None  # a fresh process: run 1's global is not there
        assert future.wait_ended(10)
        assert writes(cluster) == [("PATCH", "pods")]  # no Job, no Secret: the pod's run label only
        assert lines(events) == [f"run with {x}, found None"]  # its own lines only, none of the runs before
        (on_warm,) = [e for e in events if isinstance(e, PhaseChanged) and "on warm worker" in e.message]
        assert on_warm.pod == pods(cluster)[0]
    assert len(jobs(cluster)) == 1 and len(pods(cluster)) == 1
    record = st.RunStore(f"file://{tmp_path / 'store'}").run(session.user, future.run_id).read_json(st.RUN_JSON)
    assert record["warm"]["worker"] == pods(cluster)[0]
    assert record["warm"]["job"] == mf.job_name(first.run_id)
    assert 0 < record["warm"]["waited_s"] < 10
    assert record["phase"] == "Succeeded"
    pod = cluster.get("pods", pods(cluster)[0])
    assert pod is not None and pod["metadata"]["labels"][mf.LABEL_RUN] == future.run_id  # `kjupyter logs RUN`


def test_an_incompatible_call_gets_a_job_of_its_own(session: Session, cluster: FakeCluster) -> None:
    first = remote(double).submit(1)
    assert first.result(30) == 2
    assert remote(double, memory="300Mi").submit(2).result(30) == 4  # other resources: a Job of its own
    assert len(jobs(cluster)) == 2
    assert remote(double).submit(3).result(30) == 6  # the first pod again
    assert remote(double, memory="300Mi").submit(4).result(30) == 8  # the second one again
    assert len(jobs(cluster)) == 2
    # A third kind of call, and max_warm = 2 (the default): the worker idle the longest is retired at once.
    (name,) = [p for p in pods(cluster) if p.startswith(mf.job_name(first.run_id) + "-")]
    assert remote(double, env={"MODE": "x"}).submit(5).result(30) == 10
    assert len(jobs(cluster)) == 3
    cluster.wait_for(lambda: (cluster.get("pods", name) or {}).get("status", {}).get("phase") == "Succeeded", 10,
                     "the retired worker exits")  # fmt: skip
    assert "retired by its client (max_warm)" in cluster.logs(name)


def test_keep_warm_zero_gives_todays_job_and_pod_counts(session: Session, cluster: FakeCluster) -> None:
    f = remote(double, keep_warm=0)
    for x in range(3):
        cluster.clear_requests()
        future = f.submit(x)
        assert future.result(30) == 2 * x
        assert future.wait_ended(10)
        assert writes(cluster) == [("POST", "jobs"), ("POST", "secrets"), ("PATCH", "jobs")]
    assert len(jobs(cluster)) == 3 and len(pods(cluster)) == 3
    job = cluster.get("jobs", jobs(cluster)[0])
    assert job is not None and "--warm" not in job["spec"]["template"]["spec"]["containers"][0]["args"]


def test_cancel_stops_the_run_and_keeps_the_pod(session: Session, cluster: FakeCluster) -> None:
    assert remote(double).submit(1).result(30) == 2
    events: list[object] = []
    future = remote(sleepy).submit(60)
    future.subscribe(events.append)
    cluster.wait_for(lambda: "sleeping" in lines(events), 20, "the run started")
    started = time.monotonic()
    assert future.cancel()
    with pytest.raises(RunCancelled):
        future.result(10)
    assert future.wait_ended(10)
    assert time.monotonic() - started < 5
    assert not any(isinstance(e, Diagnosis) and e.reason == "Stopping" for e in events)  # no hard stop needed
    assert remote(double).submit(5).result(30) == 10  # the same pod runs the next call
    assert len(jobs(cluster)) == 1 and len(pods(cluster)) == 1
    assert not cluster.requests("delete", "jobs") and not cluster.requests("delete", "pods")


def test_timeout_applies_to_the_run_and_the_pod_stays_warm(session: Session, cluster: FakeCluster) -> None:
    assert remote(double).submit(1).result(30) == 2
    with pytest.raises(RunTimeout):
        remote(sleepy, timeout=1).submit(60).result(30)
    assert remote(double).submit(2).result(30) == 4
    assert len(jobs(cluster)) == 1


def test_a_worker_deleted_between_runs_is_replaced_without_a_failure(session: Session, cluster: FakeCluster) -> None:
    assert remote(double).submit(1).result(30) == 2
    (pod,) = pods(cluster)
    client.CoreV1Api(cluster.api_client()).delete_namespaced_pod(pod, "default", grace_period_seconds=0)
    cluster.wait_for(lambda: pod not in pods(cluster), 20, "the pod is gone")
    events: list[object] = []
    future = remote(double).submit(2)
    future.subscribe(events.append)
    assert future.result(30) == 4
    assert not any(isinstance(e, Diagnosis) and e.fatal for e in events)
    assert len(jobs(cluster)) == 2


def test_a_worker_gone_when_handed_a_run_is_replaced(session: Session, cluster: FakeCluster,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The pod vanishes between the client's last look and the hand-over: the run starts on a new Job."""
    assert remote(double).submit(1).result(30) == 2
    (pod,) = pods(cluster)
    core = client.CoreV1Api(cluster.api_client())
    real_write = st.RunDir.write_bytes

    def write_bytes(self: st.RunDir, name: str, data: bytes) -> None:
        if name.startswith("warm/ticket-"):  # the pod dies right before its ticket lands
            core.delete_namespaced_pod(pod, "default", grace_period_seconds=0)
            cluster.wait_for(lambda: pod not in pods(cluster), 20, "the pod is gone")
        real_write(self, name, data)

    monkeypatch.setattr(st.RunDir, "write_bytes", write_bytes)
    events: list[object] = []
    future = remote(double).submit(2)
    future.subscribe(events.append)
    assert future.result(30) == 4
    assert not any(isinstance(e, Diagnosis) and e.fatal for e in events)
    assert len(jobs(cluster)) == 2


def test_a_killed_kernels_warm_pod_exits_after_its_window(tmp_path: Path, cluster: FakeCluster) -> None:
    """The client is SIGKILLed right after its run: the pod ends by itself, and its Job completes."""
    config = tmp_path / "kjupyter.toml"
    config.write_text(textwrap.dedent(f"""
        default = "kube"
        [clusters.kube]
        backend = "kubernetes"
        kubeconfig = "{cluster.kubeconfig_path}"
        image = "python:3.11"
        store = "file://{tmp_path / "store"}"
        keep_warm = "3s"
    """))
    script = textwrap.dedent("""
        import os, signal
        from kjupyter import remote
        print(remote(abs).submit(-4).result(60), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "KJUPYTER_CONFIG": str(config), "KJUPYTER_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "4" and done.returncode == -9, done.stderr
    killed = time.monotonic()
    job = cluster.wait_for(lambda: next(iter(jobs(cluster)), None), 10, "the Job")
    cluster.wait_for(lambda: (cluster.get("jobs", job) or {}).get("status", {}).get("succeeded"), 20,
                     "the warm Job completes by itself")  # fmt: skip
    assert time.monotonic() - killed < 3 + 10
    (pod,) = [p for p in cluster.objects("pods")]
    assert "no run came within keep_warm=3s" in cluster.logs(pod["metadata"]["name"])


def die() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_a_run_whose_process_is_killed_fails_in_one_sentence_and_the_pod_stays_warm(
    session: Session, cluster: FakeCluster
) -> None:
    assert remote(double).submit(1).result(30) == 2
    events: list[object] = []
    future = remote(die).submit()
    future.subscribe(events.append)
    with pytest.raises(Exception, match="failed"):
        future.result(30)
    assert any("killed by SIGKILL" in line for line in lines(events))
    assert remote(double).submit(2).result(30) == 4
    assert len(jobs(cluster)) == 1


def test_jobs_show_which_runs_used_a_warm_worker(session: Session, cluster: FakeCluster) -> None:
    cold = remote(double).submit(1)
    assert cold.result(30) == 2
    warm = remote(double).submit(2)
    assert warm.result(30) == 4 and warm.wait_ended(10)
    listed = {r.run_id: r for r in warm.backend.list_runs()}
    assert listed[cold.run_id].warm == ""
    assert listed[warm.run_id].warm.startswith(f"warm worker {pods(cluster)[0]}, started ")
    assert listed[warm.run_id].as_dict()["warm"] == listed[warm.run_id].warm


def test_with_spawn_each_run_is_a_new_interpreter(make_fake_cluster: Callable[..., FakeCluster],
                                                  tmp_path: Path) -> None:  # fmt: skip
    """A pod with a GPU gets --spawn (no fork where CUDA may be); here forced for a CPU pod."""
    cluster = make_fake_cluster(nodes=[{"name": "cpu-1", "cpu": "8", "memory": "32Gi"}],
                                extra_env={"KJUPYTER_WARM_SPAWN": "1"})  # fmt: skip
    for _ in kube_session(tmp_path, cluster.kubeconfig_path, store=True, keep_warm='"20s"'):
        pids = [remote(os.getpid).submit().result(30) for _ in range(3)]
        assert len(set(pids)) == 3
        assert remote(remember).submit(1).result(30) is None
        assert remote(remember).submit(2).result(30) is None
        assert len(jobs(cluster)) == 1


def test_a_gpu_pod_spawns_its_runs() -> None:
    import kubernetes_validate

    from kjupyter.backends.kubernetes.objects import Target, build
    from kjupyter.config import GpuType
    from kjupyter.spec import RunSpec

    target = Target(gpus={"A100": GpuType(name="A100", node_selector={"gpu": "a100"})})
    for gpu, spawned in ((0, False), (1, True)):
        objects = build(run_id="r-1", kind="call", spec=RunSpec.build(gpu=gpu), target=target,
                        run_url="file:///s/r-1", run_key=b"k" * 32, keep_warm=60)  # fmt: skip
        args = objects.job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert ("--spawn" in args) is spawned and args[args.index("--warm") + 1] == "60"
        assert objects.job["spec"]["backoffLimitPerIndex"] == 0  # a dead pod is replaced within retries only
        for version in ("1.29.0", "1.33.0"):  # the warm worker's Job is a valid Job (strict: no unknown field)
            kubernetes_validate.validate(objects.job, version, strict=True)


def test_a_cancel_from_another_process_stops_a_run_on_a_warm_worker(session: Session, cluster: FakeCluster) -> None:
    """The CLI and the lab follow no run: they cancel through run.json's ticket number and the worker's key."""
    from kjupyter.backends.kubernetes.backend import KubernetesBackend

    assert remote(double).submit(1).result(30) == 2
    events: list[object] = []
    future = remote(sleepy).submit(60)
    future.subscribe(events.append)
    cluster.wait_for(lambda: "sleeping" in lines(events), 20, "the run started")
    elsewhere = KubernetesBackend(session.config.profile("kube"))  # as `kjupyter cancel RUN` makes it
    try:
        assert elsewhere.cancel(future.run_id) is True
    finally:
        elsewhere.close()
    with pytest.raises(RunCancelled):
        future.result(15)
    assert not cluster.requests("delete", "jobs") and not cluster.requests("delete", "pods")
    assert remote(double).submit(3).result(30) == 6 and len(jobs(cluster)) == 1


def test_logs_of_a_run_on_a_warm_worker_are_its_own_lines(session: Session, cluster: FakeCluster) -> None:
    futures = [remote(double).submit(x) for x in (1,)]
    futures[0].result(30)
    for x in (2, 3):
        futures.append(remote(double).submit(x))
        futures[-1].result(30)
        futures[-1].wait_ended(10)
    assert len(jobs(cluster)) == 1
    backend = futures[0].backend
    for x, future in zip((1, 2, 3), futures, strict=True):  # as `kjupyter logs RUN` prints them
        assert list(backend.logs(future.run_id)) == [f"doubling {x}"], future.run_id


def test_a_run_on_a_warm_worker_counts_its_own_usage(session: Session, cluster: FakeCluster, tmp_path: Path) -> None:
    """The pod's earlier runs and its idle time are not the second run's: it counts from its hand-over."""
    assert remote(sleepy, cpu=1).submit(1.0).result(30) == "woke"
    time.sleep(2.0)  # idle, warm
    future = remote(sleepy, cpu=1).submit(0.5)
    assert future.result(30) == "woke" and future.wait_ended(10)
    assert len(jobs(cluster)) == 1
    record = st.RunStore(f"file://{tmp_path / 'store'}").run(session.user, future.run_id).read_json(st.RUN_JSON)
    assert 0.5 <= record["usage"]["cpu"] < 2.5, record["usage"]  # from its pod's start it would be over 3.5


def test_a_cancel_from_another_process_deletes_a_warm_workers_first_run(session: Session, cluster: FakeCluster) -> None:
    """The first run of a warm worker is its Job's: cancelled from elsewhere, the Job goes, as without warmth."""
    from kjupyter.backends.kubernetes.backend import KubernetesBackend

    events: list[object] = []
    future = remote(sleepy).submit(60)
    future.subscribe(events.append)
    cluster.wait_for(lambda: "sleeping" in lines(events), 20, "the run started")
    elsewhere = KubernetesBackend(session.config.profile("kube"))  # as the lab's sidebar makes it
    try:
        assert elsewhere.cancel(future.run_id) is True
    finally:
        elsewhere.close()
    with pytest.raises(RunCancelled):
        future.result(15)
    cluster.wait_for(lambda: not jobs(cluster), 20, "the Job is deleted")


def test_attach_to_a_warm_workers_first_run_ends_on_its_end_not_on_the_window(session: Session,
                                                                              cluster: FakeCluster) -> None:  # fmt: skip
    """Its pod went on to another run (its run label moved): attach finds it by its Job and reads its own end."""
    import kjupyter

    first = remote(double).submit(1)
    assert first.result(30) == 2
    assert remote(double).submit(2).result(30) == 4  # the same pod, relabelled
    started = time.monotonic()
    again = kjupyter.attach(first.run_id)
    assert again.result(15) == 2
    assert time.monotonic() - started < 10  # (the pod waits 20 s more: the run did not wait for the window)
    assert len(jobs(cluster)) == 1


def test_runs_that_never_start_give_back_their_warm_place(session: Session, cluster: FakeCluster) -> None:
    """max_warm counts warm Jobs whose first run has not ended: one that fails pending gives its place back."""
    for _ in range(2):  # max_warm = 2: without the places back, no later call could stay warm
        with pytest.raises(RunFailed):
            remote(double, memory="1000Gi", pending_timeout=2).submit(1).result(60)
    assert remote(double).submit(1).result(30) == 2
    assert remote(double).submit(2).result(30) == 4
    assert [r.method for r in cluster.requests("create", "jobs")] == ["POST"] * 3  # the last call went warm
