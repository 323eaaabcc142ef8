"""The built-in backend: runs tasks as local processes of ``kjupyter.runner``.

It follows the same path a pod does (payload in the store, the runner reads
it and writes the outcome back), so what works here works on a cluster.

Each run starts ``min(parallelism, tasks)`` worker processes, each in its own
process group, that run task after task (like the pods of an Indexed Job, but
reused, so a map of small tasks is not dominated by interpreter start-up).
A task's output goes to a log file that is followed live; the files, the
workers' pids and each task's exit code live in
``$KJUPYTER_HOME/local/<run-id>/``, so another process (the CLI, the Jupyter
server, a new kernel) can list, follow and cancel the run too. cpu, memory and
gpu requests are not enforced locally.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from kjupyter import names
from kjupyter import store as st
from kjupyter.backends.base import Backend, RunInfo, SubmitRequest
from kjupyter.backends.records import RunRecord, open_result, run_meta
from kjupyter.config import Profile
from kjupyter.errors import BackendError
from kjupyter.events import (
    Diagnosis,
    Event,
    EventSink,
    LogLine,
    Phase,
    PhaseChanged,
    Progress,
    RunFinished,
    TaskFinished,
)

POLL_S = 0.02  # how often a live log file is re-read when it has no new bytes
KILL_GRACE_S = 0.3


def state_root() -> Path:
    base = os.environ.get("KJUPYTER_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "kjupyter"
    )
    return Path(base) / "local"


class LocalBackend(Backend):
    """Runs every task as a ``python -m kjupyter.runner`` process on this machine."""

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.store = st.RunStore(profile.store, dict(profile.store_options))
        self._runs: dict[str, _LocalRun] = {}
        self._lock = threading.Lock()

    # --- Backend protocol ---------------------------------------------------------------

    def submit(self, request: SubmitRequest, sink: EventSink) -> None:
        run_dir = self.store.run(request.user, request.run_id)
        record = RunRecord(run_dir)
        record.create(run_meta(request, cluster=self.profile.name, backend="local"))
        run_dir.write_bytes(st.PAYLOAD, request.payload)
        if request.items is not None:
            run_dir.write_bytes(st.ITEMS, request.items)
        run = _LocalRun(request, run_dir, record.wrap(sink), self.profile, self._forget)
        with self._lock:
            self._runs[request.run_id] = run
        run.start()

    def attach(self, run_id: str, sink: EventSink) -> None:
        with self._lock:
            run = self._runs.get(run_id)
        if run is not None:
            run.add_sink(sink)
            return
        meta = self._meta(run_id)
        threading.Thread(target=_follow_foreign, args=(meta, self.store, sink), daemon=True,
                         name=f"kjupyter-attach-{run_id}").start()  # fmt: skip

    def cancel(self, run_id: str) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
        if run is not None:
            return run.cancel()
        meta = self._meta(run_id)
        if Phase(meta.get("phase", "Pending")).finished:
            return False
        folder = state_root() / run_id
        (folder / "cancelled").touch()
        for pid in _worker_pids(folder):
            _kill_group(pid)
        self._run_dir(meta).update_meta(phase=Phase.CANCELLED.value, finished=time.time())
        return True

    def open_outcome(self, run_id: str, index: int) -> contextlib.AbstractContextManager[IO[bytes]]:
        with self._lock:
            run = self._runs.get(run_id)
        run_dir = run.run_dir if run is not None else self._run_dir(self._meta(run_id))
        return open_result(run_dir, run_id, index)

    def list_runs(self, user: str | None = None) -> list[RunInfo]:
        return [_info(meta, self.profile.name) for meta in self.store.runs(user or names.current_user())]

    def logs(self, run_id: str, index: int | None = None, *, follow: bool = False) -> Iterator[str]:
        meta = self._meta(run_id)
        folder = state_root() / run_id
        indices = range(int(meta.get("count", 1))) if index is None else [index]
        for i in indices:
            done = functools.partial(_task_ended, folder, i, meta, self.store) if follow else (lambda: True)
            prefix = f"[{i}] " if index is None and int(meta.get("count", 1)) > 1 else ""
            for line in _tail(folder / f"{i}.log", done):
                yield prefix + line

    def close(self) -> None:
        """Runs keep going: the workers are separate processes."""

    # --- helpers --------------------------------------------------------------------------

    def _forget(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def _meta(self, run_id: str) -> dict[str, Any]:
        for user in (names.current_user(), *self.store_users()):
            run_dir = self.store.run(user, run_id)
            if run_dir.exists(st.RUN_JSON):
                return run_dir.read_json(st.RUN_JSON)
        raise BackendError(f"no run {run_id!r} in {self.store.url}; `kjupyter jobs` lists the runs")

    def store_users(self) -> list[str]:
        with contextlib.suppress(Exception):
            return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in self.store.fs.ls(self.store.root, detail=False)]
        return []

    def _run_dir(self, meta: dict[str, Any]) -> st.RunDir:
        return self.store.run(str(meta["user"]), str(meta["run_id"]))


def _info(meta: dict[str, Any], cluster: str) -> RunInfo:
    phase = Phase(str(meta.get("phase", "Pending")))
    if not phase.finished and not _owner_alive(meta):
        phase = Phase.FAILED  # the process that ran it is gone and never recorded an end
    counts = meta.get("counts") or {}
    assert isinstance(counts, dict)
    return RunInfo(
        run_id=str(meta["run_id"]), cluster=str(meta.get("cluster", cluster)), phase=phase,
        kind=str(meta.get("kind", "call")), user=str(meta.get("user", "")), function=str(meta.get("function", "")),
        created=float(meta.get("created", 0)),
        finished=meta.get("finished"),
        total=int(meta.get("count", 1)),
        succeeded=int(counts.get("succeeded", 0)), failed=int(counts.get("failed", 0)),
        running=int(counts.get("running", 0)) if not phase.finished else 0,
        diagnosis=str(meta.get("diagnosis", "")),
    )  # fmt: skip


def _owner_alive(meta: dict[str, Any]) -> bool:
    if meta.get("host") != socket.gethostname():
        return True  # cannot tell from here
    try:
        os.kill(int(meta.get("owner_pid", 0)), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


class _LocalRun:
    """One run's workers, queue of task indices, and event bookkeeping."""

    def __init__(self, request: SubmitRequest, run_dir: st.RunDir, sink: EventSink,
                 profile: Profile, on_end: Callable[[str], None]) -> None:  # fmt: skip
        self.req = request
        self.run_dir = run_dir
        self.profile = profile
        self.on_end = on_end
        self.folder = state_root() / request.run_id
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sinks: list[EventSink] = [sink]
        self.history: list[Event] = []
        self.lock = threading.RLock()
        self.todo: queue.Queue[int] = queue.Queue()
        for i in range(request.count):
            self.todo.put(i)
        self.attempts = [0] * request.count
        self.state = {"succeeded": 0, "failed": 0, "running": 0}
        self.workers: list[subprocess.Popen[str]] = []
        self.stopping: str | None = None  # "cancelled" or "timeout"
        self.started = False
        self.finished = False
        self.live_workers = 0

    # events --------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        with self.lock:
            self.history.append(event)
            sinks = list(self.sinks)
        for sink in sinks:
            with contextlib.suppress(Exception):  # a broken view must not break the run
                sink(event)

    def add_sink(self, sink: EventSink) -> None:
        with self.lock:
            past = list(self.history)
            self.sinks.append(sink)
        for event in past:
            sink(event)

    def progress(self) -> None:
        if self.req.kind == "map":
            s = self.state
            pending = self.req.count - s["succeeded"] - s["failed"] - s["running"]
            self.emit(Progress(self.req.run_id, self.req.count, s["succeeded"], s["failed"], s["running"], pending))

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        rid = self.req.run_id
        self.emit(PhaseChanged(rid, Phase.PENDING, message=f"{self.req.count} task(s) on the local backend"))
        r = self.req.spec.resources
        if r.gpu:
            self.emit(Diagnosis(rid, "NoGPU", "The local backend has no GPUs: gpu= is ignored here.",
                                "Pick a cluster that offers GPUs with cluster=...", fatal=False))  # fmt: skip
        if self.req.spec.secrets:
            self.emit(Diagnosis(rid, "SecretsIgnored", "Kubernetes secrets are not mounted on the local backend.",
                                "Set the variables in your environment instead.", fatal=False))  # fmt: skip
        self.progress()
        if self.req.spec.timeout:
            timer = threading.Timer(self.req.spec.timeout, self.stop, args=("timeout",))
            timer.daemon = True
            timer.start()
        self.live_workers = self.req.parallelism
        for _ in range(self.req.parallelism):
            threading.Thread(target=self._work, daemon=True, name=f"kjupyter-{rid}").start()

    def _spawn(self) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env.update(self.req.spec.env_dict)
        env.update({
            "KJUPYTER_RUN": self.run_dir.url, "KJUPYTER_RUN_ID": self.req.run_id, "PYTHONUNBUFFERED": "1",
            "KJUPYTER_STORE_OPTIONS": json.dumps(st.shareable_options(self.profile.store_options)),
        })  # fmt: skip
        workdir = tempfile.mkdtemp(prefix=f"kjupyter-{self.req.run_id}-")  # like a pod: not the notebook's folder
        proc = subprocess.Popen(
            [sys.executable, "-m", "kjupyter.runner", "--serve", str(self.folder)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, cwd=workdir, text=True, start_new_session=True,
        )  # fmt: skip
        with self.lock:
            self.workers.append(proc)
            with open(self.folder / "workers", "a") as f:
                f.write(f"{proc.pid}\n")
        return proc

    def _work(self) -> None:
        proc: subprocess.Popen[str] | None = None
        try:
            while self.stopping is None:
                try:
                    index = self.todo.get_nowait()
                except queue.Empty:
                    break
                if proc is None or proc.poll() is not None:
                    proc = self._spawn()
                code = self._run_task(proc, index)
                if self._settle(index, code):
                    proc = None if proc.poll() is not None else proc
        finally:
            if proc is not None and proc.stdin:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            with self.lock:
                self.live_workers -= 1
                last = self.live_workers == 0
            if last:  # the last worker out settles what never started and ends the run
                self._drain_unstarted()
                self._finish()

    def _run_task(self, proc: subprocess.Popen[str], index: int) -> int | None:
        rid = self.req.run_id
        log = self.folder / f"{index}.log"
        log.write_bytes(b"") if self.attempts[index] == 0 else None
        with self.lock:
            self.state["running"] += 1
            first = not self.started
            self.started = True
        if first:  # (the RunRecord wrapped around the sink records it in run.json)
            self.emit(PhaseChanged(rid, Phase.RUNNING, node=socket.gethostname(), pod=f"pid {proc.pid}"))
        self.emit(PhaseChanged(rid, Phase.RUNNING, index=index, node=socket.gethostname(), pod=f"pid {proc.pid}"))
        self.progress()
        assert proc.stdin and proc.stdout
        reply: list[str] = []
        try:
            proc.stdin.write(f"{index}\n")
            proc.stdin.flush()
        except OSError:
            pass
        answered = threading.Event()

        def read_reply() -> None:
            reply.append(proc.stdout.readline() if proc.stdout else "")
            answered.set()

        threading.Thread(target=read_reply, daemon=True).start()
        for line in _tail(log, answered.is_set, wake=answered):
            self.emit(LogLine(rid, line, index=index))
        with self.lock:
            self.state["running"] -= 1
        parts = reply[0].split() if reply and reply[0] else []
        return int(parts[1]) if len(parts) == 2 else None  # None: the worker died mid-task

    def _settle(self, index: int, code: int | None) -> bool:
        """Record the task's end or queue a retry. True if the worker should be replaced."""
        rid = self.req.run_id
        if self.stopping is not None or (self.folder / "cancelled").exists():
            self.stopping = self.stopping or "cancelled"
            self._task_end(index, Phase.CANCELLED if self.stopping == "cancelled" else Phase.FAILED, code)
            return True
        if code == 0:
            self._task_end(index, Phase.SUCCEEDED, 0)
            return False
        if self.attempts[index] < self.req.spec.retries:
            self.attempts[index] += 1
            self.emit(Diagnosis(rid, "Retrying", f"Task {index} failed (exit code {code}); retry "
                                f"{self.attempts[index]} of {self.req.spec.retries}.", index=index))  # fmt: skip
            self.todo.put(index)
            return code is None
        self._task_end(index, Phase.FAILED, code)
        return code is None

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
        self.emit(TaskFinished(self.req.run_id, index, phase, code, reason, message))
        self.progress()

    def _drain_unstarted(self) -> None:
        while True:
            try:
                index = self.todo.get_nowait()
            except queue.Empty:
                return
            self._task_end(index, Phase.CANCELLED if self.stopping == "cancelled" else Phase.FAILED, None)

    def _finish(self) -> None:
        with self.lock:
            self.finished = True
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
        self.emit(RunFinished(self.req.run_id, phase, reason, message))
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
                _kill_group(proc.pid)
        return True

    def cancel(self) -> bool:
        return self.stop("cancelled")


def _kill_group(pid: int) -> None:
    """SIGTERM the worker's process group (its task's children too), SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)

    def finish() -> None:
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    threading.Thread(target=finish, daemon=True).start()


def _worker_pids(folder: Path) -> list[int]:
    with contextlib.suppress(FileNotFoundError):
        return [int(x) for x in (folder / "workers").read_text().split()]
    return []


def _task_exit(folder: Path, index: int) -> int | None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int((folder / f"{index}.exit").read_text())
    return None


def _task_ended(folder: Path, index: int, meta: dict[str, Any], store: st.RunStore) -> bool:
    return _task_exit(folder, index) is not None or _run_over(folder, meta, store)


def _run_over(folder: Path, meta: dict[str, Any], store: st.RunStore) -> bool:
    if (folder / "cancelled").exists():
        return True
    run_dir = store.run(str(meta["user"]), str(meta["run_id"]))
    with contextlib.suppress(Exception):
        return Phase(run_dir.read_json(st.RUN_JSON).get("phase", "Pending")).finished or not _owner_alive(meta)
    return False


def _tail(path: Path, done: Callable[[], bool], wake: threading.Event | None = None) -> Iterator[str]:
    """Lines of a growing file until ``done()`` and nothing is left to read.

    ``wake``, when given, is set as soon as ``done()`` turns true, so the end
    of a task is noticed at once rather than at the next poll.
    """

    def pause() -> None:
        if wake is not None:
            wake.wait(POLL_S)
        else:
            time.sleep(POLL_S)

    while not path.exists():
        if done():
            return
        pause()
    with open(path, "rb") as f:
        pending = b""
        while True:
            chunk = f.read(65536)
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace").rstrip("\r")
                continue
            if done():
                chunk = f.read()
                if chunk:
                    pending += chunk
                    continue
                if pending:
                    yield pending.decode(errors="replace")
                return
            pause()


def _follow_foreign(meta: dict[str, Any], store: st.RunStore, sink: EventSink) -> None:
    """Events of a run that another process started: from its log and exit files."""
    rid = str(meta["run_id"])
    folder = state_root() / rid
    count = int(meta.get("count", 1))
    sink(PhaseChanged(rid, Phase.RUNNING))
    counts = {"succeeded": 0, "failed": 0}
    for i in range(count):
        for line in _tail(folder / f"{i}.log", functools.partial(_task_ended, folder, i, meta, store)):
            sink(LogLine(rid, line, index=i))
        code = _task_exit(folder, i)
        phase = Phase.SUCCEEDED if code == 0 else Phase.CANCELLED if (folder / "cancelled").exists() else Phase.FAILED
        counts["succeeded" if phase is Phase.SUCCEEDED else "failed"] += 1
        sink(TaskFinished(rid, i, phase, code))
        if count > 1:
            sink(Progress(rid, count, counts["succeeded"], counts["failed"], 0, count - i - 1))
    final = Phase(str(store.run(str(meta["user"]), rid).read_json(st.RUN_JSON).get("phase", "Pending")))
    if not final.finished:
        final = Phase.FAILED if counts["failed"] else Phase.SUCCEEDED
    sink(RunFinished(rid, final))
