"""diagnose.py on recorded pod, job and event dicts: one sentence and a hint per cause."""

from __future__ import annotations

from typing import Any

from kjupyter.backends.kubernetes.diagnosis import diagnose_job, diagnose_pod, pending_timeout


def pod(status: dict[str, Any], memory: str = "1Gi") -> dict[str, Any]:
    return {"metadata": {"name": "r-0-x", "namespace": "ml", "labels": {"batch.kubernetes.io/job-completion-index": "3"}},
            "spec": {"containers": [{"name": "task", "image": "img:1", "resources": {"limits": {"memory": memory}}}]},
            "status": status}  # fmt: skip


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"phase": "Pending", "containerStatuses": [{"name": "task", "image": "img:1",
            "state": {"waiting": {"reason": reason, "message": message}}}]}  # fmt: skip


def terminated(code: int, reason: str = "Error") -> dict[str, Any]:
    return {
        "phase": "Failed",
        "containerStatuses": [{"name": "task", "state": {"terminated": {"exitCode": code, "reason": reason}}}],
    }


UNSCHEDULABLE = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}  # fmt: skip


def test_unschedulable_quotes_the_scheduler() -> None:
    d = diagnose_pod("r", pod(UNSCHEDULABLE))
    assert d is not None and d.reason == "Unschedulable" and "3 Insufficient nvidia.com/gpu" in d.sentence
    assert "GPU" in d.hint and not d.fatal


def test_not_trigger_scale_up_from_events() -> None:
    ev = [{"reason": "NotTriggerScaleUp", "message": "pod didn't trigger scale-up: 2 max node group size reached"}]
    d = diagnose_pod("r", pod(UNSCHEDULABLE), ev)
    assert d is not None and d.reason == "NotTriggerScaleUp" and "max node group size" in d.sentence


def test_image_pull_and_missing_secret_are_fatal() -> None:
    missing = 'Failed to pull image "img:1": rpc error: code = NotFound desc = failed to pull and unpack image: not found'
    d = diagnose_pod("r", pod(waiting("ErrImagePull", missing)))
    assert d is not None and d.fatal and "'img:1' cannot be pulled" in d.sentence and "not found" in d.sentence
    # a registry that is briefly down is retried (the run says so), not failed
    busy = 'Failed to pull image "img:1": rpc error: code = Unknown desc = ...: 503 Service Unavailable'
    d = diagnose_pod("r", pod(waiting("ErrImagePull", busy)))
    assert d is not None and not d.fatal and d.reason == "ImagePullRetrying" and "503" in d.sentence
    # the back-off's own message is no reason: the kubelet's last pull failure event is
    events = [{"reason": "Failed", "message": missing}, {"reason": "Failed", "message": "Error: ErrImagePull"}]
    d = diagnose_pod("r", pod(waiting("ImagePullBackOff", 'Back-off pulling image "img:1"')), events)
    assert d is not None and d.fatal and "not found" in d.sentence
    d = diagnose_pod("r", pod(waiting("CreateContainerConfigError", 'secret "aws" not found')))
    assert d is not None and d.fatal and 'secret "aws" not found' in d.sentence and "'ml'" in d.hint


def test_oom_crash_and_eviction() -> None:
    d = diagnose_pod("r", pod(terminated(137, "OOMKilled"), memory="2Gi"), count=5)
    assert d is not None and d.reason == "OOMKilled" and "Task 3 ran out of memory" in d.sentence and '"4Gi"' in d.hint
    d = diagnose_pod("r", pod(terminated(139)), log_tail=["step 1", "step 2"])
    assert d is not None and d.reason == "Crashed" and "139 (SIGSEGV)" in d.sentence and "step 2" in d.hint
    assert diagnose_pod("r", pod(terminated(1))) is None  # a Python exception: the outcome explains it
    d = diagnose_pod(
        "r", pod({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."})
    )
    assert d is not None and d.reason == "Evicted" and "low on resource" in d.sentence


def test_job_deadline_and_pending_timeout() -> None:
    job = {"spec": {"activeDeadlineSeconds": 5}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}  # fmt: skip
    d = diagnose_job("r", job)
    assert d is not None and d.reason == "DeadlineExceeded" and "timeout of 5s" in d.sentence
    assert diagnose_job("r", {"status": {}}) is None
    last = diagnose_pod("r", pod(UNSCHEDULABLE))
    d = pending_timeout("r", 30, last)
    assert d.fatal and "pending after 30s" in d.sentence and "Insufficient nvidia.com/gpu" in d.sentence
