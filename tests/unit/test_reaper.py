"""Which Jobs a reaper deletes: never-started runs past their pending timeout, on the cluster's clock."""

from __future__ import annotations

from typing import Any

from kjupyter.backends.kubernetes.reaper import stale
from kjupyter.backends.kubernetes.state import k8s_time

NOW = k8s_time("2026-12-01T12:00:00Z")


def job(name: str, created: str, *, status: dict[str, Any] | None = None, suspend: bool = False,
        pending: str = "600", deleting: bool = False) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created,
                            "annotations": {"kjupyter.io/pending-timeout": pending}}  # fmt: skip
    if deleting:
        meta["deletionTimestamp"] = created
    return {"metadata": meta, "spec": {"suspend": suspend}, "status": status or {}}


def test_only_runs_that_never_started_and_are_past_their_timeout_are_stale() -> None:
    jobs = [
        job("old-pending", "2026-12-01T11:40:00Z", status={"active": 1, "ready": 0}),  # 20 min > 10 min + 1 min
        job("young-pending", "2026-12-01T11:55:00Z", status={"active": 1}),  # 5 min
        job("old-running", "2026-12-01T11:00:00Z", status={"active": 1, "ready": 1}),
        job("old-done", "2026-12-01T11:00:00Z",
            status={"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
        job("old-suspended", "2026-12-01T11:00:00Z", suspend=True),  # its kernel died before its Secret
        job("patient", "2026-12-01T11:00:00Z", status={"active": 1}, pending="7200"),  # asked to wait 2 h
        job("being-deleted", "2026-12-01T11:00:00Z", deleting=True),
        job("failed-once", "2026-12-01T11:00:00Z", status={"failed": 1, "active": 1}),  # it ran
    ]
    assert [name for name, _ in stale(jobs, NOW)] == ["old-pending", "old-suspended"]
    assert dict(stale(jobs, NOW))["old-pending"] == 1200
