"""How kjupyter stops a run on the cluster: mark the Job with why, then delete it with its pods.

The mark (annotations, see :mod:`kjupyter.backends.kubernetes.state`) lets every other client
watching the run report Cancelled or the real reason, not "deleted outside kjupyter".
"""

from __future__ import annotations

from typing import Any

from kjupyter.backends.kubernetes.client import Kube
from kjupyter.backends.kubernetes.state import ANNOTATION_CANCELLED_BY, ANNOTATION_STOPPED, JobView
from kjupyter.errors import ApiError
from kjupyter.run_events import Phase


def delete_job(kube: Kube, namespace: str, name: str, uid: str | None = None) -> None:
    """Delete the Job with its pods (``uid``: only if it is still that Job, else 409)."""
    body = {"preconditions": {"uid": uid}} if uid else None
    kube.call(f"delete Job {name}", kube.batch.delete_namespaced_job, name, namespace, body=body,
              propagation_policy="Background", grace_period_seconds=0)  # fmt: skip


def stop_mark(phase: Phase, reason: str, message: str, user: str | None = None) -> dict[str, str]:
    """The annotations that tell other clients why kjupyter deletes a Job (see ``_mark``)."""
    from kjupyter import names

    if phase is Phase.CANCELLED:
        return {ANNOTATION_CANCELLED_BY: user or names.current_user()}
    return {ANNOTATION_STOPPED: f"{reason}: {message}"}


def stop_job(kube: Kube, namespace: str, name: str, mark: dict[str, str], *,
             unless_finished: bool = False) -> bool:  # fmt: skip
    """Mark the Job with why it is stopped, then delete that same Job with its pods.

    Two writes: a JSON patch of its annotations (which also returns the Job) and a delete with its
    uid as precondition. With ``unless_finished`` a Job that already finished is left alone (False).
    A Role without ``patch`` on jobs still deletes it, unmarked (watchers then report a deletion from
    outside kjupyter). 404 when there is no such Job, 409 if it was replaced meanwhile.
    """
    ops = [{"op": "add", "path": "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1"), "value": value}
           for key, value in mark.items()]  # fmt: skip
    job: dict[str, Any] | None
    try:
        job = kube.call(f"mark Job {name} as stopped", kube.batch.patch_namespaced_job, name, namespace, ops)
    except ApiError as exc:
        if exc.status != 403:
            raise
        job = kube.call(f"read Job {name}", kube.batch.read_namespaced_job, name, namespace)
    if unless_finished and job is not None and JobView(job).terminal is not None:
        return False
    delete_job(kube, namespace, name, uid=(job or {}).get("metadata", {}).get("uid"))
    return True
