"""Pure builders: a run's values in, the Kubernetes objects to send out (plain dicts).

No network and no globals: :func:`build` takes everything it needs as
arguments (the run, its spec, and a :class:`Target` made from the cluster
profile) and returns the exact objects the Kubernetes backend sends and
``kjupyter render`` prints.

One run is ONE ``batch/v1`` Job in Indexed completion mode (``completions=N``,
``parallelism=P``), a call being a map of one, and ONE Secret: the run's key
(``KJUPYTER_RUN_KEY``, which authenticates its payload and its results) and,
when the payload travels inline (no store), the payload, mounted as a volume.
The Job is created suspended, then the Secret, already carrying its
ownerReference to the Job (:func:`owned_by`), then the Job is resumed: a
Secret can never exist without an owner, so the garbage collector always
removes it with its Job, and no pod is ever created before its Secret exists,
whatever happens to the client in between (a suspended Job holds no node).

The image must have kjupyter installed: the container runs
``python -m kjupyter.runner --run <store URL of the run>`` (or
``--inline <mounted Secret>``).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kjupyter import store as st
from kjupyter.config import GpuType
from kjupyter.errors import ConfigError
from kjupyter.inline_frames import INLINE_LIMIT as INLINE_LIMIT  # payload (+ items) bytes that fit in a Secret
from kjupyter.names import label_value
from kjupyter.run_keys import ENV as RUN_KEY_ENV
from kjupyter.spec import RunSpec, format_cpu, format_memory
from kjupyter.store_errors import protocol_of

MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_RUN = "kjupyter.io/run"
LABEL_SESSION = "kjupyter.io/session"
LABEL_USER = "kjupyter.io/user"
LABEL_KIND = "kjupyter.io/kind"
ANNOTATION_FUNCTION = "kjupyter.io/function"
ANNOTATION_COUNT = "kjupyter.io/count"
ANNOTATION_STORE = "kjupyter.io/store"
ANNOTATION_CLUSTER = "kjupyter.io/cluster"
ANNOTATION_USER = "kjupyter.io/user"
ANNOTATION_PENDING_TIMEOUT = "kjupyter.io/pending-timeout"
ANNOTATION_WORKERS = "kjupyter.io/workers"  # a worker-pod map: its pods' count (completions)
ANNOTATION_CLAIMS = "kjupyter.io/claims"  # ... and how they share the items: dynamic or static
ANNOTATION_WARM = "kjupyter.io/keep-warm"  # a warm worker (kjupyter.runner.warm): seconds it waits for a next run
FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-failure-count"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
CONTAINER = "task"
PAYLOAD_MOUNT = "/var/run/kjupyter/payload"
PAYLOAD_VOLUME = "kjupyter-payload"
RUN_KEY = "run-key"  # the Secret's key that holds the run's key (hex), given to the runner as KJUPYTER_RUN_KEY
# activeDeadlineSeconds when the run has no timeout. DESIGN.md asks for a deadline on every Job: it is the
# backstop that frees the nodes (GPUs above all) of a run nobody watches any more, e.g. an endless loop
# whose kernel is gone. A week lets the longest ordinary training runs finish (they should set timeout=
# anyway); a run that needs longer says so with timeout=.
DEFAULT_DEADLINE_S = 7 * 86400


@dataclass(frozen=True)
class Target:
    """What the cluster profile contributes to every object (plain values, no I/O)."""

    namespace: str = "default"
    image: str = "python:3.11"
    cluster: str = ""
    service_account: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    gpus: Mapping[str, GpuType] = field(default_factory=dict)
    ttl_after_finished: float = 86400.0
    pending_timeout: float = 600.0  # the profile's; a call's pending_timeout= wins
    labels: Mapping[str, str] = field(default_factory=dict)
    # Store options the pods need (endpoint, region...): already shareable, i.e. without credentials
    # (the backend filters them with kjupyter.credentials.shareable_options); copied into every pod's env.
    store_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunObjects:
    """The objects of one run: the Job, then (inline payload) the Secret, created in that order.

    ``secret`` has no ownerReference yet: the Job's uid is only known once it
    exists; :func:`owned_by` adds it before the Secret is sent.
    """

    job: dict[str, Any]
    secret: dict[str, Any] | None = None

    def all(self) -> list[dict[str, Any]]:
        return [o for o in (self.job, self.secret) if o is not None]


def job_name(run_id: str) -> str:
    return run_id


def secret_name(run_id: str) -> str:
    return f"{run_id}-run"


def run_labels(run_id: str, *, session: str, user: str, kind: str) -> dict[str, str]:
    return {
        MANAGED_BY: "kjupyter",
        LABEL_RUN: label_value(run_id),
        LABEL_SESSION: label_value(session),
        LABEL_USER: label_value(user) or "unknown",
        LABEL_KIND: kind,
    }


def selector(**labels: str) -> str:
    """A label selector for kjupyter's objects: ``selector(session="abc")``."""
    keys = {"run": LABEL_RUN, "session": LABEL_SESSION, "user": LABEL_USER}
    parts = [f"{MANAGED_BY}=kjupyter"]
    parts += [f"{keys[k]}={label_value(v)}" for k, v in sorted(labels.items()) if v]
    return ",".join(parts)


def worker_map(kind: str, spec: RunSpec) -> bool:
    """A map runs on at most ``parallelism`` worker pods, unless it asks for one pod per item."""
    return kind == "map" and spec.items_per_pod != 1


def worker_layout(kind: str, spec: RunSpec, count: int, parallelism: int | None,
                  run_url: str | None) -> tuple[int, str, int]:  # fmt: skip
    """``(worker indices, claims, chunk)`` of a map (``(0, "", 1)``: one pod per item).

    ``items_per_pod`` unset: at most ``parallelism`` workers share the items (claimed, or static);
    ``items_per_pod=k > 1``: ``ceil(count / k)`` indices of ``k`` consecutive items each (``chunks``).
    """
    if not worker_map(kind, spec):
        return 0, "", 1
    if spec.items_per_pod:
        return math.ceil(count / spec.items_per_pod), "chunks", spec.items_per_pod
    return max(1, min(count, parallelism or count)), claims_mode(run_url), 1


def claims_mode(run_url: str | None) -> str:
    """``dynamic`` where the store can create an object only if absent (:func:`kjupyter.store.atomic_create`),
    else ``static`` (and inline)."""
    return "dynamic" if run_url and st.atomic_create(protocol_of(run_url)) else "static"


def worker_restarts(retries: int) -> int:
    """How often one worker index may be replaced: each death costs one attempt of the item in flight."""
    return max(6, 3 * (retries + 1))


def worker_plan(job: Mapping[str, Any]) -> tuple[int, str, int]:
    """``(workers, claims, items)`` of a created Job (``workers`` 0: one pod per task)."""
    notes = job.get("metadata", {}).get("annotations") or {}
    items = int(notes.get(ANNOTATION_COUNT) or job.get("spec", {}).get("completions", 1))
    return int(notes.get(ANNOTATION_WORKERS) or 0), str(notes.get(ANNOTATION_CLAIMS, "")), items


def item_retries(job: Mapping[str, Any]) -> int:
    """The per-item ``retries`` of a worker-pod map, from its workers' command line."""
    args = job["spec"]["template"]["spec"]["containers"][0].get("args") or []
    return int(args[args.index("--retries") + 1]) if "--retries" in args else 0


def build(
    *,
    run_id: str,
    kind: str,
    spec: RunSpec,
    target: Target,
    count: int = 1,
    parallelism: int | None = None,
    user: str = "",
    session: str = "",
    function: str = "",
    run_url: str | None = None,
    inline: Mapping[str, bytes] | None = None,
    run_key: bytes = b"",
    keep_warm: float = 0.0,
) -> RunObjects:
    """The Job (suspended) and the Secret (the run's key, and ``inline`` data) of one run.

    Exactly one of ``run_url`` (the run's folder in the store) and ``inline``
    (file name -> bytes, mounted at :data:`PAYLOAD_MOUNT`) is given.
    """
    if (run_url is None) == (inline is None):
        raise ValueError("give exactly one of run_url and inline")
    labels = {
        **{k: label_value(v) for k, v in target.labels.items()},
        **run_labels(run_id, session=session, user=user, kind=kind),
    }
    annotations = {
        ANNOTATION_FUNCTION: function,
        ANNOTATION_COUNT: str(count),
        ANNOTATION_CLUSTER: target.cluster,
        ANNOTATION_USER: user,
        # How long it may stay pending: a reaper deletes it past this even if its kernel is gone.
        ANNOTATION_PENDING_TIMEOUT: str(math.ceil(spec.pending_timeout or target.pending_timeout)),
    }
    if run_url is not None:
        annotations[ANNOTATION_STORE] = run_url
    args = ["--run", run_url] if run_url is not None else ["--inline", PAYLOAD_MOUNT]
    indices, claims, chunk = worker_layout(kind, spec, count, parallelism, run_url)
    warm = keep_warm > 0 and kind == "call" and run_url is not None
    if warm:  # one worker that runs this call, then waits for the next (kjupyter.runner.warm)
        indices, claims, chunk = 1, "static", 1
        annotations[ANNOTATION_WARM] = f"{keep_warm:g}"
    as_workers = indices > 0
    if as_workers:
        annotations[ANNOTATION_WORKERS] = str(indices)
        annotations[ANNOTATION_CLAIMS] = claims
        args += ["--workers", str(indices), "--items", str(count), "--retries", str(spec.retries),
                 "--claims", claims, *(["--chunk", str(chunk)] if chunk > 1 else [])]  # fmt: skip
    if warm:
        args += [
            "--warm",
            f"{keep_warm:g}",
            *(["--timeout", f"{spec.timeout:g}"] if spec.timeout else []),
            *(["--spawn"] if spec.resources.gpu else []),
        ]  # (never fork where CUDA may be)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or target.image,
        "command": ["python", "-m", "kjupyter.runner"],
        "args": args,
        "env": [
            *_env(run_id, spec, target),
            {"name": RUN_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": secret_name(run_id), "key": RUN_KEY}}},
            *(
                [
                    {
                        "name": "KJUPYTER_WORKER_FAILURES",
                        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{FAILURE_COUNT_ANNOTATION}']"}},
                    }
                ]
                if as_workers
                else []
            ),
        ],
        "resources": _resources(spec, target),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    secrets = list(dict.fromkeys([*target.secrets, *spec.secrets]))
    if secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in secrets]
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container], "enableServiceLinks": False}
    if target.service_account:
        pod_spec["serviceAccountName"] = target.service_account
    if target.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in target.image_pull_secrets]
    placement = _placement(spec, target)
    if placement is not None and placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    if placement is not None and placement.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in placement.tolerations]
    data = {RUN_KEY: run_key.hex().encode()}
    if inline is not None:
        container["volumeMounts"] = [{"name": PAYLOAD_VOLUME, "mountPath": PAYLOAD_MOUNT, "readOnly": True}]
        pod_spec["volumes"] = [{"name": PAYLOAD_VOLUME, "secret": {"secretName": secret_name(run_id),
                                                                   "items": [{"key": k, "path": k} for k in sorted(inline)]}}]  # fmt: skip
        data.update(inline)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(run_id), "namespace": target.namespace, "labels": dict(labels)},
        "type": "Opaque",
        "data": {name: base64.b64encode(value).decode() for name, value in sorted(data.items())},
    }
    job_spec: dict[str, Any] = {
        "suspend": True,  # resumed once its Secret exists (kjupyter.backends.kubernetes.backend.create)
        "completionMode": "Indexed",
        "completions": indices if as_workers else count,
        "parallelism": max(1, min(indices or count, parallelism or count)),
        # (a warm worker's runs have their timeouts enforced by its supervisor: the deadline is the backstop)
        "activeDeadlineSeconds": math.ceil(spec.timeout) if spec.timeout and not warm else DEFAULT_DEADLINE_S,
        "ttlSecondsAfterFinished": math.ceil(target.ttl_after_finished),
        "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod_spec},
    }
    if as_workers:  # a dead worker is replaced under its index; item failures are data, not pod failures
        # (a warm worker's pod that dies mid-run is replaced only within the call's retries, as a call's pod)
        job_spec["backoffLimitPerIndex"] = spec.retries if warm else worker_restarts(spec.retries)
        job_spec["backoffLimit"] = 2**31 - 1
        job_spec["podReplacementPolicy"] = "Failed"  # never two pods of one worker index at once
        job_spec["podFailurePolicy"] = {"rules": [
            # the runner could not start (no key, no store): a new pod would fail the same way
            {"action": "FailIndex", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [2]}},
        ]}  # fmt: skip
    elif kind == "map":  # one task's failures do not stop the others
        job_spec["backoffLimitPerIndex"] = spec.retries
        job_spec["backoffLimit"] = 2**31 - 1
    else:
        job_spec["backoffLimit"] = spec.retries
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(run_id),
            "namespace": target.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": job_spec,
    }
    return RunObjects(job=job, secret=secret)


def owner_reference(job: Mapping[str, Any]) -> dict[str, Any]:
    """The ownerReference that makes the garbage collector delete an object with its Job."""
    meta = job["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": False,
        "blockOwnerDeletion": False,
    }


def owned_by(obj: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` with an ownerReference to ``job`` (a created Job, with its uid)."""
    meta = {**obj["metadata"], "ownerReferences": [owner_reference(job)]}
    return {**obj, "metadata": meta}


def _env(run_id: str, spec: RunSpec, target: Target) -> list[dict[str, Any]]:
    env = [{"name": k, "value": v} for k, v in spec.env]
    env.append({"name": "KJUPYTER_RUN_ID", "value": run_id})
    env.append({"name": "PYTHONUNBUFFERED", "value": "1"})
    if target.store_options:
        env.append({"name": "KJUPYTER_STORE_OPTIONS", "value": json.dumps(dict(target.store_options), sort_keys=True)})
    return env


def _placement(spec: RunSpec, target: Target) -> GpuType | None:
    gpu_type = spec.resources.gpu_type
    if spec.resources.gpu and gpu_type:
        if gpu_type not in target.gpus:  # (Session.spec_for says so first, with what to do)
            raise ConfigError(f"cluster {target.cluster!r} has no {gpu_type} GPUs configured")
        return target.gpus[gpu_type]
    if spec.resources.gpu and len(target.gpus) == 1:  # "gpu=1" on a cluster with one GPU type
        return next(iter(target.gpus.values()))
    return None


def _resources(spec: RunSpec, target: Target) -> dict[str, Any]:
    r = spec.resources
    requests: dict[str, str] = {}
    if r.cpu_millis is not None:
        requests["cpu"] = format_cpu(r.cpu_millis)
    if r.memory_bytes is not None:
        requests["memory"] = format_memory(r.memory_bytes)
    limits = dict(requests)  # requests equal limits: no surprise evictions, no noisy neighbours
    if r.gpu:
        placement = _placement(spec, target)
        limits[placement.resource if placement else "nvidia.com/gpu"] = str(r.gpu)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out
