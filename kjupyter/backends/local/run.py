"""One local run: its worker processes, the queue of task indices, retries, timeout and cancel.

Each run starts ``min(parallelism, tasks)`` workers (``python -m kjupyter.runner --serve``), each
in its own process group, that run task after task, like the pods of an Indexed Job but reused.

Nothing of a run outlives it in this process: a worker that exits (at the end, or replaced after
it died) is waited for, its pipes are closed and its scratch folder removed, like a pod's; the
timeout's timer is cancelled when the run ends; a run that cannot start stops what it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable

from kjupyter import credentials, run_keys
from kjupyter import run_events as ev
from kjupyter import store as st
from kjupyter.backends.base import SubmitRequest
from kjupyter.backends.local.files import kill_group, state_root, tail
from kjupyter.backends.local.forks import Spawner, WorkerProcess
from kjupyter.config import Profile
from kjupyter.errors import BackendError
from kjupyter.event_hub import EventHub
from kjupyter.run_events import Event, EventSink, Phase


class LocalRun:
    """One run's workers, queue of task indices, and event bookkeeping."""

    def __init__(self, request: SubmitRequest, run_dir: st.RunDir, sink: EventSink,
                 profile: Profile, on_end: Callable[[str], None], spawner: Spawner) -> None:  # fmt: skip
        self.req = request
        self.spawner = spawner
        self.run_dir = run_dir
        self.profile = profile
        self.on_end = on_end
        self.folder = state_root() / request.run_id
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hub = EventHub(request.run_id)
        self.hub.subscribe(sink)
        self.lock = threading.RLock()
        self.todo: queue.Queue[int] = queue.Queue()
        for i in range(request.count):
            self.todo.put(i)
        self.attempts = [0] * request.count
        self.state = {"succeeded": 0, "failed": 0, "running": 0}
        self.workers: list[WorkerProcess] = []  # the live ones (cancel kills them)
        self.workdirs: dict[int, str] = {}  # worker pid -> its scratch folder, removed when it exits
        self.timer: threading.Timer | None = None
        self.threads_started = 0
        self.stopping: str | None = None  # "cancelled" or "timeout"
        self.started = False
        self.task_seconds = 0.0  # wall time of the task processes, summed (the run's Usage)
        self.finished = False
        self.ended = threading.Event()  # every process gone and the end recorded
        self.live_workers = 0

    # events (queued: subscribers run on the run's lane) ---------------------------------
    def emit(self, event: Event) -> None:
        self.hub.publish(event)

    def add_sink(self, sink: EventSink) -> None:
        self.hub.subscribe(sink)

    def progress(self) -> None:
        if self.req.kind == "map":
            s = self.state
            pending = self.req.count - s["succeeded"] - s["failed"] - s["running"]
            self.emit(ev.Progress(self.req.run_id, self.req.count, s["succeeded"], s["failed"], s["running"], pending))

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        rid = self.req.run_id
        self.emit(ev.PhaseChanged(rid, Phase.PENDING, message=f"{self.req.count} task(s) on the local backend"))
        r = self.req.spec.resources
        if r.gpu:
            self.emit(ev.Diagnosis(rid, "NoGPU", "The local backend has no GPUs: gpu= is ignored here.",
                                "Pick a cluster that offers GPUs with cluster=...", fatal=False))  # fmt: skip
        if self.req.spec.grow_memory:  # (no memory limit here, so nothing to grow: said once, not silently)
            self.emit(ev.Diagnosis(rid, "NoMemoryLimit", "The local backend sets no memory limits, so grow_memory= "
                                   f"does nothing here: retries={self.req.spec.retries} apply as plain retries.",
                                   "Run on a Kubernetes cluster for retries that grow memory.", fatal=False))  # fmt: skip
        if self.req.spec.secrets:
            self.emit(ev.Diagnosis(rid, "SecretsIgnored", "Kubernetes secrets are not mounted on the local backend.",
                                "Set the variables in your environment instead.", fatal=False))  # fmt: skip
        self.progress()
        if self.req.spec.timeout:
            self.timer = threading.Timer(self.req.spec.timeout, self.stop, args=("timeout",))
            self.timer.daemon = True
            self.timer.start()
        self.live_workers = self.req.parallelism  # all counted first: the first may be done before the next starts
        for _ in range(self.req.parallelism):
            try:
                start_thread(self._work, f"kjupyter-{rid}")
            except RuntimeError as exc:  # no thread to be had: go on with the workers that started
                started = self.threads_started
                with self.lock:
                    self.live_workers -= self.req.parallelism - started
                    last = started > 0 and self.live_workers == 0
                if not started:  # nothing runs: the backend undoes the submit
                    self._cancel_timer()
                    raise BackendError(
                        f"the local backend could not start run {rid}: {exc} ({threading.active_count()} threads "
                        "in this process); wait for some runs to end, or run a map instead of many calls"
                    ) from exc
                if last:  # the workers that started are done already, and saw others still to come
                    self._drain_unstarted()
                    self._finish()
                return
            self.threads_started += 1

    def _spawn(self) -> WorkerProcess:
        env = dict(os.environ)
        env.update(self.req.spec.env_dict)
        env.update({
            "KJUPYTER_RUN": self.run_dir.url, "KJUPYTER_RUN_ID": self.req.run_id, "PYTHONUNBUFFERED": "1",
            "KJUPYTER_STORE_OPTIONS": json.dumps(credentials.shareable_options(self.profile.store_options)),
            run_keys.ENV: self.req.run_key.hex(),
        })  # fmt: skip
        workdir = tempfile.mkdtemp(prefix=f"kjupyter-{self.req.run_id}-")  # like a pod: not the notebook's folder
        try:
            proc = self.spawner(["--serve", str(self.folder), "--retries", str(self.req.spec.retries)], env, workdir)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        with self.lock:
            self.workers.append(proc)
            self.workdirs[proc.pid] = workdir
            with open(self.folder / "workers", "a") as f:
                f.write(f"{proc.pid}\n")
        return proc

    def _retire(self, proc: WorkerProcess) -> None:
        """Let a worker go: no more tasks (stdin closed), wait for it, close its pipes, remove its folder."""
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # it does not take the hint: like a pod past its grace period
            kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if proc.stdout:
            with contextlib.suppress(OSError):
                proc.stdout.close()
        with self.lock:
            if proc in self.workers:
                self.workers.remove(proc)
            workdir = self.workdirs.pop(proc.pid, None)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def _work(self) -> None:
        proc: WorkerProcess | None = None
        per_process, served = self.req.spec.items_per_pod or 0, 0  # items_per_pod: a fresh process per k items
        try:
            while self.stopping is None:
                try:
                    index = self.todo.get_nowait()
                except queue.Empty:
                    break
                if proc is not None and (proc.poll() is not None or (per_process and served >= per_process)):
                    self._retire(proc)  # it exited, or ran its items_per_pod: a new one takes the next task
                    proc = None
                if proc is None:
                    proc, served = self._spawn(), 0
                if self.stopping is not None:  # cancelled while its worker started: the task never runs
                    self.todo.put(index)  # (settled as cancelled with the others that never started)
                    break
                served += 1
                code = self._run_task(proc, index)
                if code is None:  # no answer: it died mid-task (or is dying), a new one takes the next task
                    self._retire(proc)
                    proc = None
                self._settle(index, code)
        finally:
            if proc is not None:
                self._retire(proc)
            with self.lock:
                self.live_workers -= 1
                last = self.live_workers == 0
            if last:  # the last worker out settles what never started and ends the run
                self._drain_unstarted()
                self._finish()

    def _run_task(self, proc: WorkerProcess, index: int) -> int | None:
        rid = self.req.run_id
        log = self.folder / f"{index}.log"
        log.write_bytes(b"") if self.attempts[index] == 0 else None
        with self.lock:
            self.state["running"] += 1
            first = not self.started
            self.started = True
        if first:  # (the RunRecord wrapped around the sink records it in run.json)
            self.emit(ev.PhaseChanged(rid, Phase.RUNNING, node=socket.gethostname(), pod=f"pid {proc.pid}"))
        self.emit(ev.PhaseChanged(rid, Phase.RUNNING, index=index, node=socket.gethostname(), pod=f"pid {proc.pid}"))
        self.progress()
        assert proc.stdin and proc.stdout
        reply: list[str] = []
        try:
            proc.stdin.write(f"{index} {self.attempts[index]}\n")  # (the attempts its dead workers spent)
            proc.stdin.flush()
        except OSError:
            pass
        answered = threading.Event()
        began = time.monotonic()

        def read_reply() -> None:
            """The worker's lines about this item: its retries (the same loop as a pod's), then its exit code."""
            while proc.stdout:
                line = proc.stdout.readline()
                parts = line.split()
                if len(parts) == 3 and parts[1] == "retry":
                    self.emit(ev.Diagnosis(rid, "Retrying", f"Task {index} failed; retry {parts[2]} of "
                                           f"{self.req.spec.retries}.", index=index))  # fmt: skip
                    continue
                reply.append(line)
                break
            answered.set()

        threading.Thread(target=read_reply, daemon=True).start()
        for line in tail(log, answered.is_set, wake=answered):
            self.emit(ev.LogLine(rid, line, index=index))
        with self.lock:
            self.state["running"] -= 1
            self.task_seconds += time.monotonic() - began
        parts = reply[0].split() if reply and reply[0] else []
        return int(parts[1]) if len(parts) == 2 else None  # None: the worker died mid-task

    def _settle(self, index: int, code: int | None) -> None:
        """Record the task's end or queue a retry."""
        rid = self.req.run_id
        if self.stopping is not None or (self.folder / "cancelled").exists():
            self.stopping = self.stopping or "cancelled"
            self._task_end(index, Phase.CANCELLED if self.stopping == "cancelled" else Phase.FAILED, code)
            return
        if code == 0:
            self._task_end(index, Phase.SUCCEEDED, 0)
            return
        if code is None and self.attempts[index] < self.req.spec.retries:  # its worker died: one attempt spent
            self.attempts[index] += 1
            self.emit(ev.Diagnosis(rid, "Retrying", f"Task {index} was lost with its worker process (killed, or "
                                f"out of memory); retry {self.attempts[index]} of {self.req.spec.retries}.",
                                index=index))  # fmt: skip
            self.todo.put(index)
            return
        self._task_end(index, Phase.FAILED, code)  # (a task that raised was retried by its worker already)

    def _task_end(self, index: int, phase: Phase, code: int | None) -> None:
        reason, message = "", ""
        if phase is Phase.FAILED and self.stopping == "timeout":
            reason, message = "DeadlineExceeded", f"the run exceeded its timeout of {self.req.spec.timeout:g}s"
        elif phase is Phase.FAILED and code is None:
            reason, message = "WorkerDied", "the worker process died while running this task (killed, or out of memory)"
        elif phase is Phase.FAILED:
            reason, message = "Error", f"exit code {code}"
        with self.lock:
            key = {Phase.SUCCEEDED: "succeeded", Phase.FAILED: "failed"}.get(phase)
            if key:
                self.state[key] += 1
        self.emit(ev.TaskFinished(self.req.run_id, index, phase, code, reason, message))
        self.progress()

    def _drain_unstarted(self) -> None:
        while True:
            try:
                index = self.todo.get_nowait()
            except queue.Empty:
                return
            self._task_end(index, Phase.CANCELLED if self.stopping == "cancelled" else Phase.FAILED, None)

    def _cancel_timer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()  # its thread ends now, not when the timeout would have been reached

    def _finish(self) -> None:
        with self.lock:
            self.finished = True
        self._cancel_timer()
        s = self.state
        if self.stopping == "cancelled":
            phase, reason, message = Phase.CANCELLED, "Cancelled", "the run was cancelled"
        elif self.stopping == "timeout":
            phase, reason, message = (
                Phase.FAILED,
                "DeadlineExceeded",
                f"the run exceeded its timeout of {self.req.spec.timeout:g}s",
            )
        elif s["failed"]:
            phase, reason, message = Phase.FAILED, "Failed", f"{s['failed']} of {self.req.count} task(s) failed"
        else:
            phase, reason, message = Phase.SUCCEEDED, "Completed", f"{s['succeeded']} task(s) succeeded"
        # Usage: the wall time of each task process, as cpu-seconds of the cpu requested (one core if none was).
        cores = (self.req.spec.resources.cpu_millis or 1000) / 1000
        self.emit(ev.Usage(self.req.run_id, (("cpu", round(self.task_seconds * cores, 3)),), source="local"))
        self.emit(ev.RunFinished(self.req.run_id, phase, reason, message))
        self.hub.after_delivery(self.ended.set)  # (its run.json says how it ended by then)
        self.on_end(self.req.run_id)

    def stop(self, why: str) -> bool:
        with self.lock:
            if self.finished or self.stopping:
                return False
            self.stopping = why
            workers = list(self.workers)
        if why == "cancelled":
            (self.folder / "cancelled").touch()
        for proc in workers:
            if proc.poll() is None:
                kill_group(proc.pid)
        return True

    def cancel(self) -> bool:
        return self.stop("cancelled")


def start_thread(target: Callable[[], None], name: str) -> None:
    """Start a daemon thread (one place, so a test can make it fail as an exhausted process would)."""
    threading.Thread(target=target, daemon=True, name=name).start()
