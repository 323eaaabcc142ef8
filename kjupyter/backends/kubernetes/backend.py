"""The Kubernetes backend: one Job per run, status from shared watches, logs streamed.

Payloads travel through the profile's store (``--run URL``), or, with no store,
inline: the payload in a Secret owned by the Job (mounted as a volume) and the
outcome printed by the runner on framed lines of the pod's log, read back and
hidden from the user's log (up to 1 MiB each way).

The image must have kjupyter installed (``pip install kjupyter``): pods run
``python -m kjupyter.runner``.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import functools
import io
import queue
import threading
from collections.abc import Iterator
from typing import IO, Any

from kjupyter import names, run_keys
from kjupyter import store as st
from kjupyter.backends.base import Backend, Check, GpuReport, RunList, SubmitRequest
from kjupyter.backends.kubernetes import gpus, records, warm
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes.client import Kube
from kjupyter.backends.kubernetes.logs import LogAccess, pod_lines
from kjupyter.backends.kubernetes.render import DEFAULT_IMAGE, render, target_for
from kjupyter.backends.kubernetes.run import KubeRun
from kjupyter.backends.kubernetes.warm_run import WarmRun
from kjupyter.backends.kubernetes.watch import Watcher
from kjupyter.backends.kubernetes.writes import create, move_away, stop_job, stop_mark
from kjupyter.backends.run_record import RunRecord, open_result, run_meta
from kjupyter.config import Profile
from kjupyter.errors import ApiError, BackendError, ConfigError
from kjupyter.event_hub import Lanes, Timers
from kjupyter.run_events import Event, EventSink, LogLine, Phase, RunFinished
from kjupyter.spec import RunSpec

KEEP_ENDED_RUNS = 32  # ended runs whose inline outcomes are still held (their futures read them at once)
MAX_FOLLOWED_LOGS = 20  # concurrently followed log streams per backend; other pods are read when they end


class KubernetesBackend(Backend):
    """Runs on the cluster of a ``backend = "kubernetes"`` profile."""

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self._kube: Kube | None = None
        self.store = st.RunStore(profile.store, dict(profile.store_options)) if profile.store else None
        self._runs: dict[str, KubeRun] = {}
        self._watcher: Watcher | None = None
        self._outcomes: dict[str, Any] = {}
        self._run_dirs: dict[str, st.RunDir] = {}
        self._lock = threading.Lock()
        self._kube_lock = threading.Lock()
        self._slots = threading.Semaphore(MAX_FOLLOWED_LOGS)
        self._work = Lanes(f"kjupyter-k8s-{profile.name}")
        self._timers = Timers(self._work, f"kjupyter-k8s-timers-{profile.name}")
        self._log_access = LogAccess()
        self._ended_runs: collections.deque[str] = collections.deque()
        self.pool = warm.Pool(profile.max_warm)  # this session's warm workers on this cluster

    @property
    def kube(self) -> Kube:
        with self._kube_lock:
            if self._kube is None:
                self._kube = Kube(self.profile)
            return self._kube

    @property
    def namespace(self) -> str:
        return self.kube.namespace

    # --- Backend protocol ---------------------------------------------------------------

    def submit(self, request: SubmitRequest, sink: EventSink) -> None:
        kube = self.kube
        target = target_for(self.profile, kube.namespace)
        common: dict[str, Any] = dict(
            run_id=request.run_id, kind=request.kind, spec=request.spec, target=target, count=request.count,
            parallelism=request.parallelism, user=request.user, session=request.session, function=request.function,
        )  # fmt: skip
        user_sink, record, warm_run = sink, None, None
        run_dir = self.store.run(request.user, request.run_id) if self.store is not None else None
        workers, claims, _ = mf.worker_layout(request.kind, request.spec, request.count, request.parallelism,
                                              run_dir.url if run_dir else None)  # fmt: skip
        if run_dir is not None:
            objects = mf.build(**common, run_url=run_dir.url, run_key=request.run_key)
            # A call may go to a compatible warm worker, or run in a Job that becomes one (kubernetes.warm)
            keep_warm, worker, warm_run = warm.plan(self, request, run_dir, objects)
            if keep_warm:
                objects = mf.build(**common, run_url=run_dir.url, run_key=request.run_key, keep_warm=keep_warm)
                workers, claims = 1, "static"
            record = RunRecord(run_dir)
            record.create(run_meta(request, cluster=self.profile.name, backend="kubernetes", namespace=kube.namespace,
                                   job=mf.job_name(worker.job_run if worker else request.run_id), workers=workers,
                                   claims=claims if workers else "", **warm.note(worker)))  # fmt: skip
            sink = record.wrap(sink)
            run_dir.write_bytes(st.PAYLOAD, request.payload)
            if request.items is not None:
                run_dir.write_bytes(st.ITEMS, request.items)
            self._run_dirs[request.run_id] = run_dir
            if worker is not None:
                warm.reuse(self, request, user_sink, sink, worker, run_dir, record.note)
                return
        else:
            inline = {st.PAYLOAD: request.payload}
            if request.items is not None:
                inline[st.ITEMS] = request.items
            size = sum(len(v) for v in inline.values())
            if size > mf.INLINE_LIMIT:
                raise BackendError(
                    f"the payload of run {request.run_id} is {size} bytes, more than the {mf.INLINE_LIMIT} bytes "
                    f"that can travel without a store; configure a store for cluster {self.profile.name!r} "
                    '(store = "s3://bucket/prefix" in its profile)'
                )
            objects = mf.build(**common, inline=inline, run_key=request.run_key)
            warm.no_store(self, request)
        run = self._new_run(request.run_id, kind=request.kind, count=request.count, retries=request.spec.retries,
                            sink=sink, pending_timeout=request.spec.pending_timeout or self.profile.pending_timeout,
                            wait_for_capacity=request.spec.pending_timeout is not None,
                            run_key=request.run_key, workers=workers, claims=claims)  # fmt: skip
        run.own_payload_secret = True
        self.launch(run, request.session, warm_run)
        try:
            create(kube, objects)
        except BaseException:
            run.abandon()
            self._ended(request.run_id)  # (a warm Job's pool place goes back too)
            if record is not None:
                with contextlib.suppress(Exception):
                    record.finish(Phase.FAILED, "NotCreated")
            raise

    def launch(self, run: KubeRun, session: str, warm_run: WarmRun | None = None) -> None:
        """Follow ``run`` (on the shared watches of its session) and start its clock, before its objects exist."""
        run.warm = warm_run
        with self._lock:
            self._runs[run.run_id] = run
            self._outcomes[run.run_id] = run.outcomes
        self._follow_session(session)
        run.start()

    def _new_run(self, run_id: str, *, kind: str, count: int, retries: int, sink: EventSink,
                 pending_timeout: float | None, wait_for_capacity: bool = False,
                 run_key: bytes | None = None, workers: int = 0, claims: str = "") -> KubeRun:  # fmt: skip
        return KubeRun(self.kube, self.namespace, run_id, kind=kind, count=count, retries=retries, sink=sink,
                       slots=self._slots, pending_timeout=pending_timeout, on_end=self._ended, timers=self._timers,
                       log_access=self._log_access, wait_for_capacity=wait_for_capacity, run_key=run_key,
                       workers=workers, claims=claims)  # fmt: skip

    def _follow_session(self, session: str) -> bool:
        """Make the namespace's shared watches follow the runs of ``session`` too; True if they now list them."""
        kube = self.kube
        with self._lock:
            watcher = self._watcher
            if watcher is None:
                self._work.submit("reaper", self._reap_once)
                watcher = self._watcher = Watcher(kube, kube.namespace, session, self._on_pod, self._on_job,
                                                  on_error=self._watch_refused)  # fmt: skip
                watcher.start()
                return True
        return watcher.add_session(session)

    def _run_of(self, obj: dict[str, Any]) -> KubeRun | None:
        run_id = (obj.get("metadata", {}).get("labels") or {}).get(mf.LABEL_RUN) or obj.get("metadata", {}).get("name")
        with self._lock:
            return self._runs.get(str(run_id))

    # Watch threads only hand objects over: each run digests them on its own lane (diagnosis,
    # event LISTs, deletes), so a slow request for one run never holds back a watch or another run.
    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        run = self._run_of(pod)
        if run is not None:
            self._work.submit(run.run_id, lambda: run.on_pod(kind, pod))
        else:  # (an idle warm worker that ended leaves the pool)
            self.pool.on_pod(kind, pod)

    def _on_job(self, kind: str, job: dict[str, Any]) -> None:
        run = self._run_of(job)
        if run is not None:
            self._work.submit(run.run_id, lambda: run.on_job(kind, job))

    def _watch_refused(self, exc: BackendError) -> None:
        """401/403 on a watch: every run followed here is told, once, and none is judged."""
        with self._lock:
            runs = list(self._runs.values())
        sentence = (f"kjupyter cannot follow this run: {exc} The run itself goes on in the cluster; "
                    "`kjupyter attach RUN` follows it again once the Role is fixed.")  # fmt: skip
        for run in runs:
            self._work.submit(run.run_id, functools.partial(run.lost, "WatchForbidden", sentence))

    def _ended(self, run_id: str) -> None:
        with self._lock:
            if (run := self._runs.pop(run_id, None)) is not None and run.warm is not None:
                run.warm.release()  # (a warm Job's reservation ends with its first run, whatever its end)
            self._ended_runs.append(run_id)
            while len(self._ended_runs) > KEEP_ENDED_RUNS:  # outcomes of older runs were read long ago
                old = self._ended_runs.popleft()
                if old not in self._runs:
                    self._outcomes.pop(old, None)
                    self._run_dirs.pop(old, None)

    def attach(self, run_id: str, sink: EventSink) -> None:
        self._attach(run_id, sink)

    def _attach(self, run_id: str, sink: EventSink) -> KubeRun:
        """Follow a run on the shared watches (adding its session to them): no watch of its own."""
        with self._lock:
            run = self._runs.get(run_id)
        if run is not None:
            run.add_sink(sink)
            return run
        job = self._job(run_id)
        spec = job.get("spec", {})
        labels = job["metadata"].get("labels", {})
        kind = str(labels.get(mf.LABEL_KIND, "call"))
        retries = int(spec.get("backoffLimitPerIndex", spec.get("backoffLimit", 0)) or 0)
        workers, claims, count = mf.worker_plan(job)
        url = job["metadata"].get("annotations", {}).get(mf.ANNOTATION_STORE)
        if url and self.store is not None:  # where its results are (only under your prefix): no second read of the Job
            url = self.store.own_run_url(url, names.current_user(), run_id)
            run_dir = self._run_dirs[run_id] = st.open_run_dir(url, dict(self.profile.store_options))
            if run_dir.exists(st.RUN_JSON):  # its end gets recorded even if the process that started it is gone
                sink = RunRecord(run_dir).wrap(sink)
        run = self._new_run(run_id, kind=kind, count=count, retries=retries if not workers else mf.item_retries(job),
                            sink=sink, pending_timeout=None, run_key=run_keys.load_key(run_id) or self.run_key(run_id),
                            workers=workers, claims=claims)  # fmt: skip
        run.warm = warm.attached(self, run, job)  # (a warm worker's first run: it ends on its own end frame)
        with self._lock:
            self._runs[run_id] = run
            self._outcomes[run_id] = run.outcomes
        run.start()
        if not self._follow_session(str(labels.get(mf.LABEL_SESSION, ""))) or run.warm is not None:
            # What the watches will not replay (they followed that session already; a warm pod's label moved on)
            pods = self.kube.call("list pods", self.kube.core.list_namespaced_pod, self.namespace,
                                  label_selector=warm.pod_selector(run_id, run.warm))  # fmt: skip
            self._work.submit(run_id, lambda: run.on_job("SYNC", job))
            for pod in pods.get("items") or []:
                self._work.submit(run_id, functools.partial(run.on_pod, "SYNC", pod))
        return run

    def cancel(self, run_id: str) -> bool:
        """Cancel a run of this process, or of any other (the CLI, the JupyterLab sidebar).

        The Job is first annotated ``kjupyter.io/cancelled-by: USER`` and then deleted, so the
        client watching it reports Cancelled, not a Job deleted by someone else.
        """
        with self._lock:
            run = self._runs.get(run_id)
        if run is not None:
            return run.stop(Phase.CANCELLED, "Cancelled", "the run was cancelled")  # (raises if refused)
        if (on_warm_worker := warm.cancel_elsewhere(self, run_id)) is not None:
            return on_warm_worker
        try:
            stopped = stop_job(self.kube, self.namespace, run_id, stop_mark(Phase.CANCELLED, "Cancelled", ""),
                               unless_finished=True)  # fmt: skip
        except ApiError as exc:
            if exc.status in (404, 409):  # no such run (any more)
                return False
            raise
        if stopped:  # recorded even when no client follows the run (its kernel is gone)
            records.record_cancel(self, run_id)
        return stopped

    def move_away(self, run_id: str, sentence: str) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
        return move_away(run, sentence) if run is not None else self.cancel(run_id)

    def gpu_report(self) -> GpuReport:
        return gpus.safe_report(lambda: self.kube, self.profile)

    def run_key(self, run_id: str) -> bytes | None:
        """The run's key from its Secret (for a run started on another machine), or None if it has none."""
        kube = self.kube
        try:
            secret = kube.call(f"read the Secret of run {run_id}", kube.core.read_namespaced_secret,
                               mf.secret_name(run_id), kube.namespace)  # fmt: skip
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        value = (secret.get("data") or {}).get(mf.RUN_KEY)
        return bytes.fromhex(base64.b64decode(value).decode()) if value else None

    def open_outcome(self, run_id: str, index: int) -> contextlib.AbstractContextManager[IO[bytes]]:
        outcomes = self._outcomes.get(run_id)
        data = outcomes.get(index) if outcomes is not None else None
        if data is not None:
            return contextlib.nullcontext(io.BytesIO(data))
        if self.store is None:  # an inline result travels in the pod's log, and only there
            raise records.no_inline_outcome(self, run_id, index, refused=self._log_access.refused)
        return open_result(self._run_dirs.get(run_id) or self._foreign_run_dir(run_id), run_id, index)

    def _foreign_run_dir(self, run_id: str) -> st.RunDir | None:
        if self.store is None:
            return None
        with contextlib.suppress(BackendError):
            return self._job_run_dir(self._job(run_id), run_id)
        return None

    def _job_run_dir(self, job: dict[str, Any], run_id: str = "") -> st.RunDir:
        """A Job's run folder in the store (only under your own prefix: IntegrityError otherwise)."""
        run_id = run_id or job["metadata"]["name"]
        url = job["metadata"].get("annotations", {}).get(mf.ANNOTATION_STORE)
        if not url or self.store is None:
            raise BackendError(f"run {run_id} has no store")
        url = self.store.own_run_url(url, names.current_user(), run_id)
        return st.open_run_dir(url, dict(self.profile.store_options))

    def _job(self, run_id: str) -> dict[str, Any]:
        kube = self.kube
        try:
            job: dict[str, Any] = kube.call(
                f"read Job {run_id}", kube.batch.read_namespaced_job, run_id, kube.namespace
            )
        except ApiError as exc:
            if exc.status == 404:  # (a run whose Job is gone says so, and where its record is)
                raise records.no_job(self, run_id) from None
            raise
        return job

    def list_runs(self, user: str | None = None) -> RunList:
        """The user's Jobs merged with the run.json records of the store (cost: see :func:`records.list_runs`)."""
        return records.list_runs(self, user or names.current_user())

    def has_run(self, run_id: str) -> bool:
        return records.has_run(self, run_id)

    def logs(self, run_id: str, index: int | None = None, *, follow: bool = False) -> Iterator[str]:
        if follow:
            yield from self._follow_logs(run_id, index)
            return
        kube = self.kube
        data = kube.call("list pods", kube.core.list_namespaced_pod, kube.namespace,
                         label_selector=mf.selector(run=run_id))  # fmt: skip
        pods, key, gated = warm.log_source(self, run_id, data.get("items") or [])  # (a warm worker: other runs too)
        if not pods:
            self._job(run_id)  # a clear error if the run does not exist, or its pods are gone
        workers = any(mf.ANNOTATION_WORKERS in (p["metadata"].get("annotations") or {}) for p in pods)
        yield from pod_lines(kube, kube.namespace, pods, index, workers=workers and key is None, key=key, gated=gated)

    def _follow_logs(self, run_id: str, index: int | None) -> Iterator[str]:
        """Lines as the run prints them (on the shared watches, as ``attach``), until it ends."""
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        run = self._attach(run_id, events.put)
        try:
            while True:
                event = events.get()
                if isinstance(event, LogLine) and (index is None or event.index == index):
                    yield (f"[{event.index}] " if run.count > 1 and index is None else "") + event.text
                elif isinstance(event, RunFinished):
                    return
        finally:
            run.remove_sink(events.put)

    def render(self, spec: RunSpec, *, count: int = 1, kind: str = "call", run_id: str = "render-000000",
               user: str = "", session: str = "", function: str = "") -> list[dict[str, Any]]:  # fmt: skip
        return render(self.profile, spec, count=count, kind=kind, run_id=run_id, user=user, session=session,
                      function=function)  # fmt: skip

    def render_reaper(self) -> list[dict[str, Any]]:
        from kjupyter.backends.kubernetes.reaper import manifests

        return manifests(self.profile.namespace or "default", self.profile.image or DEFAULT_IMAGE)

    def _reap_once(self) -> None:
        """This session's first use of the cluster: delete the user's runs pending past their timeout."""
        from kjupyter.backends.kubernetes.reaper import reap_stale

        reap_stale(self.kube, self.namespace, self.profile.name)

    def doctor(self) -> list[Check]:
        from kjupyter.backends.kubernetes.doctor import doctor

        return doctor(self.profile)

    def close(self) -> None:
        with self._lock:
            watcher, self._watcher = self._watcher, None
            kube, self._kube = self._kube, None
        if watcher is not None:
            watcher.stop()
        if kube is not None:
            kube.close()

    def describe(self) -> dict[str, Any]:
        from kjupyter.backends.kubernetes.doctor import describe

        return describe(self.kube)


__all__ = ["ConfigError", "KubernetesBackend", "render", "target_for"]
