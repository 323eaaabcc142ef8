"""Deletes runs that are still pending past their ``pending_timeout`` when no live kernel will.

A kernel deletes its own runs that stay pending too long. A kernel that died cannot, and a
pending pod holds back the cluster autoscaler's scale-down. Without a server or an operator,
two things reap such runs:

- every kjupyter session of the user, the first time it uses a cluster (one LIST of the user's
  Jobs, in the background);
- optionally, a namespaced CronJob that ``kjupyter render --reaper`` prints with its minimal
  Role, which reaps every kjupyter Job of the namespace every few minutes
  (``python -m kjupyter.backends.kubernetes.reaper --namespace NS``).

A run is stale when its Job has not ended, none of its pods ever ran (it is suspended, or has no
ready, succeeded or failed pod), and it is older than its ``kjupyter.io/pending-timeout``
annotation plus :data:`MARGIN_S`, measured on the API server's clock (its Date header against the
Jobs' creationTimestamp): never on this machine's clock.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes.client import Kube
from kjupyter.backends.kubernetes.state import JobView, k8s_time
from kjupyter.backends.kubernetes.writes import stop_job
from kjupyter.errors import ApiError, KjupyterError

MARGIN_S = 60.0  # its own kernel gets this long to delete it first
SCHEDULE = "*/5 * * * *"
DEFAULT_PENDING_S = 600.0


def stale(jobs: Iterable[Mapping[str, Any]], now: float, margin: float | None = None) -> list[tuple[str, float]]:
    """``(name, seconds pending)`` of the Jobs that never started and are past their pending timeout."""
    margin = MARGIN_S if margin is None else margin
    out = []
    for job in jobs:
        view = JobView(job)
        if view.terminal is not None or view.meta.get("deletionTimestamp"):
            continue
        status = view.status
        started = any(int(status.get(k) or 0) for k in ("ready", "succeeded", "failed"))
        if started and not view.spec.get("suspend"):
            continue
        annotations = view.meta.get("annotations") or {}
        try:
            limit = float(annotations.get(mf.ANNOTATION_PENDING_TIMEOUT, DEFAULT_PENDING_S))
        except ValueError:
            limit = DEFAULT_PENDING_S
        age = now - k8s_time(view.meta.get("creationTimestamp"))
        if age > limit + margin:
            out.append((str(view.meta.get("name")), age))
    return out


def reap(kube: Kube, namespace: str, user: str | None = None) -> list[str]:
    """Delete the stale runs of ``user`` (every user's if None) in ``namespace``; their names."""
    labels = {"user": user} if user else {}
    data = kube.call("list Jobs", kube.batch.list_namespaced_job, namespace, label_selector=mf.selector(**labels))
    if kube.server_time is None:
        return []  # no server clock: never judge age by ours
    server_now, seen_at = kube.server_time
    now = server_now + (time.monotonic() - seen_at)
    reaped = []
    for name, age in stale(data.get("items") or [], now):
        sentence = (f"still pending {age:.0f}s after it was created, past its pending_timeout, and no kernel "
                    "deleted it (it was reaped)")  # fmt: skip
        try:
            if stop_job(kube, namespace, name, {"kjupyter.io/stopped": f"PendingTimeout: {sentence}"},
                        unless_finished=True):  # fmt: skip
                reaped.append(name)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise
    return reaped


def reap_stale(kube: Kube, namespace: str, cluster: str) -> None:
    """A session's first use of a cluster: delete the user's runs pending past their timeout; say what was done."""
    from kjupyter import names

    try:
        reaped = reap(kube, namespace, names.current_user())
    except KjupyterError as exc:
        print(f"kjupyter: could not look for stale runs on cluster {cluster!r}: {exc}", file=sys.stderr)
        return
    if reaped:
        print(f"kjupyter: deleted {len(reaped)} run(s) of yours still pending past their pending_timeout on "
              f"{cluster!r} (their kernels were gone): {', '.join(reaped)}", file=sys.stderr)  # fmt: skip


def manifests(namespace: str, image: str, name: str = "kjupyter-reaper") -> list[dict[str, Any]]:
    """The CronJob and its minimal RBAC: list, patch and delete Jobs in one namespace."""
    labels = {mf.MANAGED_BY: "kjupyter", "app.kubernetes.io/component": "reaper"}
    meta = {"name": name, "namespace": namespace, "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "patch", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
        {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta, "spec": {
            "schedule": SCHEDULE, "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 1,
            "jobTemplate": {"spec": {"backoffLimit": 0, "activeDeadlineSeconds": 240, "ttlSecondsAfterFinished": 600,
                "template": {"metadata": {"labels": labels}, "spec": {
                    "serviceAccountName": name, "restartPolicy": "Never",
                    "containers": [{"name": "reaper", "image": image,
                                    "command": ["python", "-m", "kjupyter.backends.kubernetes.reaper",
                                                "--namespace", namespace],
                                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                                  "limits": {"cpu": "50m", "memory": "128Mi"}}}],
                }}}},
        }},
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m kjupyter.backends.kubernetes.reaper --namespace NS`` (in-cluster credentials)."""
    from kjupyter.config import Profile

    parser = argparse.ArgumentParser(prog="kjupyter-reaper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", required=True, help="the namespace whose stale kjupyter runs are deleted")
    args = parser.parse_args(argv)
    try:
        kube = Kube(Profile(name="reaper", backend="kubernetes", in_cluster=True, namespace=args.namespace))
        for name in reap(kube, args.namespace):
            print(f"reaped {name}: pending past its pending_timeout", flush=True)
    except KjupyterError as exc:
        print(f"kjupyter-reaper: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
