"""Warm workers on the local backend: every run forks from one warm fork server, in a fresh process.

On this machine the fork server is the warm worker: it holds no node or GPU, so it lives as
long as the session (keep_warm changes nothing here); these tests show it gives the same
guarantees as a warm pod.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from kjupyter import RunCancelled, remote
from kjupyter.backends.local.forks import fork_available
from kjupyter.session import Session

pytestmark = pytest.mark.skipif(not fork_available(), reason="the fork server needs Linux (pidfd_open)")

STATE: Any = None


def remember(x: int) -> tuple[Any, int, int]:
    global STATE
    before, STATE = STATE, x
    return before, os.getpid(), os.getppid()


def sleepy(seconds: float) -> int:
    time.sleep(seconds)
    return os.getppid()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_runs_fork_from_one_warm_server_in_fresh_processes(local_session: Session) -> None:
    f = remote(remember)
    first = f.submit(1).result(30)
    second = f.submit(2).result(30)
    assert first[0] is None and second[0] is None  # run 1's global is not in run 2
    assert first[1] != second[1]  # two processes
    assert first[2] == second[2]  # ... forked from the same warm server


def test_cancel_kills_the_run_and_keeps_the_server(local_session: Session) -> None:
    server = remote(remember).submit(1).result(30)[2]
    future = remote(sleepy).submit(60)
    time.sleep(1.0)
    future.cancel()
    with pytest.raises(RunCancelled):
        future.result(10)
    assert remote(remember).submit(2).result(30)[2] == server


def test_a_server_that_died_between_runs_is_replaced(local_session: Session,
                                                     capfd: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    server = remote(remember).submit(1).result(30)[2]
    os.kill(server, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    before, _, new_server = remote(remember).submit(2).result(30)
    assert before is None and new_server != server
    assert "the local fork server had stopped" in capfd.readouterr().err
    assert remote(remember).submit(3).result(30)[2] == new_server  # and it is warm again


def test_a_killed_kernels_server_exits(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import os, signal
        from kjupyter import remote
        print(remote(os.getppid).submit().result(60), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "KJUPYTER_HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == -9, done.stderr
    server = int(done.stdout.strip())
    deadline = time.monotonic() + 10
    while alive(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(server)


def test_a_run_whose_environment_changes_the_interpreter_gets_a_new_one(local_session: Session) -> None:
    """The local kind of incompatible: PYTHON* and LD_* are read at an interpreter's start, so no fork."""
    server = remote(remember).submit(1).result(30)[2]
    assert remote(remember, env={"PYTHONHASHSEED": "7"}).submit(2).result(30)[2] != server
    assert remote(remember, keep_warm=0).submit(3).result(30)[2] == server  # keep_warm=0: as before, forked
