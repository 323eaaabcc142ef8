"""The local backend's files beside the store: ``$KJUPYTER_HOME/local/<run-id>/``.

Per task a log file (followed live) and an exit-code file; the workers' pids; a ``cancelled``
mark. Another process (the CLI, the Jupyter server, a new kernel) reads them to list, follow
and cancel a run it did not start.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kjupyter import run_events as ev
from kjupyter import store as st
from kjupyter.paths import data_home
from kjupyter.run_events import EventSink, Phase

POLL_S = 0.02  # how often a live log file is re-read when it has no new bytes
KILL_GRACE_S = 0.3


def state_root() -> Path:
    return data_home() / "local"


def kill_group(pid: int) -> None:
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


def worker_pids(folder: Path) -> list[int]:
    with contextlib.suppress(FileNotFoundError):
        return [int(x) for x in (folder / "workers").read_text().split()]
    return []


def task_exit(folder: Path, index: int) -> int | None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int((folder / f"{index}.exit").read_text())
    return None


def task_ended(folder: Path, index: int, meta: dict[str, Any], store: st.RunStore) -> bool:
    return task_exit(folder, index) is not None or run_over(folder, meta, store)


def run_over(folder: Path, meta: dict[str, Any], store: st.RunStore) -> bool:
    if (folder / "cancelled").exists():
        return True
    run_dir = store.run(str(meta["user"]), str(meta["run_id"]))
    with contextlib.suppress(Exception):
        return Phase(run_dir.read_json(st.RUN_JSON).get("phase", "Pending")).finished or not owner_alive(meta)
    return False


def tail(path: Path, done: Callable[[], bool], wake: threading.Event | None = None) -> Iterator[str]:
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


def follow_foreign(meta: dict[str, Any], store: st.RunStore, sink: EventSink) -> None:
    """Events of a run that another process started: from its log and exit files."""
    rid = str(meta["run_id"])
    folder = state_root() / rid
    count = int(meta.get("count", 1))
    sink(ev.PhaseChanged(rid, Phase.RUNNING))
    counts = {"succeeded": 0, "failed": 0}
    for i in range(count):
        for line in tail(folder / f"{i}.log", functools.partial(task_ended, folder, i, meta, store)):
            sink(ev.LogLine(rid, line, index=i))
        code = task_exit(folder, i)
        phase = Phase.SUCCEEDED if code == 0 else Phase.CANCELLED if (folder / "cancelled").exists() else Phase.FAILED
        counts["succeeded" if phase is Phase.SUCCEEDED else "failed"] += 1
        sink(ev.TaskFinished(rid, i, phase, code))
        if count > 1:
            sink(ev.Progress(rid, count, counts["succeeded"], counts["failed"], 0, count - i - 1))
    final = Phase(str(store.run(str(meta["user"]), rid).read_json(st.RUN_JSON).get("phase", "Pending")))
    if not final.finished:
        final = Phase.FAILED if counts["failed"] else Phase.SUCCEEDED
    sink(ev.RunFinished(rid, final))


def owner_alive(meta: dict[str, Any]) -> bool:
    if meta.get("host") != socket.gethostname():
        return True  # cannot tell from here
    try:
        os.kill(int(meta.get("owner_pid", 0)), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True
