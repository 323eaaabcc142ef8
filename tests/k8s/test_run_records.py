"""Every run with a run.json is listed until gc removes it, whatever became of its Job; logs find a run's cluster.

On the fake cluster: a cancelled run and one that timed out while pending stay in `kjupyter jobs`
and the lab's listing after their Jobs are deleted, with their phase and diagnosis; a pending run
shows why it waits; `kjupyter logs RUN` says that a gone run's pods (and logs) are gone and where
its record is, and finds a run on another configured cluster; a store that cannot be read hides
no Job and is said.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kjupyter import cli, remote
from kjupyter import store as st
from kjupyter.backends.base import RunInfo
from kjupyter.backends.kubernetes import records
from kjupyter.backends.kubernetes.render import render
from kjupyter.config import load_config
from kjupyter.errors import RunCancelled, RunFailed, StoreError
from kjupyter.run_events import Diagnosis, LogLine, Phase
from kjupyter.server.service import RunService
from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster
from tests.k8s.helpers import kube_session
from tests.sessions import installed_session

GPU = '[clusters.kube.gpus.H100]\nnode_selector = { "gpu" = "h100" }\n'  # no node has them: pods stay pending


def double(x: int) -> int:
    return 2 * x


def nap(seconds: float) -> None:
    print("napping", flush=True)
    time.sleep(seconds)


@pytest.fixture
def session(tmp_path: Path, cluster: FakeCluster) -> Iterator[Session]:
    yield from kube_session(tmp_path, cluster.kubeconfig_path, store=True, extra=GPU)


def listed(session: Session) -> dict[str, RunInfo]:
    return {r.run_id: r for r in session.backend(session.config.profile()).list_runs()}


def jobs_rows(capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, list[str]], str]:
    """``kjupyter jobs``: its rows by run id (split in columns) and its stderr."""
    capsys.readouterr()
    assert cli.main(["jobs"]) == 0
    out = capsys.readouterr()
    rows = {line.split()[0]: line.split(None, 8) for line in out.out.splitlines()[1:]}  # (CREATED is two words)
    return rows, out.err


def running(future: Any) -> None:
    seen = threading.Event()
    future.subscribe(lambda e: seen.set() if isinstance(e, LogLine) else None)
    assert seen.wait(30), "the run never printed"


def test_cancelled_and_pending_timeout_runs_stay_listed_after_their_jobs_go(
    session: Session, cluster: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    waited = remote(double, gpu="H100:1", pending_timeout=3).submit(1)
    with pytest.raises(RunFailed, match="pending after 3s"):
        waited.result(30)
    cancelled = remote(nap).submit(600)
    running(cancelled)
    cancelled.cancel()
    with pytest.raises(RunCancelled):
        cancelled.result(30)
    assert cancelled.wait_ended(30)  # (its end recorded)
    cluster.wait_for(lambda: not cluster.objects("jobs") and not cluster.objects("pods"), 30, "Jobs deleted")

    runs = listed(session)
    assert runs[waited.run_id].phase is Phase.FAILED and runs[cancelled.run_id].phase is Phase.CANCELLED
    why = runs[waited.run_id].diagnosis
    assert why.startswith("The run was still pending after 3s and was deleted.") and "No node can run the pod" in why
    assert runs[waited.run_id].finished and runs[cancelled.run_id].finished and runs[waited.run_id].failed == 1
    rows, err = jobs_rows(capsys)
    assert rows[waited.run_id][1] == "Failed" and rows[waited.run_id][-1].endswith(why.split()[-1]) and not err
    assert rows[cancelled.run_id][1:4] == ["Cancelled", "call", "nap"] and rows[cancelled.run_id][4] == "kube"
    service = RunService(load_config(files=[tmp_path / "kjupyter.toml"]), user=session.user)
    try:
        sidebar = {r["run_id"]: r for r in service.list_runs("kube").runs}
    finally:
        service.close()
    assert sidebar[waited.run_id]["phase"] == "Failed" and sidebar[waited.run_id]["diagnosis"] == why
    assert sidebar[cancelled.run_id]["phase"] == "Cancelled" and sidebar[cancelled.run_id]["active"] is False

    # Their pods, and the logs with them, are gone: said in one sentence that names the run's record.
    assert cli.main(["logs", cancelled.run_id]) == 1
    err = capsys.readouterr().err
    record = f"file://{tmp_path / 'store'}/{session.user}/{cancelled.run_id}/run.json"
    assert "pods of run" in err and "are gone" in err and "logs" in err and record in err and "Cancelled" in err
    assert len(err.strip().splitlines()) == 1

    # Until gc removes their records.
    time.sleep(1.1)
    assert cli.main(["gc", "--older-than", "1"]) == 0
    assert "deleted 2 run(s)" in capsys.readouterr().out
    assert waited.run_id not in listed(session) and cancelled.run_id not in listed(session)


def test_a_pending_run_shows_why_it_waits_in_jobs_and_the_sidebar(
    session: Session, cluster: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    future = remote(double, gpu="H100:1", pending_timeout=120).submit(1)
    unschedulable = threading.Event()
    future.subscribe(
        lambda e: unschedulable.set() if isinstance(e, Diagnosis) and e.reason == "Unschedulable" else None
    )
    assert unschedulable.wait(20)
    deadline = time.monotonic() + 10
    while "No node can run the pod" not in listed(session)[future.run_id].diagnosis:  # (run.json: within ~1 s)
        assert time.monotonic() < deadline, listed(session)[future.run_id]
        time.sleep(0.1)
    assert cluster.get("jobs", future.run_id) is not None  # the Job is there: its own diagnosis is empty
    info = listed(session)[future.run_id]
    assert info.phase is Phase.PENDING
    rows, _ = jobs_rows(capsys)
    assert rows[future.run_id][1] == "Pending" and "No node can run the pod" in rows[future.run_id][-1]
    service = RunService(load_config(files=[tmp_path / "kjupyter.toml"]), user=session.user)
    try:
        (row,) = [r for r in service.list_runs("kube").runs if r["run_id"] == future.run_id]
    finally:
        service.close()
    assert row["phase"] == "Pending" and row["active"] and row["diagnosis"] == info.diagnosis
    future.cancel()


def test_a_run_cancelled_without_its_client_is_recorded_and_an_orphan_is_said(
    session: Session, cluster: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run whose kernel is gone: `kjupyter cancel` records it Cancelled; a record whose Job went unrecorded is over."""
    backend = session.backend(session.config.profile())
    store = st.RunStore(f"file://{tmp_path / 'store'}")
    now = time.time()
    for run_id, phase, created in (("lone-aaa111", "Pending", now), ("orphan-bbb222", "Running", now - 3600)):
        store.run(session.user, run_id).write_json(st.RUN_JSON, {
            "run_id": run_id, "user": session.user, "cluster": "kube", "backend": "kubernetes", "namespace": "default",
            "kind": "call", "count": 1, "function": "train", "created": created, "phase": phase,
            "counts": {"succeeded": 0, "failed": 0, "running": 0, "pending": 1}})  # fmt: skip
    job = render(backend.profile, session.spec_for(backend.profile, {}), run_id="lone-aaa111", user=session.user,
                 session="dead-session")[0]  # fmt: skip
    cluster.create(job)  # its kernel died right after: nobody follows it
    assert cli.main(["cancel", "lone-aaa111"]) == 0
    assert capsys.readouterr().out.strip() == "lone-aaa111: cancelled"
    cluster.wait_for(lambda: cluster.get("jobs", "lone-aaa111") is None, 20)
    meta = store.run(session.user, "lone-aaa111").read_json(st.RUN_JSON)
    assert meta["phase"] == "Cancelled" and meta["finished"] >= now
    rows, _ = jobs_rows(capsys)
    assert rows["lone-aaa111"][1] == "Cancelled" and rows["lone-aaa111"][-1].endswith(f"cancelled by {session.user}.")
    assert rows["orphan-bbb222"][1] == "Failed" and "no client recorded how the run ended" in rows["orphan-bbb222"][-1]
    assert cli.main(["logs", "orphan-bbb222"]) == 1
    assert "its Job was deleted before anyone recorded how it ended" in capsys.readouterr().err


def test_a_store_that_cannot_be_read_hides_no_job_and_is_said(
    session: Session, cluster: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    future = remote(nap).submit(600)
    running(future)
    backend = session.backend(session.config.profile())
    assert backend.store is not None
    broken = StoreError(f"the store at {backend.store.url}/{session.user} cannot be reached (ConnectionError)")

    def unreachable(user: str) -> list[str]:
        raise broken

    monkeypatch.setattr(backend.store, "run_ids", unreachable)
    runs = backend.list_runs()
    assert [r.run_id for r in runs] == [future.run_id] and runs[0].phase is Phase.RUNNING
    (problem,) = runs.problems  # type: ignore[attr-defined]
    assert str(broken) in problem and "only runs whose Job still exists are listed" in problem
    rows, err = jobs_rows(capsys)
    assert rows[future.run_id][1] == "Running"
    assert err.count("\n") == 1 and "warning" in err and "could not be read" in err and backend.store.url in err
    assert cli.main(["jobs", "--json"]) == 0
    out = capsys.readouterr()
    assert [r["run_id"] for r in json.loads(out.out)] == [future.run_id] and "could not be read" in out.err
    service = RunService(load_config(files=[tmp_path / "kjupyter.toml"]), user=session.user)
    service._backends["kube"] = backend  # (the same store, still unreadable)
    listing = service.list_runs("kube")
    assert [r["run_id"] for r in listing.runs] == [future.run_id]
    assert [e["cluster"] for e in listing.errors] == ["kube"] and "could not be read" in listing.errors[0]["message"]
    future.cancel()


def test_logs_and_cancel_find_the_run_on_another_configured_cluster(
    tmp_path: Path, cluster: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "two.toml"
    config.write_text(
        'default = "local"\n[clusters.kube]\nbackend = "kubernetes"\n'
        f'kubeconfig = "{cluster.kubeconfig_path}"\nimage = "python:3.11"\nstore = "file://{tmp_path / "store"}"\n'
    )
    with installed_session(load_config(files=[config])) as session:
        future = remote(nap, cluster="kube").submit(600)
        running(future)
        capsys.readouterr()
        assert cli.main(["logs", future.run_id]) == 0  # the default cluster (local) has no such run
        out = capsys.readouterr()
        assert out.out.splitlines() == ["napping"]
        assert out.err.strip() == f"kjupyter: run {future.run_id} is on cluster 'kube'"

        assert cli.main(["logs", "nosuch-000000"]) == 1
        err = capsys.readouterr().err.strip()
        assert "no run 'nosuch-000000' on any configured cluster" in err and "searched: local; kube" in err

        assert cli.main(["logs", future.run_id, "--cluster", "local"]) == 1  # a named cluster: no search
        err = capsys.readouterr().err
        assert "is on cluster" not in err and f"no run {future.run_id!r}" in err

        assert cli.main(["cancel", future.run_id, "nosuch-000000"]) == 1
        out = capsys.readouterr()
        assert out.out.strip() == f"{future.run_id}: cancelled"
        assert f"run {future.run_id} is on cluster 'kube'" in out.err and "no run 'nosuch-000000'" in out.err
        with pytest.raises(RunCancelled):
            future.result(30)
        assert session.backend_of_run(future.run_id).profile.name == "kube"  # still found: its record


def test_a_job_takes_the_records_diagnosis_only_when_it_has_none() -> None:
    job = {"metadata": {"name": "r-1", "creationTimestamp": "2026-01-01T10:00:00Z", "labels": {}, "annotations": {}},
           "spec": {"completions": 1}, "status": {}}  # fmt: skip
    record = {"diagnosis": "Waiting for the cluster autoscaler to add a node (scale-up triggered)."}
    assert records.job_entry(job, "kube", record).diagnosis == record["diagnosis"]
    assert records.job_entry(job, "kube", {**record, "failed_items": [3, 8]}).extra == {"failed_items": [3, 8]}
    marked = {**job, "metadata": {**job["metadata"], "deletionTimestamp": "2026-01-01T10:01:00Z",
                                  "annotations": {"kjupyter.io/cancelled-by": "ada"}}}  # fmt: skip
    assert records.job_entry(marked, "kube", record).diagnosis == "The run was cancelled by ada."
    meta = {"run_id": "r-2", "cluster": "other", "backend": "kubernetes", "namespace": "default", "phase": "Running",
            "created": 0.0, "counts": {"running": 1}}  # fmt: skip
    elsewhere = records.record_entry(meta, "kube", "default", time.time())  # another cluster's: as recorded
    assert (elsewhere.phase, elsewhere.cluster, elsewhere.running) == (Phase.RUNNING, "other", 1)
