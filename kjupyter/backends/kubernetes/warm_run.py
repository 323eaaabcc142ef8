"""What a run in a warm worker does differently: the hooks :class:`~kjupyter.backends.kubernetes.run.KubeRun`
calls (see :mod:`kjupyter.backends.kubernetes.warm` for the whole story)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kjupyter import run_events as ev
from kjupyter import store as st
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes.writes import stop_job, stop_mark, stop_run
from kjupyter.errors import ApiError, BackendError, KjupyterError
from kjupyter.run_events import Phase
from kjupyter.runner.warm import cancel_bytes, cancel_name

if TYPE_CHECKING:
    from kjupyter.backends.kubernetes.run import KubeRun, _Pod
    from kjupyter.backends.kubernetes.warm import Pool, Worker

HARD_STOP_S = 5.0  # after a cancel, how long the run's process may take to die before the pod is deleted


class WarmRun:
    """What a run in a warm pod does differently (the hooks :class:`KubeRun` calls)."""

    def __init__(self, pool: Pool, run_id: str, *, compat: str, window: float, run_dir: st.RunDir, key: bytes,
                 worker: Worker | None = None, seq: int = 0, since: float | None = None,
                 resubmit: Callable[[], None] | None = None, note: Callable[..., None] | None = None,
                 reserved: bool = False) -> None:  # fmt: skip
        self.pool = pool
        self.run_id = run_id
        self.compat = compat
        self.window = window
        self.run_dir = run_dir
        self.key = key
        self.worker = worker  # None: the first run of a new warm Job (its pod is not known yet)
        self.reused = worker is not None
        self.seq = seq
        self.since = since  # monotonic time of the ticket: the log is read from a little before it
        self.since_wall = time.time() if since is not None else None  # ... and the run's usage counts from then
        self.resubmit = resubmit
        self.note = note  # writes run.json in turn with the run's record (RunRecord.note)
        self.submitted = time.monotonic()
        self.started = False
        self.cancels = 0
        self.lock = threading.Lock()
        self.reserved = reserved  # a place in the pool's max_warm, held from submit until the first run ends

    def release(self) -> None:
        """Give back the pool place held since submit (once): the run ended, became a worker, or never started."""
        with self.lock:
            reserved, self.reserved = self.reserved, False
        if reserved:
            self.pool.unreserve()

    # --- the run's pod and log ----------------------------------------------------------------
    def owns(self, pod: dict[str, Any]) -> bool:
        """Whether ``pod`` is this run's: the warm pod it was handed to, or a pod of its own Job."""
        meta = pod.get("metadata", {})
        if self.reused:
            assert self.worker is not None
            return bool(meta.get("name") == self.worker.pod)
        return any(ref.get("name") == mf.job_name(self.run_id) for ref in meta.get("ownerReferences") or [])

    def prepare_log(self, log: Any) -> None:
        log.filter.until_end = True  # the lines after this run's end frame are the next run's
        if self.reused:
            log.filter.gated = True  # the lines before its first frame are earlier runs'
            log.last_seen = self.since

    # --- frames -----------------------------------------------------------------------------
    def on_frame(self, run: KubeRun, state: _Pod, what: str) -> None:
        from kjupyter.backends.kubernetes import warm

        if what == "start" and not self.started:
            self.started = True
            waited = time.monotonic() - self.submitted
            if self.reused:
                assert self.worker is not None
                run.emit(ev.PhaseChanged(run.run_id, Phase.RUNNING, message=f"on warm worker {self.worker.pod} "
                                         f"(started {waited:.2f}s after submit)", pod=state.name))  # fmt: skip
                self._note(warm.note(self.worker, waited_s=round(waited, 3))["warm"] | {"seq": self.seq})
            return
        if what not in ("done", "fail", "cancelled", "timeout"):
            return
        with run.lock:
            if run.finished:
                return
            failed = [i for i, p in run.done.items() if p is not Phase.SUCCEEDED]
            phase = {"cancelled": Phase.CANCELLED}.get(what, Phase.FAILED if failed else Phase.SUCCEEDED)
            reason = {"timeout": "DeadlineExceeded", "cancelled": "Cancelled", "fail": "Error"}.get(what, "")
            verdict = run.task_verdicts.get(0)
            message = verdict[1] if verdict else ""
            run.terminal = (phase, reason, message)
        self._back_to_pool(state.name)
        run.maybe_finish(force=True)

    def _back_to_pool(self, pod: str) -> None:
        worker = self.worker
        if worker is None:
            from kjupyter.backends.kubernetes.warm import Worker  # (warm imports this module)

            worker = self.worker = Worker(self.compat, pod, self.run_id, self.run_dir, self.key, self.window)
            self.release()  # (its place is the worker's now)
            self.pool.add(worker)
        self.pool.release(worker)

    def _note(self, fields: dict[str, Any]) -> None:
        if self.note is None:
            return
        try:
            self.note(warm=fields)
        except Exception as exc:  # only what the listings show: the run goes on
            print(f"kjupyter: could not record the warm worker of run in {self.run_dir.url}: {exc}", file=sys.stderr)

    # --- the pod ended ----------------------------------------------------------------------
    def worker_ended(self, run: KubeRun, index: int | None) -> bool:
        """The pod ended during this run. True if handled here (else the worker-map logic goes on)."""
        if self.worker is not None:
            self.pool.drop(self.worker.pod)
        if not self.reused:
            return False  # the first run's Job replaces its pod, as for a map's worker
        with run.lock:
            stopping = run.stopping
        if stopping is not None:
            with run.lock:
                run.terminal = stopping
            run.maybe_finish(force=True)
            return True
        if index is None and not self.started and self.resubmit is not None:
            threading.Thread(target=self.resubmit, daemon=True, name=f"kjupyter-resubmit-{run.run_id}").start()
            return True
        return False

    # --- cancel -----------------------------------------------------------------------------
    def stop(self, run: KubeRun, phase: Phase, reason: str, message: str) -> bool:
        """Cancel the run's process and keep the pod; a second cancel (or a slow end) deletes the pod."""
        if not (self.reused or run.running) or phase is not Phase.CANCELLED:
            return stop_run(run, phase, reason, message)
        with run.lock:
            if run.finished:
                return False
            run.stopping = (phase, reason, message)
            self.cancels += 1
            first = self.cancels == 1
        if first:
            try:
                self.tickets().write_bytes(cancel_name(self.seq), cancel_bytes(self.worker_key(), self.seq))
            except KjupyterError as exc:
                raise BackendError(f"could not cancel run {run.run_id} on its warm worker: {exc}") from None
            run.after(HARD_STOP_S, lambda: self._hard_stop(run, "its process did not stop within "
                                                                 f"{HARD_STOP_S:g}s"))  # fmt: skip
            return True
        self._hard_stop(run, "it was cancelled twice")
        return True

    def tickets(self) -> st.RunDir:
        return self.worker.tickets if self.worker is not None else self.run_dir

    def worker_key(self) -> bytes:
        return self.worker.key if self.worker is not None else self.key

    def job_run(self, run: KubeRun) -> str:
        return self.worker.job_run if self.worker is not None else run.run_id

    def _hard_stop(self, run: KubeRun, why: str) -> None:
        with run.lock:
            if run.finished:
                return
        run.emit(ev.Diagnosis(run.run_id, "Stopping", f"Deleting the warm worker of run {run.run_id}: {why}."))
        if self.worker is not None:
            self.pool.drop(self.worker.pod)
        try:
            stop_job(run.kube, run.namespace, self.job_run(run), stop_mark(Phase.CANCELLED, "Cancelled", ""))
        except ApiError as exc:
            if exc.status != 404:
                raise
            with run.lock:
                run.terminal = run.stopping
            run.maybe_finish(force=True)
