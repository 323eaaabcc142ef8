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
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

from kjupyter import names
from kjupyter import store as st
from kjupyter.backends.base import Backend, Check, RunInfo, SubmitRequest
from kjupyter.backends.local.files import (
    follow_foreign,
    kill_group,
    owner_alive,
    state_root,
    tail,
    task_ended,
    worker_pids,
)
from kjupyter.backends.local.forks import Spawner
from kjupyter.backends.local.run import LocalRun
from kjupyter.backends.run_record import RunRecord, open_result, record_info, run_meta
from kjupyter.config import Profile
from kjupyter.errors import BackendError, KjupyterError
from kjupyter.event_hub import EventHub
from kjupyter.run_events import (
    EventSink,
    Phase,
)
from kjupyter.spec import RunSpec

CANCEL_WAIT_S = 10.0


class LocalBackend(Backend):
    """Runs every task as a ``python -m kjupyter.runner`` process on this machine."""

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.store = st.RunStore(profile.store, dict(profile.store_options))
        self._runs: dict[str, LocalRun] = {}
        self._lock = threading.Lock()
        self._spawner = Spawner()  # workers forked from a warm fork server where it can (forks.py)

    # --- Backend protocol ---------------------------------------------------------------

    def submit(self, request: SubmitRequest, sink: EventSink) -> None:
        """Start the run; if that fails (a store write, no thread to be had), nothing of it is left."""
        run_dir = self.store.run(request.user, request.run_id)
        run: LocalRun | None = None
        try:
            record = RunRecord(run_dir)
            record.create(run_meta(request, cluster=self.profile.name, backend="local"))
            run_dir.write_bytes(st.PAYLOAD, request.payload)
            if request.items is not None:
                run_dir.write_bytes(st.ITEMS, request.items)
            run = LocalRun(request, run_dir, record.wrap(sink), self.profile, self._forget, self._spawner)
            with self._lock:
                self._runs[request.run_id] = run
            run.start()  # raises when no worker could start
        except BaseException:
            if run is not None and run.threads_started:  # interrupted (Ctrl-C) once it ran: it ends as cancelled
                run.cancel()
            else:
                self._undo_submit(request.run_id, run_dir)
            raise

    def _undo_submit(self, run_id: str, run_dir: st.RunDir) -> None:
        """A run that never started is not listed, followed or cancelled later: its files go too."""
        self._forget(run_id)
        shutil.rmtree(state_root() / run_id, ignore_errors=True)
        with contextlib.suppress(Exception):  # best effort: the store may be what failed
            run_dir.delete()

    def attach(self, run_id: str, sink: EventSink) -> None:
        with self._lock:
            run = self._runs.get(run_id)
        if run is not None:
            run.add_sink(sink)
            return
        meta = self._meta(run_id)
        hub = EventHub(run_id)  # (read from files on a thread of its own, delivered on the run's lane)
        hub.subscribe(sink)
        threading.Thread(target=follow_foreign, args=(meta, self.store, hub.publish), daemon=True,
                         name=f"kjupyter-attach-{run_id}").start()  # fmt: skip

    def cancel(self, run_id: str) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
        if run is not None:
            if not run.cancel():
                return False
            if not run.hub.on_its_lane:  # (a subscriber cancelling, say a failing map, cannot wait for itself)
                run.ended.wait(CANCEL_WAIT_S)  # cancelled is said once its processes are gone and recorded
            return True
        meta = self._meta(run_id)
        if Phase(meta.get("phase", "Pending")).finished:
            return False
        folder = state_root() / run_id
        (folder / "cancelled").touch()
        for pid in worker_pids(folder):
            kill_group(pid)
        self._run_dir(meta).update_meta(phase=Phase.CANCELLED.value, finished=time.time())
        return True

    def open_outcome(self, run_id: str, index: int) -> contextlib.AbstractContextManager[IO[bytes]]:
        with self._lock:
            run = self._runs.get(run_id)
        run_dir = run.run_dir if run is not None else self._run_dir(self._meta(run_id))
        return open_result(run_dir, run_id, index)

    def list_runs(self, user: str | None = None) -> list[RunInfo]:
        return [_info(meta, self.profile.name) for meta in self.store.runs(user or names.current_user())]

    def has_run(self, run_id: str) -> bool:
        """Whether the store has the run's run.json, recorded by a local run (not one of a cluster sharing it)."""
        try:
            return str(self._meta(run_id).get("backend", "local")) == "local"
        except BackendError:
            return False

    def logs(self, run_id: str, index: int | None = None, *, follow: bool = False) -> Iterator[str]:
        meta = self._meta(run_id)
        folder = state_root() / run_id
        indices = range(int(meta.get("count", 1))) if index is None else [index]
        for i in indices:
            done = functools.partial(task_ended, folder, i, meta, self.store) if follow else (lambda: True)
            prefix = f"[{i}] " if index is None and int(meta.get("count", 1)) > 1 else ""
            for line in tail(folder / f"{i}.log", done):
                yield prefix + line

    def render(self, spec: RunSpec, *, count: int = 1, kind: str = "call", run_id: str = "render-000000",
               user: str = "", session: str = "", function: str = "") -> list[dict[str, Any]]:  # fmt: skip
        """The worker processes a run would start here (the local backend sends no Kubernetes objects)."""
        workers = min(count, spec.parallelism or count)
        return [{
            "kind": "LocalRun", "run": run_id, "function": function, "tasks": count, "workers": workers,
            "command": [sys.executable, "-m", "kjupyter.runner", "--serve", str(state_root() / run_id)],
            "env": {**spec.env_dict, "KJUPYTER_RUN": f"{self.store.url}/{user}/{run_id}", "KJUPYTER_RUN_ID": run_id},
            "timeout": spec.timeout, "retries": spec.retries,
            "ignored": [k for k, v in (("gpu", spec.resources.gpu), ("secrets", spec.secrets)) if v],
        }]  # fmt: skip

    def doctor(self) -> list[Check]:
        """The interpreter the workers run, and whether the run store can be written."""
        checks = [Check("python", True, f"{sys.executable} (Python {sys.version.split()[0]})")]
        probe = self.store.run(names.current_user(), f".doctor-{os.getpid()}")
        try:
            probe.write_bytes("probe", b"kjupyter doctor")
            ok = probe.read_bytes("probe") == b"kjupyter doctor"
            probe.delete()
            checks.append(Check("store", ok, f"write, read and delete under {self.store.url}"))
        except KjupyterError as exc:
            checks.append(Check("store", False, str(exc)))
        return checks

    def forget_runs(self, run_ids: list[str]) -> None:
        """The worker files (logs, pids, exit codes) beside the store go with the run."""
        for run_id in run_ids:
            shutil.rmtree(state_root() / run_id, ignore_errors=True)

    def close(self) -> None:
        """Runs keep going: the workers are separate processes (the fork server, idle, goes)."""
        self._spawner.close()

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
    if not phase.finished and not owner_alive(meta):  # the process that ran it is gone and never recorded an end
        return record_info(meta, cluster, phase=Phase.FAILED, diagnosis=(
            f"Its client (process {meta.get('owner_pid', '?')}) is gone and never recorded how the run ended."))  # fmt: skip
    return record_info(meta, cluster)
