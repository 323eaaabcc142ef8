"""Runs end cleanly whatever the client does: Ctrl-C, interpreter exit, detach, dying mid-submit.

Also: `kjupyter logs -f` follows a run to its end (both backends), run.json on the store for gc,
and `kjupyter render` shows exactly what is sent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from kjupyter import remote, retention
from kjupyter import store as st
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes import render as kb
from kjupyter.backends.kubernetes.client import Kube
from kjupyter.errors import BackendError
from kjupyter.run_events import LogLine
from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster
from tests.k8s.helpers import kube_session

CHILD_PRELUDE = """
import os, sys, time
from kjupyter import remote

def tick(n):
    for i in range(n):
        print(f"tick {i}", flush=True)
        time.sleep(0.1)
    return n

def wait_running(future):
    import threading
    from kjupyter.run_events import LogLine
    seen = threading.Event()
    future.subscribe(lambda e: seen.set() if isinstance(e, LogLine) else None)
    assert seen.wait(60), "the run never printed"
"""


def tick(n: int) -> int:
    for i in range(n):
        print(f"tick {i}", flush=True)
        time.sleep(0.1)
    return n


def wait_for_marker(marker: str) -> str:
    print("ready", flush=True)
    deadline = time.time() + 60
    while not os.path.exists(marker) and time.time() < deadline:
        time.sleep(0.02)
    print("saw marker", flush=True)
    return "done"


@pytest.fixture
def inline_session(tmp_path: Path, cluster: FakeCluster) -> Iterator[Session]:
    yield from kube_session(tmp_path, cluster.kubeconfig_path, store=False)


@pytest.fixture
def store_session(tmp_path: Path, cluster: FakeCluster) -> Iterator[Session]:
    yield from kube_session(tmp_path, cluster.kubeconfig_path, store=True)


def child(tmp_path: Path, body: str, *args: str) -> subprocess.Popen[str]:
    """A Python process using the test's kjupyter config (the session fixtures wrote it)."""
    script = tmp_path / f"child-{time.monotonic_ns()}.py"
    script.write_text(CHILD_PRELUDE + textwrap.dedent(body))
    env = {**os.environ, "KJUPYTER_CONFIG": str(tmp_path / "kjupyter.toml"), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip


def read_until(stream: IO[str], predicate: Callable[[str], bool], timeout: float = 60) -> list[str]:
    """Lines of ``stream`` up to the first one matching ``predicate`` (read in a thread: no hang)."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            if predicate(lines[-1]):
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), lines
    return lines


def exit_code(proc: subprocess.Popen[str], timeout: float) -> int:
    """The child's exit code; both pipes are drained meanwhile (a full pipe would block it), shown if it hangs."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the child did not exit within {timeout} s; its stderr ends with:\n{err[-4000:]}")
    if proc.returncode not in (0, 130):
        print(err[-4000:])
    return proc.returncode


def nothing_left(cluster: FakeCluster) -> bool:
    return not cluster.objects("jobs") and not cluster.objects("pods") and not cluster.objects("secrets")


def deletes(cluster: FakeCluster, name: str) -> list[Any]:
    return [r for r in cluster.requests("delete", "jobs") if r.name == name]


# --- Ctrl-C, interpreter exit, detach ------------------------------------------------------------


@pytest.mark.parametrize("how", ["call", "map"])
def test_ctrl_c_in_a_blocking_call_deletes_job_pods_and_secret(
    inline_session: Session, cluster: FakeCluster, tmp_path: Path, how: str
) -> None:
    call = "remote(tick)(1000)" if how == "call" else "remote(tick).map([1000, 1000, 1000], parallelism=3)"
    proc = child(tmp_path, f"""
        try:
            {call}
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
    """)  # fmt: skip
    try:
        assert proc.stdout is not None
        read_until(proc.stdout, lambda line: "tick 3" in line)  # the run is running and streaming
        (job,) = cluster.objects("jobs")
        assert len(cluster.objects("secrets")) == 1
        proc.send_signal(signal.SIGINT)
        assert exit_code(proc, 60) == 130
    finally:
        proc.kill()
    (delete,) = deletes(cluster, job["metadata"]["name"])
    assert delete.query.get("propagationPolicy") == "Foreground"  # the Job goes when its pods are gone
    cluster.wait_for(lambda: nothing_left(cluster), 20, "Job, pods and Secret gone")
    assert len(cluster.requests("delete", "secrets")) == 0  # the garbage collector took the owned Secret


def test_interpreter_exit_cancels_runs_but_not_detached_ones(
    store_session: Session, cluster: FakeCluster, tmp_path: Path
) -> None:
    proc = child(
        tmp_path,
        """
        kept = remote(tick).submit(30).detach()
        dropped = remote(tick).submit(1000)
        wait_running(kept)
        wait_running(dropped)
        print(kept.run_id, dropped.run_id, flush=True)
    """,
    )  # the script ends here: atexit cancels what was not detached
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    kept, dropped = out.split()[-2:]
    (delete,) = deletes(cluster, dropped)
    assert delete.query.get("propagationPolicy") == "Foreground"
    assert deletes(cluster, kept) == []
    cluster.wait_for(lambda: not any(j["metadata"]["name"] == dropped for j in cluster.objects("jobs")), 20)
    cluster.wait_for(lambda: not any(p["metadata"]["labels"].get(mf.LABEL_RUN) == dropped
                                     for p in cluster.objects("pods")), 20)  # fmt: skip
    # The detached run went on without its client, and can be picked up from here.
    from kjupyter import attach

    assert attach(kept).result(60) == 30
    job = cluster.get("jobs", kept)
    assert job is not None and job["status"].get("succeeded") == 1


# --- a client that dies between creating the Job and its Secret orphans nothing ------------------


def test_the_secret_is_born_owned_by_its_job(inline_session: Session, cluster: FakeCluster) -> None:
    future = remote(tick).submit(3)
    cluster.wait_for(lambda: cluster.objects("secrets"), 20)
    seen = cluster.objects("secrets")
    assert future.result(30) == 3
    (job,) = cluster.objects("jobs")
    (secret,) = seen
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"],
         "controller": False, "blockOwnerDeletion": False}
    ]  # fmt: skip
    writes = [(r.method, r.resource) for r in cluster.requests() if r.method in ("POST", "PUT", "PATCH")]
    # the Job suspended, its Secret owned from birth, then the Job resumed
    assert writes == [("POST", "jobs"), ("POST", "secrets"), ("PATCH", "jobs")]


def test_a_secret_that_cannot_be_created_takes_its_job_along(inline_session: Session, cluster: FakeCluster) -> None:
    cluster.fail_requests(count=1, status=500, verb="create", resource="secrets", message="etcd is unhappy")
    with pytest.raises(BackendError, match="cannot create Secret .*500"):
        remote(tick).submit(3)
    cluster.wait_for(lambda: nothing_left(cluster), 20, "the Job waiting for its Secret was deleted")


@pytest.mark.parametrize("slow", ["jobs", "secrets"])
def test_a_client_killed_mid_submit_leaves_nothing_once_the_job_goes(
    inline_session: Session, cluster: FakeCluster, tmp_path: Path, slow: str
) -> None:
    cluster.add_latency(3.0, count=1, verb="create", resource=slow)
    proc = child(tmp_path, "remote(tick).submit(5)\ntime.sleep(60)\n")
    try:
        cluster.wait_for(lambda: cluster.requests("create", slow), 60, f"the client is creating {slow}")
        proc.kill()  # SIGKILL: no atexit, no cleanup
        proc.wait(10)
    finally:
        proc.kill()
    cluster.wait_for(lambda: all(r.status for r in cluster.requests("create", slow)), 20, "the server answered")
    for secret in cluster.objects("secrets"):  # whatever exists now has an owner
        assert [o["kind"] for o in secret["metadata"].get("ownerReferences", [])] == ["Job"]
    # The Job goes (its TTL, its deadline, or `kjupyter cancel`); its Secret must go with it.
    for job in cluster.objects("jobs"):
        api = cluster.api_client()
        from kubernetes import client

        client.BatchV1Api(api).delete_namespaced_job(job["metadata"]["name"], "default",
                                                      propagation_policy="Background")  # fmt: skip
    cluster.wait_for(lambda: nothing_left(cluster), 20, "no Job, pod or Secret left")


# --- kjupyter logs -f, on both backends -----------------------------------------------------------


def follow_with_cli(tmp_path: Path, future: Any, marker: Path, config: Path | None) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if config is not None:
        env["KJUPYTER_CONFIG"] = str(config)
    proc = subprocess.Popen([sys.executable, "-m", "kjupyter.cli", "logs", "-f", future.run_id],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert proc.stdout is not None
        first = read_until(proc.stdout, lambda line: line == "ready")
        assert first == ["ready"]
        time.sleep(0.5)
        assert proc.poll() is None  # still following: the run has not ended
        marker.touch()
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        rest = proc.stdout.read().splitlines()
    finally:
        proc.kill()
    assert rest == ["saw marker"]
    assert future.result(30) == "done"


def test_logs_follow_on_kubernetes(store_session: Session, tmp_path: Path) -> None:
    marker = tmp_path / "release"
    future = remote(wait_for_marker).submit(str(marker))
    follow_with_cli(tmp_path, future, marker, tmp_path / "kjupyter.toml")


def test_logs_follow_on_the_local_backend(local_session: Session, tmp_path: Path) -> None:
    marker = tmp_path / "release"
    future = remote(wait_for_marker).submit(str(marker))
    follow_with_cli(tmp_path, future, marker, None)


# --- run.json on the store, so gc finds Kubernetes runs; progress of local maps -------------------


def test_kubernetes_runs_record_run_json_and_gc_collects_only_finished_ones(
    store_session: Session, cluster: FakeCluster, tmp_path: Path
) -> None:
    store = st.RunStore(f"file://{tmp_path / 'store'}")
    user = store_session.user
    done = remote(tick).submit_map([1, 2], parallelism=2)
    assert done.result(30) == [1, 2]
    marker = tmp_path / "release"
    going = remote(wait_for_marker).submit(str(marker))
    ready = threading.Event()
    going.subscribe(lambda e: ready.set() if isinstance(e, LogLine) else None)
    assert ready.wait(30)
    meta = store.run(user, done.run_id).read_json(st.RUN_JSON)
    assert meta["backend"] == "kubernetes" and meta["user"] == user and meta["phase"] == "Succeeded"
    assert meta["kind"] == "map" and meta["count"] == 2 and meta["namespace"] == "default"
    assert meta["counts"] == {"succeeded": 2, "failed": 0, "cancelled": 0, "running": 0, "pending": 0}
    assert meta["created"] <= meta["finished"]
    assert store.run(user, going.run_id).read_json(st.RUN_JSON)["phase"] == "Running"
    report = retention.collect_runs(store, user, older_than=0, now=time.time() + 60)
    assert report.deleted == [done.run_id] and report.kept == [going.run_id]
    assert not store.run(user, done.run_id).exists(st.RUN_JSON)
    marker.touch()
    assert going.result(30) == "done"
    assert store.run(user, going.run_id).read_json(st.RUN_JSON)["phase"] == "Succeeded"


def gated(item: tuple[str, int]) -> int:
    marker_dir, i = item
    while not os.path.exists(os.path.join(marker_dir, str(i))):
        time.sleep(0.02)
    return i


def test_local_maps_show_their_progress_in_run_json(local_session: Session, tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    future = remote(gated).submit_map([(str(gates), i) for i in range(6)], parallelism=2)
    info = local_session.backend(local_session.config.profile())

    def row() -> Any:
        return next(r for r in info.list_runs() if r.run_id == future.run_id)

    deadline = time.monotonic() + 30
    for i in range(3):
        (gates / str(i)).touch()
        while row().succeeded != i + 1:  # what `kjupyter jobs` and the lab sidebar read, from run.json
            assert time.monotonic() < deadline, row()
            time.sleep(0.05)
        assert row().phase.value == "Running" and row().running == 2
    for i in range(3, 6):
        (gates / str(i)).touch()
    assert future.result(30) == list(range(6))
    assert future.wait_ended(10)
    assert row().phase.value == "Succeeded" and row().succeeded == 6


# --- render ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("store", [True, False])
def test_render_is_exactly_what_is_sent(tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch,
                                        store: bool) -> None:  # fmt: skip
    sent: list[dict[str, Any]] = []
    original = Kube.call

    def spy(self: Kube, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if what.startswith("create "):
            sent.append(json.loads(json.dumps(args[-1])))
        return original(self, what, fn, *args, **kwargs)

    monkeypatch.setattr(Kube, "call", spy)
    gen = kube_session(tmp_path, cluster.kubeconfig_path, store=store)
    session = next(gen)
    try:
        future = remote(memory="256Mi", cpu="250m", timeout=600)(tick).submit_map([1, 2], parallelism=2)
        assert future.result(30) == [1, 2]
        profile = session.config.profile()
        spec = session.spec_for(profile, {"memory": "256Mi", "cpu": "250m", "timeout": 600, "parallelism": 2})
        rendered = kb.render(profile, spec, count=2, kind="map", run_id=future.run_id, user=session.user,
                             session=session.session_id, function=future.function)  # fmt: skip
    finally:
        gen.close()
    assert [o["kind"] for o in sent] == [o["kind"] for o in rendered] == ["Job", "Secret"]
    assert sent[0] == rendered[0]
    job = cluster.get("jobs", future.run_id)
    assert job is not None
    expected = {"run-key"} if store else {"payload.pkl", "items.pkl", "run-key"}
    assert sent[1]["data"].keys() == rendered[1]["data"].keys() == expected
    assert rendered[1]["metadata"]["ownerReferences"][0]["uid"] == kb.UID_PLACEHOLDER
    rendered[1]["metadata"]["ownerReferences"][0]["uid"] = job["metadata"]["uid"]
    assert {**sent[1], "data": {}} == {**rendered[1], "data": {}}


def test_no_pod_exists_before_its_secret(inline_session: Session, cluster: FakeCluster,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from kjupyter.backends.kubernetes import client as k8s_client

    monkeypatch.setattr(k8s_client, "REQUEST_TIMEOUT", (5.0, 3.0))
    cluster.hang_requests(count=1, verb="create", resource="secrets", apply=False)  # the Secret is stuck a while
    submitted: list[Any] = []
    sender = threading.Thread(target=lambda: submitted.append(remote(tick).submit(3)))  # (submit sends, then returns)
    sender.start()
    cluster.wait_for(lambda: cluster.objects("jobs"), 20)
    checks = 0
    while not cluster.objects("secrets"):  # all the while the Secret is not there: no pod, no node held
        assert cluster.objects("jobs") and not cluster.objects("pods")
        checks += 1
        time.sleep(0.05)
    assert checks > 10
    sender.join(30)
    (future,) = submitted
    assert future.result(60) == 3  # the create timed out, was read back (absent), and sent once more
    (pod,) = cluster.objects("pods")
    assert not cluster.events_for(pod["metadata"]["name"], reason="FailedMount")  # it never looked too early
    assert len(cluster.requests("create", "secrets")) == 2 and len(cluster.requests("create", "jobs")) == 1
