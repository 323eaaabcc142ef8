"""Local worker processes: forked from a warm fork server where the platform allows, else new interpreters.

:class:`ForkServer` starts ``python -m kjupyter.runner.forkserver`` once per backend (the first
worker of the session waits for it) and asks it for each worker; a worker then starts in
milliseconds instead of the 0.2-0.3 s of a new interpreter's imports. It needs Linux
(``pidfd_open`` to follow a process that is not our child); elsewhere, or with
``KJUPYTER_LOCAL_FORK=0``, or if the server cannot start, workers are new interpreters, as
before. That last case is said once on stderr, with the reason: it costs time, not results.
A run whose environment changes what an interpreter reads at its start (``PYTHON*``, such as
``PYTHONPATH``, and the loader's ``LD_*``) gets new interpreters too: a fork cannot apply them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
from typing import IO, Protocol

READY_TIMEOUT_S = 30.0
FORK_ENV = "KJUPYTER_LOCAL_FORK"


class WorkerProcess(Protocol):
    """What a local run needs of a worker process (a ``subprocess.Popen`` has it)."""

    pid: int
    stdin: IO[str] | None
    stdout: IO[str] | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class ForkedProcess:
    """A worker forked by the server: not our child, so its end is seen through a pidfd (exit code 0: unknown)."""

    def __init__(self, pid: int, stdin: IO[str], stdout: IO[str]) -> None:
        self.pid = pid
        self.stdin: IO[str] | None = stdin
        self.stdout: IO[str] | None = stdout
        self.returncode: int | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already
            self._pidfd, self.returncode = None, 0

    def poll(self) -> int | None:
        return self.wait(0) if self.returncode is None and self._ready(0) else self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not self._ready(timeout):
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
            self.returncode = 0
            self._close_pidfd()
        return self.returncode

    def _ready(self, timeout: float | None) -> bool:
        if self._pidfd is None:
            return True
        readable, _, _ = select.select([self._pidfd], [], [], timeout)
        return bool(readable)

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self._close_pidfd()


def startup_env(env: dict[str, str]) -> dict[str, str]:
    """The variables a process takes at its start and cannot change later: the interpreter's and the loader's."""
    return {k: v for k, v in env.items() if k.startswith(("PYTHON", "LD_", "DYLD_"))}


class ForkServer:
    """One warm ``kjupyter.runner.forkserver`` process; ``spawn`` is thread-safe."""

    def __init__(self) -> None:
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # (as the workers have it)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = mine
        self.lock = threading.Lock()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kjupyter.runner.forkserver", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, env=self.env,
            )  # fmt: skip
        finally:
            theirs.close()
        try:
            mine.settimeout(READY_TIMEOUT_S)
            if json.loads(mine.recv(1 << 16) or b"{}").get("ready") is not True:
                raise OSError("it exited before it was ready")
            mine.settimeout(None)
        except BaseException:
            self.close()
            raise

    def forkable(self, env: dict[str, str]) -> bool:
        """Whether a worker with ``env`` can be forked from here: it starts with the server's PYTHON* and LD_*."""
        return startup_env(env) == startup_env(self.env)

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str) -> ForkedProcess:
        """A worker running ``python -m kjupyter.runner *argv`` in ``cwd`` with ``env``."""
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        try:
            with self.lock:
                socket.send_fds(self.sock, [json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode()],
                                [stdin_r, stdout_w])  # fmt: skip
                reply = json.loads(self.sock.recv(1 << 16) or b'{"error": "the fork server is gone"}')
        except BaseException:
            for fd in (stdin_w, stdout_r):
                os.close(fd)
            raise
        finally:
            os.close(stdin_r)
            os.close(stdout_w)
        if "pid" not in reply:
            for fd in (stdin_w, stdout_r):
                os.close(fd)
            raise OSError(f"the fork server could not start a worker: {reply.get('error')}")
        return ForkedProcess(int(reply["pid"]), os.fdopen(stdin_w, "w"), os.fdopen(stdout_r))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def fork_available() -> bool:
    return sys.platform == "linux" and hasattr(os, "pidfd_open") and os.environ.get(FORK_ENV, "1") != "0"


class Spawner:
    """Starts local workers: through a fork server when it works, else as new interpreters (said once)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.server: ForkServer | None = None
        self.broken = not fork_available()

    def __call__(self, argv: list[str], env: dict[str, str], cwd: str) -> WorkerProcess:
        server = self._server()
        if server is not None and server.forkable(env) and server.proc.poll() is not None:
            self._replace(server)  # it died between runs (killed, say): a new one, as a pod's Job would do
            server = self._server()
        if server is not None and server.forkable(env):  # (else: a new interpreter, as the run's env asks)
            try:
                return server.spawn(argv, env, cwd)
            except OSError as exc:
                self._give_up(f"it failed to start a worker ({exc})")
        return subprocess.Popen(
            [sys.executable, "-m", "kjupyter.runner", *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, cwd=cwd, text=True, start_new_session=True,
        )  # fmt: skip

    def _server(self) -> ForkServer | None:
        with self.lock:
            if self.server is None and not self.broken:
                try:
                    self.server = ForkServer()
                except (OSError, ValueError) as exc:
                    self.broken = True
                    print(f"kjupyter: the local fork server could not start ({exc}); local workers start as new "
                          "interpreters instead (about 0.3 s more per worker)", file=sys.stderr)  # fmt: skip
            return self.server

    def _replace(self, server: ForkServer) -> None:
        with self.lock:
            if self.server is server:
                self.server = None
        print(f"kjupyter: the local fork server had stopped (exit code {server.proc.returncode}); starting a new one",
              file=sys.stderr)  # fmt: skip
        server.close()

    def _give_up(self, why: str) -> None:
        with self.lock:
            server, self.server, self.broken = self.server, None, True
        print(f"kjupyter: the local fork server stopped: {why}; local workers start as new interpreters now",
              file=sys.stderr)  # fmt: skip
        if server is not None:
            server.close()

    def close(self) -> None:
        with self.lock:
            server, self.server = self.server, None
        if server is not None:
            server.close()
