"""The Job controller, driven through the official client."""

from __future__ import annotations

import re
import threading
from typing import Any

from kubernetes import watch  # type: ignore[import-untyped]

from tests.fakekube.cluster import FakeCluster

from .helpers import job, job_finished, job_status, pods_of


def test_indexed_job_runs_every_index_with_bounded_parallelism(fake_cluster: FakeCluster, k8s: Any) -> None:
    code = "import os; print(os.environ['JOB_COMPLETION_INDEX'], flush=True)"
    manifest = job("idx", code, completions=20, parallelism=5, completionMode="Indexed")
    active: set[str] = set()
    peak = [0]
    started = threading.Event()

    def observe() -> None:
        w = watch.Watch()
        started.set()
        for ev in w.stream(k8s.core.list_namespaced_pod, "default", label_selector="job-name=idx",
                           timeout_seconds=20):
            pod = ev["object"]
            if ev["type"] != "DELETED" and pod.status.phase not in ("Succeeded", "Failed") \
                    and not pod.metadata.deletion_timestamp:
                active.add(pod.metadata.name)
            else:
                active.discard(pod.metadata.name)
            peak[0] = max(peak[0], len(active))
            if job_finished(fake_cluster, "idx") and not active:
                w.stop()

    observer = threading.Thread(target=observe)
    observer.start()
    started.wait()
    k8s.batch.create_namespaced_job("default", manifest)
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "idx"), 25) == "Complete"
    observer.join(20)
    assert 1 < peak[0] <= 5
    status = k8s.batch.read_namespaced_job_status("idx", "default").status
    assert status.succeeded == 20 and status.completed_indexes == "0-19" and not status.failed
    assert [c.type for c in status.conditions] == ["SuccessCriteriaMet", "Complete"]
    assert status.completion_time and status.start_time
    pods = k8s.core.list_namespaced_pod("default", label_selector="job-name=idx").items
    assert len(pods) == 20
    uid = k8s.batch.read_namespaced_job("idx", "default").metadata.uid
    for p in pods:
        index = p.metadata.annotations["batch.kubernetes.io/job-completion-index"]
        assert re.fullmatch(rf"idx-{index}-[a-z0-9]{{5}}", p.metadata.name)
        labels = p.metadata.labels
        assert labels["batch.kubernetes.io/job-completion-index"] == index
        assert labels["job-name"] == labels["batch.kubernetes.io/job-name"] == "idx"
        assert labels["controller-uid"] == labels["batch.kubernetes.io/controller-uid"] == uid
        ref = p.metadata.owner_references[0]
        assert (ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == ("Job", "idx", uid, True, True)
        env = {e.name: e for e in p.spec.containers[0].env}
        assert env["JOB_COMPLETION_INDEX"].value_from.field_ref.field_path == \
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        log = k8s.core.read_namespaced_pod_log(p.metadata.name, "default", _preload_content=False).data
        assert log == f"{index}\n".encode()
    events = k8s.core.list_namespaced_event("default", field_selector="involvedObject.name=idx,reason=SuccessfulCreate")
    # client-go's event correlator: from the 10th distinct message on, one "(combined from similar events)" event
    plain = [e for e in events.items if not e.message.startswith("(combined")]
    (combined,) = [e for e in events.items if e.message.startswith("(combined from similar events): Created pod: ")]
    assert len(plain) == 9 and all(e.message.startswith("Created pod: idx-") and e.count == 1 for e in plain)
    assert combined.count == 11 and sum(e.count for e in events.items) == 20


def test_nonindexed_completions_and_parallelism(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.batch.create_namespaced_job("default", job("plain", completions=3, parallelism=2))
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "plain")) == "Complete"
    pods = pods_of(fake_cluster, "plain")
    assert len(pods) == 3 and all(re.fullmatch(r"plain-[a-z0-9]{5}", p["metadata"]["name"]) for p in pods)
    assert all("batch.kubernetes.io/job-completion-index" not in p["metadata"].get("labels", {}) for p in pods)
    assert job_status(fake_cluster, "plain")["succeeded"] == 3
    assert fake_cluster.events_for("plain", reason="Completed")[0]["message"] == "Job completed"


def test_backoff_limit(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.batch.create_namespaced_job("default", job("fails", "raise SystemExit(3)", backoffLimit=2))
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "fails")) == "Failed"
    status = k8s.batch.read_namespaced_job_status("fails", "default").status
    assert status.failed == 3 and not status.succeeded and not status.active
    failed = {c.type: c for c in status.conditions}
    assert failed["FailureTarget"].reason == failed["Failed"].reason == "BackoffLimitExceeded"
    assert failed["Failed"].message == "Job has reached the specified backoff limit"
    ev = fake_cluster.events_for("fails", reason="BackoffLimitExceeded")
    assert ev and ev[0]["type"] == "Warning"
    assert all(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
               for p in pods_of(fake_cluster, "fails"))


def test_backoff_limit_per_index(fake_cluster: FakeCluster, k8s: Any) -> None:
    code = "import os, sys; sys.exit(1 if os.environ['JOB_COMPLETION_INDEX'] == '1' else 0)"
    k8s.batch.create_namespaced_job("default", job("per", code, completions=4, parallelism=4,
                                                   completionMode="Indexed", backoffLimitPerIndex=1))
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "per")) == "Failed"
    status = k8s.batch.read_namespaced_job_status("per", "default").status
    assert status.failed_indexes == "1" and status.completed_indexes == "0,2-3"
    assert status.failed == 2 and status.succeeded == 3
    assert [c.reason for c in status.conditions if c.type == "Failed"] == ["FailedIndexes"]
    index1 = [p for p in pods_of(fake_cluster, "per")
              if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1"]
    counts = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"] for p in index1)
    assert counts == ["0", "1"]


def test_active_deadline_kills_pods(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.batch.create_namespaced_job("default", job("slow", "import time; time.sleep(60)", activeDeadlineSeconds=1))
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "slow"), 10) == "Failed"
    status = job_status(fake_cluster, "slow")
    assert [c["reason"] for c in status["conditions"] if c["type"] == "Failed"] == ["DeadlineExceeded"]
    assert fake_cluster.events_for("slow", reason="DeadlineExceeded")[0]["message"] == \
        "Job was active longer than specified deadline"
    assert status.get("active", 0) == 0 and status["failed"] == 1
    pods = pods_of(fake_cluster, "slow")
    assert not pods or all(p["status"]["phase"] == "Failed" for p in pods)


def test_ttl_after_finished_deletes_job_and_pods(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.batch.create_namespaced_job("default", job("ttl", ttlSecondsAfterFinished=0))
    fake_cluster.wait_for(lambda: fake_cluster.get("jobs", "ttl") is None and not pods_of(fake_cluster, "ttl"), 10)


def test_suspend_and_resume(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.batch.create_namespaced_job("default", job("sus", suspend=True))
    fake_cluster.wait_for(lambda: any(c["type"] == "Suspended" for c in job_status(fake_cluster, "sus")
                                      .get("conditions", [])))
    assert pods_of(fake_cluster, "sus") == []
    k8s.batch.patch_namespaced_job("sus", "default", {"spec": {"suspend": False}})
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "sus")) == "Complete"
    cond = next(c for c in job_status(fake_cluster, "sus")["conditions"] if c["type"] == "Suspended")
    assert (cond["status"], cond["reason"]) == ("False", "JobResumed")


def test_on_failure_restarts_in_place(fake_cluster: FakeCluster, k8s: Any) -> None:
    code = "import os, sys; p = os.environ['TMPDIR'] + '/n'; n = int(open(p).read()) if os.path.exists(p) else 0; " \
           "open(p, 'w').write(str(n + 1)); print('try', n, flush=True); sys.exit(0 if n >= 2 else 1)"
    k8s.batch.create_namespaced_job("default", job("retry", code, restart="OnFailure"))
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "retry"), 15) == "Complete"
    (pod,) = pods_of(fake_cluster, "retry")
    cs = pod["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 2 and cs["lastState"]["terminated"]["exitCode"] == 1
    name = pod["metadata"]["name"]
    prev = k8s.core.read_namespaced_pod_log(name, "default", previous=True, _preload_content=False).data
    assert prev == b"try 1\n"
    assert fake_cluster.events_for(name, reason="BackOff")
