"""Every write kjupyter makes to a cluster: start a run, and stop it.

Starting sends the Job suspended, then its Secret owned by the Job, then resumes the Job.
Stopping marks the Job with why (annotations, see :mod:`kjupyter.backends.kubernetes.state`),
so every other client watching the run reports Cancelled or the real reason, not "deleted
outside kjupyter", then deletes it with its pods.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes.client import Kube
from kjupyter.backends.kubernetes.state import ANNOTATION_CANCELLED_BY, ANNOTATION_STOPPED, JobView
from kjupyter.errors import ApiError, BackendError, RequestTimedOut
from kjupyter.run_events import Phase

if TYPE_CHECKING:
    from kjupyter.backends.kubernetes.run import KubeRun


def delete_job(kube: Kube, namespace: str, name: str, uid: str | None = None) -> None:
    """Delete the Job with its pods (``uid``: only if it is still that Job, else 409).

    Foreground: the Job stays, marked for deletion, until its pods are gone, so watchers see the
    run end when its pods (and the GPUs they hold) are really released.
    """
    body = {"preconditions": {"uid": uid}} if uid else None
    kube.call(f"delete Job {name}", kube.batch.delete_namespaced_job, name, namespace, body=body,
              propagation_policy="Foreground")  # fmt: skip


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


def create(kube: Kube, objects: mf.RunObjects) -> None:
    """Send a run's objects: the Job (suspended), its Secret already owned by the Job, then resume the Job.

    A Secret is never without an owner, and no pod exists before its Secret does: a client that
    dies in between leaves a suspended Job (no pod, no node held) that the garbage collector, the
    next session's reaper or the Job's TTL remove. A request that timed out is confirmed by a read
    before anything is sent again, so a slow API server never gets two Jobs.
    """
    ns = kube.namespace
    name = objects.job["metadata"]["name"]
    job = _create_once(kube, "Job", name, kube.batch.create_namespaced_job, kube.batch.read_namespaced_job,
                       objects.job)  # fmt: skip
    if objects.secret is None:
        return
    try:
        secret = mf.owned_by(objects.secret, job)
        _create_once(kube, "Secret", secret["metadata"]["name"], kube.core.create_namespaced_secret,
                     kube.core.read_namespaced_secret, secret)  # fmt: skip
        kube.call(f"start Job {name}", kube.batch.patch_namespaced_job, name, ns,
                  [{"op": "replace", "path": "/spec/suspend", "value": False}])  # fmt: skip
    except BaseException:
        with contextlib.suppress(Exception):
            delete_job(kube, ns, name)
        raise


def _create_once(kube: Kube, kind: str, name: str, create_fn: Any, read_fn: Any, body: dict[str, Any]) -> Any:
    """Create ``body``; if the answer never came, read it back: created (it is ours) or sent once more."""
    ns = kube.namespace
    try:
        return kube.call(f"create {kind} {name}", create_fn, ns, body)
    except RequestTimedOut:
        try:
            found = kube.call(f"read {kind} {name}", read_fn, name, ns)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return kube.call(f"create {kind} {name}", create_fn, ns, body)  # it never arrived: once more
        labels = found.get("metadata", {}).get("labels") or {}
        if labels.get(mf.LABEL_RUN) != (body["metadata"].get("labels") or {}).get(mf.LABEL_RUN):
            raise BackendError(f"cannot create {kind} {name}: another object of that name exists") from None
        return found


def stop_run(run: KubeRun, phase: Phase, reason: str, message: str) -> bool:
    """Delete the Job with its pods (Foreground); the run ends when the Job is gone.

    False when the Job had already finished (a finished run is never deleted). A refused
    delete raises: the run goes on, and nothing may say it was stopped.
    """
    with run.lock:
        if run.finished or run.stopping is not None:
            return False
        run.stopping = (phase, reason, message)
    try:
        stopped = stop_job(run.kube, run.namespace, run.run_id, stop_mark(phase, reason, message),
                           unless_finished=True)  # fmt: skip
    except ApiError as exc:
        if exc.status == 404:  # already gone
            stopped = True
        else:
            with run.lock:
                run.stopping = None
            raise
    if not stopped:
        with run.lock:
            run.stopping = None
        return False
    with run.lock:
        run.terminal = run.stopping
    run.lookups.confirm_gone()
    return True


def move_away(run: KubeRun, sentence: str) -> bool:
    """Stop a run to start it elsewhere (a GPU fallback list): only while none of its pods got a node."""
    with run.lock:
        if run.running or any((p.last.get("spec") or {}).get("nodeName") for p in run.pods.values()):
            return False  # it found a place here: it stays
    return run.stop(Phase.FAILED, "Moved", sentence)
