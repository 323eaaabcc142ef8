"""A Kubernetes profile's runs: its Jobs merged with the ``run.json`` records of its store.

A Job does not outlive its run for long: a cancel or a pending timeout deletes it at once,
``ttl_after_finished`` a day later, the reaper the runs its kernel abandoned. The run's
``run.json`` stays until ``kjupyter gc`` removes it, so ``kjupyter jobs``, the lab sidebar and
``kjupyter logs`` find every run in either place: a Job that still exists says the live state,
the record says the rest (why it is pending, how it ended, when), and a run with only its
record is shown as the record says.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from kjupyter import names
from kjupyter import store as st
from kjupyter.backends.base import RunInfo, RunList
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes.items import job_info, with_item_counts
from kjupyter.backends.run_record import failed_items, moves_text, record_info
from kjupyter.errors import ApiError, BackendError, KjupyterError
from kjupyter.run_events import Phase

if TYPE_CHECKING:
    from kjupyter.backends.kubernetes.backend import KubernetesBackend

# A record still Pending or Running whose Job is gone is an orphan once it is this old: younger, its
# client may still be uploading the payload before it creates the Job.
ORPHAN_AFTER_S = 600.0


def list_runs(backend: KubernetesBackend, user: str) -> RunList:
    """The runs of ``user`` on this profile: one entry per run id, newest first.

    Its cost does not grow with requests per run: one listing of ``<store>/<user>/`` and one read of
    each ``run.json`` there (one batched ``cat``; none without a store), then one LIST of the user's
    Jobs. A Job wins for the live state (phase, counts, times); its empty diagnosis takes the record's
    (why a run waits: Unschedulable, waiting for scale-up). A store that cannot be read hides no Job:
    the Jobs are listed, and :attr:`RunList.problems` says in one sentence that the records are missing.
    """
    problems: list[str] = []
    records: dict[str, dict[str, Any]] = {}
    if backend.store is not None:
        records, problems = read_records(backend.store, user)
    kube = backend.kube
    data = kube.call("list Jobs", kube.batch.list_namespaced_job, kube.namespace,
                     label_selector=mf.selector(user=user))  # fmt: skip
    runs: dict[str, RunInfo] = {}
    for job in data.get("items") or []:
        run_id = str(job["metadata"]["name"])
        runs[run_id] = job_entry(job, backend.profile.name, records.get(run_id),
                                 lambda j: backend._job_run_dir(j).read_json(st.RUN_JSON))  # fmt: skip
    now = time.time()
    for run_id, meta in records.items():
        if run_id not in runs:
            runs[run_id] = record_entry(meta, backend.profile.name, kube.namespace, now)
    return RunList(sorted(runs.values(), key=lambda r: r.created, reverse=True), problems)


def read_records(store: st.RunStore, user: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``run.json`` of each run under ``<store>/<user>/`` by run id, and what could not be read (one sentence)."""
    where = f"{store.url}/{user}/"
    try:
        run_ids = [r for r in store.run_ids(user) if not r.startswith(".")]  # (not `kjupyter doctor`'s probes)
        paths = {f"{store.root}/{user}/{r}/{st.RUN_JSON}": r for r in run_ids}
        found = store.fs.cat(list(paths), on_error="return") if paths else {}
    except Exception as exc:  # (StoreError already names the URL; a library error is said as it is)
        return {}, [f"the run records under {where} could not be read ({exc}), so only runs whose Job "
                    "still exists are listed"]  # fmt: skip
    records: dict[str, dict[str, Any]] = {}
    bad: list[str] = []
    for path, data in found.items():
        run_id = paths.get(str(path)) or str(path).rstrip("/").rsplit("/", 2)[-2]
        if isinstance(data, FileNotFoundError):
            continue  # a folder without run.json is no run (yet)
        try:
            if isinstance(data, BaseException):
                raise data
            meta = json.loads(data)
            records[run_id] = {**meta, "run_id": str(meta.get("run_id") or run_id)}
        except Exception as exc:
            bad.append(f"{run_id} ({type(exc).__name__}: {exc})"[:200])
    if bad:
        return records, [f"{len(bad)} run record(s) under {where} could not be read, so those runs are listed only "
                         f"while their Job exists: {', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}"]  # fmt: skip
    return records, []


def job_entry(job: dict[str, Any], cluster: str, record: dict[str, Any] | None = None,
              read_record: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> RunInfo:  # fmt: skip
    """A run whose Job exists: the Job's live state; the record's diagnosis when the Job says none.

    A Job counts pods that wait for a node as active: while the record says no pod of the run has
    started yet, the run is Pending, not Running.
    """
    info = job_info(job, cluster)
    if mf.worker_plan(job)[0]:  # a worker-pod map: its pods are not its items; run.json counts the items
        read = (lambda j: record) if record is not None else read_record
        info = with_item_counts(info, job, read) if read is not None else info
    elif record is not None:
        info = replace(info, diagnosis=info.diagnosis or str(record.get("diagnosis", "")),
                       extra={**info.extra, **failed_items(record)})  # fmt: skip
    if record is not None and record.get("usage"):  # (what its pods used, recorded when the run ended)
        info = replace(info, usage=record_info(record, cluster).usage)
    if record is not None and info.phase is Phase.RUNNING and record.get("phase") == Phase.PENDING.value:
        info = replace(info, phase=Phase.PENDING, running=0)
    moved = moves_text(record or {})
    if moved and not info.diagnosis.startswith(moved):  # (a GPU fallback list moved it here: say from where)
        info = replace(info, diagnosis=f"{moved} {info.diagnosis}".strip())
    return info


def record_entry(meta: dict[str, Any], cluster: str, namespace: str, now: float) -> RunInfo:
    """A run whose Job is gone, as its record says; one of this cluster's that never recorded an end is over."""
    info = record_info(meta, cluster)
    ours = meta.get("backend") == "kubernetes" and info.cluster == cluster and meta.get("namespace") == namespace
    if ours and not info.phase.finished and now - info.created > ORPHAN_AFTER_S:
        return replace(info, phase=Phase.FAILED, running=0, diagnosis=(
            f"Its Job is gone from namespace {namespace} and no client recorded how the run ended."))  # fmt: skip
    return info


def own_record(backend: KubernetesBackend, run_id: str) -> tuple[str, dict[str, Any]] | None:
    """``(url, run.json)`` of the run in the store under your prefix, or None (no store, no record)."""
    if backend.store is None:
        return None
    run_dir = backend.store.run(names.current_user(), run_id)
    if not run_dir.exists(st.RUN_JSON):
        return None
    return f"{run_dir.url}/{st.RUN_JSON}", run_dir.read_json(st.RUN_JSON)


def has_run(backend: KubernetesBackend, run_id: str) -> bool:
    """Whether the run is this profile's: its Job is here, or its record says it ran on this profile."""
    kube = backend.kube
    try:
        kube.call(f"read Job {run_id}", kube.batch.read_namespaced_job, run_id, kube.namespace)
        return True
    except ApiError as exc:
        if exc.status != 404:
            raise
    found = own_record(backend, run_id)
    if found is not None and found[1].get("reason") == "Moved":
        return False  # a GPU fallback list moved it to another cluster (its record there says so)
    return found is not None and found[1].get("backend") == "kubernetes" and found[1].get("cluster") in (
        None, backend.profile.name)  # fmt: skip


def no_job(backend: KubernetesBackend, run_id: str) -> BackendError:
    """The error for a run whose Job is not here: gone with its pods and logs (and where its record is), or unknown."""
    namespace = backend.namespace
    try:
        found = own_record(backend, run_id)
    except KjupyterError:
        found = None
    if found is None:
        return BackendError(f"no run {run_id!r} in namespace {namespace}; `kjupyter jobs` lists the runs")
    url, meta = found
    cluster = str(meta.get("cluster", backend.profile.name))
    if cluster != backend.profile.name:
        return BackendError(f"run {run_id} is not on cluster {backend.profile.name!r}: its record {url} says it "
                            f"ran on cluster {cluster!r} (kjupyter logs {run_id} --cluster {cluster})")  # fmt: skip
    phase = Phase(str(meta.get("phase", "Pending")))
    how = f"it ended {phase.value}" if phase.finished else "its Job was deleted before anyone recorded how it ended"
    return BackendError(f"the Job and pods of run {run_id} are gone from namespace {namespace}, and their logs with "
                        f"them ({how}); the run's record is {url}")  # fmt: skip


def record_cancel(backend: KubernetesBackend, run_id: str) -> None:
    """A run cancelled from here (the CLI, the lab) is recorded Cancelled, even if no client follows it."""
    store, found = backend.store, own_record(backend, run_id)
    if store is None or found is None or Phase(str(found[1].get("phase", "Pending"))).finished:
        return
    counts = found[1].get("counts") or {}
    done = {key: int(counts.get(key, 0)) for key in ("succeeded", "failed")}
    cancelled = max(0, int(found[1].get("count", 1)) - sum(done.values()))  # as its client would count them
    store.run(names.current_user(), run_id).update_meta(
        phase=Phase.CANCELLED.value, reason="Cancelled", finished=time.time(),
        counts={**done, "cancelled": cancelled, "running": 0, "pending": 0},
        diagnosis=f"The run was cancelled by {names.current_user()}.")  # fmt: skip


def no_inline_outcome(backend: KubernetesBackend, run_id: str, index: int, *, refused: bool) -> BackendError:
    """Why an inline result (one that travels in the pod's log, and only there) cannot be had."""
    where = f"cluster {backend.profile.name!r}"
    if refused:
        return BackendError(
            f"the result of run {run_id} (task {index}) travels in its pod's log, and your account may not "
            f"read pod logs (pods/log get in namespace {backend.namespace}): grant it, or configure a store "
            f"for {where} so results go through it"
        )
    return BackendError(
        f"the result of run {run_id} (task {index}) was not found in its pod's log (the pod or its log may "
        f"be gone); configure a store for {where} to keep results"
    )
