"""Warm workers on Kubernetes: the client half of :mod:`kjupyter.runner.warm`.

A call whose ``keep_warm`` is above 0 (and that has a store) runs in a Job of one warm
worker. When the run ends, its pod waits ``keep_warm`` seconds for the next run of the same
session with a **compatible** spec (:func:`compat_key`: the same cluster, namespace, image,
resources, GPU type, secrets, env, service account and node placement). A compatible run
then creates no Job:

1. its ``run.json`` and payload are written, as for any run;
2. a signed ticket, ``warm/ticket-<n>.json`` in the worker's first run folder, hands it to
   the pod (:func:`kjupyter.runner.warm.ticket_bytes`);
3. the pod's ``kjupyter.io/run`` label is PATCHed to the new run (one API write, against
   three for a new Job), so the shared pod watch routes the pod's events to it and
   ``kjupyter logs RUN`` finds the pod;
4. its :class:`~kjupyter.backends.kubernetes.run.KubeRun` follows the pod's log through a
   gated filter: lines count from the first frame signed with the run's own key (which
   travels in the ticket, wrapped: :func:`kjupyter.runner.warm.wrap_key`) to the run's own
   end frame, never before or after;
5. the run ends on that end frame; the pod goes back to the pool.

A pod that ends before the new run's first frame was lost between runs: the run is
resubmitted as a new Job under the same run id, and that is never reported as a failure.
Cancel writes ``warm/cancel-<n>``: the supervisor kills the run's process and stays warm. A
second cancel, or no end frame :data:`HARD_STOP_S` after the first, deletes the worker's Job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kjupyter import names, run_keys
from kjupyter import run_events as ev
from kjupyter import store as st
from kjupyter.backends.base import SubmitRequest
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes.warm_run import WarmRun
from kjupyter.errors import BackendError, KjupyterError
from kjupyter.run_events import Phase
from kjupyter.runner.warm import cancel_bytes, cancel_name, ticket_bytes, ticket_name, wrap_key

if TYPE_CHECKING:
    from kjupyter.backends.kubernetes.backend import KubernetesBackend
    from kjupyter.backends.kubernetes.run import KubeRun

DEFAULT_KEEP_WARM_S = 60.0  # in a notebook kernel (see the README): scripts get 0, they send no second run
EXPIRY_MARGIN_S = 2.0  # the client stops offering a worker this long before the pod's own window ends
_RUN_ENV = {"KJUPYTER_RUN_ID", run_keys.ENV, "KJUPYTER_WORKER_FAILURES"}  # a run's own env entries


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (IPython with a kernel): the default window depends on it."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    return shell is not None and getattr(shell, "kernel", None) is not None


def window(keep_warm: float | None) -> float:
    """The call's ``keep_warm`` (its own, else its profile's), else the default for this process."""
    if keep_warm is not None:
        return keep_warm
    return DEFAULT_KEEP_WARM_S if in_kernel() else 0.0


def compat_key(objects: mf.RunObjects, session: str) -> str:
    """What must match for a run to go to a warm pod: its pod spec without its run's own fields."""
    pod = objects.job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    parts = [
        objects.job["metadata"].get("annotations", {}).get(mf.ANNOTATION_CLUSTER), objects.job["metadata"]["namespace"],
        session, c["image"], c.get("resources"), [e for e in c.get("env", []) if e["name"] not in _RUN_ENV],
        c.get("envFrom"), pod.get("serviceAccountName"), pod.get("nodeSelector"), pod.get("tolerations"),
        pod.get("imagePullSecrets"),
    ]  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class Worker:
    """A warm pod this session may hand runs to."""

    compat: str
    pod: str
    job_run: str  # the run whose Job it is (its first run)
    tickets: st.RunDir  # the first run's folder, where its tickets go
    key: bytes  # the pod's key (its first run's)
    window: float
    next_seq: int = 1
    expires: float = 0.0  # monotonic time after which it is no longer offered
    busy: str | None = None  # the run it runs


class Pool:
    """The warm workers of one session on one cluster: at most ``max_warm``."""

    def __init__(self, max_warm: int) -> None:
        self.max_warm = max_warm
        self.lock = threading.Lock()
        self.workers: dict[str, Worker] = {}  # pod name -> worker
        self.starting = 0  # first runs of warm Jobs not ended yet (each may become a worker)

    def take(self, compat: str) -> Worker | None:
        now = time.monotonic()
        with self.lock:
            for w in sorted(self.workers.values(), key=lambda w: -w.expires):
                if w.busy is None and w.compat == compat and w.expires > now:
                    w.busy = "?"
                    return w
        return None

    def reserve(self) -> tuple[bool, list[Worker]]:
        """Room for one more warm Job: ``(granted, idle workers to retire to make it)``."""
        now = time.monotonic()
        with self.lock:
            for pod, w in list(self.workers.items()):
                if w.busy is None and w.expires <= now:
                    del self.workers[pod]
            retire = []
            idle = sorted((w for w in self.workers.values() if w.busy is None), key=lambda w: w.expires)
            while len(self.workers) + self.starting >= self.max_warm and idle:
                w = idle.pop(0)
                del self.workers[w.pod]
                retire.append(w)
            granted = len(self.workers) + self.starting < self.max_warm
            if granted:
                self.starting += 1
            return granted, retire

    def add(self, worker: Worker) -> None:
        with self.lock:
            self.workers[worker.pod] = worker

    def unreserve(self) -> None:
        with self.lock:
            self.starting = max(0, self.starting - 1)

    def release(self, worker: Worker) -> None:
        with self.lock:
            worker.busy = None
            worker.expires = time.monotonic() + worker.window - EXPIRY_MARGIN_S
            self.workers[worker.pod] = worker

    def drop(self, pod: str) -> Worker | None:
        with self.lock:
            return self.workers.pop(pod, None)

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        """A pod event no run took: an idle warm pod that ended (or is going) leaves the pool."""
        meta = pod.get("metadata", {})
        if meta.get("name") in self.workers and (
            kind == "DELETED" or meta.get("deletionTimestamp")
            or pod.get("status", {}).get("phase") in ("Succeeded", "Failed")
        ):  # fmt: skip
            self.drop(str(meta["name"]))


def note(worker: Worker | None, **more: Any) -> dict[str, Any]:
    """``run.json``'s ``warm`` of a run handed to ``worker`` (what ``jobs``, the lab and a foreign cancel read)."""
    if worker is None:
        return {}
    return {"warm": {"worker": worker.pod, "job": mf.job_name(worker.job_run), "job_run": worker.job_run,
                     "seq": worker.next_seq, **more}}  # fmt: skip


def retire(worker: Worker) -> None:
    """Tell an idle warm worker to exit now (a signed ticket that says so): its GPU goes back at once."""
    try:
        worker.tickets.write_bytes(ticket_name(worker.next_seq), ticket_bytes(worker.key, worker.next_seq,
                                                                             {"exit": True}))  # fmt: skip
    except Exception as exc:  # it exits by itself when its window ends
        print(f"kjupyter: could not retire warm worker {worker.pod} ({exc}); it exits when its keep_warm window "
              "ends", file=sys.stderr)  # fmt: skip


# --- placing a call ----------------------------------------------------------------------------


def plan(backend: KubernetesBackend, request: SubmitRequest, run_dir: st.RunDir,
         objects: mf.RunObjects) -> tuple[float, Worker | None, WarmRun | None]:  # fmt: skip
    """``(keep_warm, idle worker to reuse, hooks of a new warm Job)`` for a run; ``keep_warm`` 0: no warmth."""
    explicit = request.spec.keep_warm
    name = backend.profile.name
    if request.kind != "call":
        if explicit:
            _say_once(backend, "map", "keep_warm applies to calls and cells: a map's worker pods end with its items")
        return 0.0, None, None
    keep = window(explicit)
    if not keep or backend.profile.max_warm == 0:
        return 0.0, None, None
    compat = compat_key(objects, request.session)
    worker = backend.pool.take(compat)
    if worker is not None:
        return keep, worker, None
    granted, retired = backend.pool.reserve()
    for w in retired:
        retire(w)
    if not granted:
        _say_once(backend, "max_warm", f"the {backend.profile.max_warm} warm worker(s) this session may keep on "
                  f"cluster {name!r} (max_warm) are busy: this run's pod ends with it")  # fmt: skip
        return 0.0, None, None
    return keep, None, WarmRun(backend.pool, request.run_id, compat=compat, window=keep, run_dir=run_dir,
                               key=request.run_key, reserved=True)  # fmt: skip


def no_store(backend: KubernetesBackend, request: SubmitRequest) -> None:
    """An inline run (no store) never stays warm: said once per session, if it asked to."""
    if request.spec.keep_warm:
        _say_once(backend, "inline", f"keep_warm needs a store, and cluster {backend.profile.name!r} has none: its "
                  'pods end with their runs (store = "s3://bucket/prefix" in its profile)')  # fmt: skip


def _say_once(backend: KubernetesBackend, what: str, sentence: str) -> None:
    said: set[str] = backend.__dict__.setdefault("_warm_said", set())
    if what not in said:
        said.add(what)
        print(f"kjupyter: {sentence}.", file=sys.stderr)


def reuse(backend: KubernetesBackend, request: SubmitRequest, user_sink: ev.EventSink, sink: ev.EventSink,
          worker: Worker, run_dir: st.RunDir, note: Callable[..., None]) -> None:  # fmt: skip
    """Hand ``request`` to an idle warm ``worker``: a ticket, one PATCH of its pod's run label, no Job."""
    seq = worker.next_seq
    worker.busy = request.run_id
    hooks = WarmRun(backend.pool, request.run_id, compat=worker.compat, window=worker.window, run_dir=run_dir,
                    key=request.run_key, worker=worker, seq=seq, since=time.monotonic(), note=note,
                    resubmit=lambda: resubmit(backend, request, user_sink))  # fmt: skip
    run = backend._new_run(request.run_id, kind=request.kind, count=1, retries=request.spec.retries, sink=sink,
                           pending_timeout=None, run_key=request.run_key, workers=1, claims="static")  # fmt: skip
    backend.launch(run, request.session, hooks)
    ticket = {"run_id": request.run_id, "run_url": run_dir.url, "timeout": request.spec.timeout,
              "retries": request.spec.retries, "key": wrap_key(worker.key, request.run_id, request.run_key)}  # fmt: skip
    try:
        worker.tickets.write_bytes(ticket_name(seq), ticket_bytes(worker.key, seq, ticket))
    except BaseException:  # the worker never saw it: it is still idle, waiting for this same ticket number
        run.abandon()
        with backend._lock:
            backend._runs.pop(request.run_id, None)
        backend.pool.release(worker)
        raise
    worker.next_seq = seq + 1
    kube = backend.kube
    label = mf.run_labels(request.run_id, session=request.session, user=request.user, kind=request.kind)
    try:
        kube.call(f"hand run {request.run_id} to warm worker {worker.pod}", kube.core.patch_namespaced_pod,
                  worker.pod, backend.namespace, {"metadata": {"labels": {mf.LABEL_RUN: label[mf.LABEL_RUN]}}})  # fmt: skip
    except KjupyterError as exc:  # the pod is gone (404), or cannot be relabelled: the run goes to a new Job
        with contextlib.suppress(Exception):
            worker.tickets.write_bytes(cancel_name(seq), cancel_bytes(worker.key, seq))
        print(f"kjupyter: warm worker {worker.pod} could not take run {request.run_id} ({exc}); it starts on a "
              "new pod", file=sys.stderr)  # fmt: skip
        resubmit(backend, request, user_sink)


def resubmit(backend: KubernetesBackend, request: SubmitRequest, user_sink: ev.EventSink) -> None:
    """The warm worker was lost before the run started: the run starts again, on a new Job, under its own id."""
    with backend._lock:
        run = backend._runs.pop(request.run_id, None)
    if run is not None:
        run.abandon()
        for p in list(run.pods.values()):
            if p.log is not None:
                p.log.stop()
        if run.warm is not None and run.warm.worker is not None:
            backend.pool.drop(run.warm.worker.pod)
    try:
        backend.submit(request, user_sink)
    except Exception as exc:  # nothing runs: the run ends here, with why
        user_sink(ev.RunFinished(request.run_id, Phase.FAILED, "NotCreated", f"its warm worker was lost before it "
                                 f"started, and a new Job could not be created: {exc}"))  # fmt: skip


def cancel_elsewhere(backend: KubernetesBackend, run_id: str) -> bool | None:
    """Cancel a run on a warm worker from a process that does not follow it (the CLI, the lab).

    None if it is no such run (its Job is then what to delete). Its ``run.json`` names the
    worker's Job and the run's ticket number; the worker's key comes from this machine's key
    files or the Job's Secret, as for ``attach``. The warm worker kills the run's process
    and stays up; the run's own client reports it Cancelled (and it is recorded here too).
    """
    from kjupyter.backends.kubernetes import records

    found = records.own_record(backend, run_id)
    warm = found[1].get("warm") if found is not None else None
    if backend.store is None or not isinstance(warm, dict) or "seq" not in warm:
        return None
    if Phase(str(found[1].get("phase", "Pending"))).finished:  # type: ignore[index]
        return False
    job_run = str(warm["job_run"])
    key = run_keys.load_key(job_run) or backend.run_key(job_run)
    if key is None:
        raise BackendError(f"run {run_id} runs on warm worker {warm.get('worker')}, whose key is neither on this "
                           f"machine nor in its Secret any more: `kubectl delete job {mf.job_name(job_run)}` stops it")  # fmt: skip
    seq = int(warm["seq"])
    backend.store.run(names.current_user(), job_run).write_bytes(cancel_name(seq), cancel_bytes(key, seq))
    records.record_cancel(backend, run_id)
    return True


def log_source(backend: KubernetesBackend, run_id: str,
               pods: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bytes | None, bool]:  # fmt: skip
    """``(pods, key, gated)`` to read a run's log from: a warm worker's log is cut to the run's own lines."""
    from kjupyter.backends.kubernetes import records

    found = records.own_record(backend, run_id)
    warm = found[1].get("warm") if found is not None else None
    if isinstance(warm, dict) and warm.get("worker"):  # it was handed to a warm worker (its label moved on since)
        kube = backend.kube
        try:
            pods = [kube.call(f"read pod {warm['worker']}", kube.core.read_namespaced_pod, str(warm["worker"]),
                              backend.namespace)]  # fmt: skip
        except KjupyterError:
            pods = []
        gated = True
    else:  # a warm worker's first run: its lines come first (its pod's run label may have moved on since)
        if not pods and found is not None:
            kube = backend.kube
            pods = kube.call("list pods", kube.core.list_namespaced_pod, backend.namespace,
                             label_selector=f"batch.kubernetes.io/job-name={mf.job_name(run_id)}").get("items") or []  # fmt: skip
        if not any(mf.ANNOTATION_WARM in (p["metadata"].get("annotations") or {}) for p in pods):
            return pods, None, False
        gated = False
    key = run_keys.load_key(run_id)
    if key is None and pods:
        raise BackendError(f"run {run_id} ran on a warm worker, whose log holds other runs too; only the machine "
                           f"that started it has its key (in {run_keys.keys_dir()}) to tell its lines apart")  # fmt: skip
    return pods, key, gated


def attached(backend: KubernetesBackend, run: KubeRun, job: dict[str, Any]) -> WarmRun | None:
    """The hooks of a warm worker's first run followed by ``kjupyter.attach`` (None for any other Job).

    It ends on its own end frame, not when the pod's window ends; its pod never joins this session's pool.
    """
    if mf.ANNOTATION_WARM not in (job["metadata"].get("annotations") or {}):
        return None
    run_dir = backend._run_dirs.get(run.run_id)
    if run_dir is None or run.outcomes.key is None:
        return None
    return WarmRun(Pool(0), run.run_id, compat="", window=0.0, run_dir=run_dir, key=run.outcomes.key)


def pod_selector(run_id: str, hooks: WarmRun | None) -> str:
    """How to list a run's pods: by its Job for a warm worker (whose run label moves on), else by its run label."""
    return f"batch.kubernetes.io/job-name={mf.job_name(run_id)}" if hooks is not None else mf.selector(run=run_id)
