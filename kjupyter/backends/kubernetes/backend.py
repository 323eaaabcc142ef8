"""The Kubernetes backend: one Job per run, status from shared watches, logs streamed.

Payloads travel through the profile's store (``--run URL``), or, with no store,
inline: the payload in a Secret owned by the Job (mounted as a volume) and the
outcome printed by the runner on framed lines of the pod's log, read back and
hidden from the user's log (up to 1 MiB each way).

The image must have kjupyter installed (``pip install kjupyter``): pods run
``python -m kjupyter.runner``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import queue
import threading
from collections.abc import Iterator
from typing import IO, Any

from kjupyter import credentials, names, run_keys
from kjupyter import store as st
from kjupyter.backends.base import MAP, Backend, Check, RunInfo, SubmitRequest
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes.client import Kube
from kjupyter.backends.kubernetes.logs import read_all
from kjupyter.backends.kubernetes.run import KubeRun
from kjupyter.backends.kubernetes.state import JobView, PodView, k8s_time
from kjupyter.backends.kubernetes.stopping import delete_job, stop_job, stop_mark
from kjupyter.backends.kubernetes.watch import Watcher
from kjupyter.backends.run_record import RunRecord, open_result, run_meta
from kjupyter.config import Profile
from kjupyter.errors import ApiError, BackendError, ConfigError
from kjupyter.event_hub import Lanes
from kjupyter.run_events import Event, EventSink, LogLine, Phase, RunFinished
from kjupyter.spec import RunSpec

MAX_FOLLOWED_LOGS = 20  # concurrently followed log streams per backend; other pods are read when they end
DEFAULT_IMAGE = "python:3.11"


def target_for(profile: Profile, namespace: str | None = None) -> mf.Target:
    """The manifest's view of a profile (plain values)."""
    return mf.Target(
        namespace=namespace or profile.namespace or "default",
        image=profile.image or DEFAULT_IMAGE,
        cluster=profile.name,
        service_account=profile.service_account,
        image_pull_secrets=tuple(profile.image_pull_secrets),
        secrets=tuple(profile.secrets),
        gpus=dict(profile.gpus),
        ttl_after_finished=profile.ttl_after_finished,
        labels=dict(profile.labels),
        store_options=credentials.shareable_options(profile.store_options),  # never credentials in a manifest
    )


UID_PLACEHOLDER = "<uid of the created Job>"


def render(profile: Profile, spec: RunSpec, *, count: int = 1, kind: str = "call", run_id: str = "render-000000",
           user: str = "", session: str = "", function: str = "") -> list[dict[str, Any]]:  # fmt: skip
    """The exact objects a run with ``spec`` sends, in the order they are sent.

    Two things are only known when the run is sent: the payload bytes of an
    inline Secret (left empty here) and the uid of the Job that owns it
    (:data:`UID_PLACEHOLDER`).
    """
    target = target_for(profile)
    if profile.store:
        url = f"{profile.store.rstrip('/')}/{user}/{run_id}"
        objects = mf.build(run_id=run_id, kind=kind, spec=spec, target=target, count=count,
                           parallelism=spec.parallelism, user=user, session=session, function=function, run_url=url)  # fmt: skip
    else:
        inline = {st.PAYLOAD: b""} if kind != MAP else {st.PAYLOAD: b"", st.ITEMS: b""}
        objects = mf.build(run_id=run_id, kind=kind, spec=spec, target=target, count=count,
                           parallelism=spec.parallelism, user=user, session=session, function=function, inline=inline)  # fmt: skip
    if objects.secret is not None:
        owner = {"metadata": {"name": objects.job["metadata"]["name"], "uid": UID_PLACEHOLDER}}
        return [objects.job, mf.owned_by(objects.secret, owner)]
    return objects.all()


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
        record: RunRecord | None = None
        if self.store is not None:
            run_dir = self.store.run(request.user, request.run_id)
            record = RunRecord(run_dir)
            record.create(run_meta(request, cluster=self.profile.name, backend="kubernetes",
                                   namespace=kube.namespace, job=mf.job_name(request.run_id)))  # fmt: skip
            sink = record.wrap(sink)
            run_dir.write_bytes(st.PAYLOAD, request.payload)
            if request.items is not None:
                run_dir.write_bytes(st.ITEMS, request.items)
            self._run_dirs[request.run_id] = run_dir
            objects = mf.build(**common, run_url=run_dir.url)
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
            objects = mf.build(**common, inline=inline)
        run = KubeRun(kube, kube.namespace, request.run_id, kind=request.kind, count=request.count,
                      retries=request.spec.retries, sink=sink, slots=self._slots,
                      pending_timeout=request.spec.pending_timeout or self.profile.pending_timeout,
                      on_end=self._ended, run_key=request.run_key)  # fmt: skip
        run.own_payload_secret = objects.secret is not None
        with self._lock:
            self._runs[request.run_id] = run
            self._outcomes[request.run_id] = run.outcomes
        self._follow_session(request.session)
        run.start()
        try:
            create(kube, objects)
        except BaseException:
            run.abandon()
            with self._lock:
                self._runs.pop(request.run_id, None)
            if record is not None:
                with contextlib.suppress(Exception):
                    record.finish(Phase.FAILED, "NotCreated")
            raise

    def _follow_session(self, session: str) -> bool:
        """Make the namespace's shared watches follow the runs of ``session`` too; True if they now list them."""
        kube = self.kube
        with self._lock:
            watcher = self._watcher
            if watcher is None:
                watcher = self._watcher = Watcher(kube, kube.namespace, session, self._on_pod, self._on_job)
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

    def _on_job(self, kind: str, job: dict[str, Any]) -> None:
        run = self._run_of(job)
        if run is not None:
            self._work.submit(run.run_id, lambda: run.on_job(kind, job))

    def _ended(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

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
        url = job["metadata"].get("annotations", {}).get(mf.ANNOTATION_STORE)
        if url and self.store is not None:  # where its results are (only under your prefix): no second read of the Job
            url = self.store.own_run_url(url, names.current_user(), run_id)
            run_dir = self._run_dirs[run_id] = st.open_run_dir(url, dict(self.profile.store_options))
            if run_dir.exists(st.RUN_JSON):  # its end gets recorded even if the process that started it is gone
                sink = RunRecord(run_dir).wrap(sink)
        run = KubeRun(self.kube, self.namespace, run_id, kind=kind, count=int(spec.get("completions", 1)),
                      retries=retries, sink=sink, slots=self._slots, pending_timeout=None, on_end=self._ended,
                      run_key=run_keys.load_key(run_id) or self.run_key(run_id))  # fmt: skip
        with self._lock:
            self._runs[run_id] = run
            self._outcomes[run_id] = run.outcomes
        run.start()
        if not self._follow_session(str(labels.get(mf.LABEL_SESSION, ""))):
            # The watches already follow that session, so they will not replay what happened to this run
            # before now: hand it the Job read above and its pods, once.
            pods = self.kube.call("list pods", self.kube.core.list_namespaced_pod, self.namespace,
                                  label_selector=mf.selector(run=run_id))  # fmt: skip
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
            return run.stop(Phase.CANCELLED, "Cancelled", "the run was cancelled")
        try:
            return stop_job(self.kube, self.namespace, run_id, stop_mark(Phase.CANCELLED, "Cancelled", ""),
                            unless_finished=True)  # fmt: skip
        except ApiError as exc:
            if exc.status in (404, 409):  # no such run (any more)
                return False
            raise

    def open_outcome(self, run_id: str, index: int) -> contextlib.AbstractContextManager[IO[bytes]]:
        outcomes = self._outcomes.get(run_id)
        data = outcomes.get(index) if outcomes is not None else None
        if data is not None:
            return contextlib.nullcontext(io.BytesIO(data))
        return open_result(self._run_dirs.get(run_id) or self._foreign_run_dir(run_id), run_id, index)

    def _foreign_run_dir(self, run_id: str) -> st.RunDir | None:
        if self.store is None:
            return None
        with contextlib.suppress(BackendError):
            url = self._job(run_id)["metadata"].get("annotations", {}).get(mf.ANNOTATION_STORE)
            if url:  # (only under your own prefix: IntegrityError otherwise)
                url = self.store.own_run_url(url, names.current_user(), run_id)
                return st.open_run_dir(url, dict(self.profile.store_options))
        return None

    def _job(self, run_id: str) -> dict[str, Any]:
        kube = self.kube
        try:
            job: dict[str, Any] = kube.call(
                f"read Job {run_id}", kube.batch.read_namespaced_job, run_id, kube.namespace
            )
        except ApiError as exc:
            if exc.status == 404:
                raise BackendError(
                    f"no run {run_id!r} in namespace {kube.namespace}; `kjupyter jobs` lists the runs"
                ) from None
            raise
        return job

    def list_runs(self, user: str | None = None) -> list[RunInfo]:
        from kjupyter import names

        kube = self.kube
        data = kube.call("list Jobs", kube.batch.list_namespaced_job, kube.namespace,
                         label_selector=mf.selector(user=user or names.current_user()))  # fmt: skip
        runs = [self._info(job) for job in data.get("items") or []]
        return sorted(runs, key=lambda r: r.created, reverse=True)

    def _info(self, job: dict[str, Any]) -> RunInfo:
        meta, status = job["metadata"], job.get("status", {})
        return RunInfo(
            run_id=meta["name"], cluster=self.profile.name, phase=JobView(job).phase,
            kind=str(meta.get("labels", {}).get(mf.LABEL_KIND, "call")),
            user=str(meta.get("annotations", {}).get(mf.ANNOTATION_USER, "")),
            function=str(meta.get("annotations", {}).get(mf.ANNOTATION_FUNCTION, "")),
            created=k8s_time(meta.get("creationTimestamp")), finished=k8s_time(status.get("completionTime")) or None,
            total=int(job.get("spec", {}).get("completions", 1)), succeeded=int(status.get("succeeded", 0)),
            failed=int(status.get("failed", 0)), running=int(status.get("active", 0)),
        )  # fmt: skip

    def logs(self, run_id: str, index: int | None = None, *, follow: bool = False) -> Iterator[str]:
        if follow:
            yield from self._follow_logs(run_id, index)
            return
        kube = self.kube
        data = kube.call("list pods", kube.core.list_namespaced_pod, kube.namespace,
                         label_selector=mf.selector(run=run_id))  # fmt: skip
        pods = sorted(
            data.get("items") or [], key=lambda p: (PodView(p).index, p["metadata"].get("creationTimestamp", ""))
        )
        if not pods:
            self._job(run_id)  # a clear error if the run does not exist
        multi = len({PodView(p).index for p in pods}) > 1
        for pod in pods:
            i = PodView(pod).index
            if index is not None and i != index:
                continue
            prefix = f"[{i}] " if multi and index is None else ""
            for line in read_all(kube, kube.namespace, pod["metadata"]["name"], mf.CONTAINER):
                yield prefix + line

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

    def doctor(self) -> list[Check]:
        from kjupyter.backends.kubernetes.doctor import doctor

        return doctor(self.profile)

    def close(self) -> None:
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def describe(self) -> dict[str, Any]:
        from kubernetes import client

        kube = self.kube
        version = kube.call("reach the API server", client.VersionApi(kube.api_client).get_code)
        return {"reachable": True, "detail": f"Kubernetes {version.get('gitVersion', '?')}, namespace {kube.namespace}"}


def create(kube: Kube, objects: mf.RunObjects) -> None:
    """Send a run's objects: the Job, then its payload Secret already owned by the Job.

    A Secret is never without an owner, so nothing can orphan it; if it cannot
    be created the Job (still waiting for it) is deleted with its pod.
    """
    ns = kube.namespace
    name = objects.job["metadata"]["name"]
    job = kube.call(f"create Job {name}", kube.batch.create_namespaced_job, ns, objects.job)
    if objects.secret is None:
        return
    secret = mf.owned_by(objects.secret, job)
    try:
        kube.call(f"create Secret {secret['metadata']['name']}", kube.core.create_namespaced_secret, ns, secret)
    except BaseException:
        with contextlib.suppress(Exception):
            delete_job(kube, ns, name)
        raise


__all__ = ["ConfigError", "KubernetesBackend", "render", "target_for"]
