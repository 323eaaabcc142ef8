"""A fork server for local workers: ``python -m kjupyter.runner.forkserver FD`` (FD: its client's socket).

Starting a worker as a new interpreter costs about 0.2-0.3 s of imports (fsspec, cloudpickle,
the runner), most of a short map's overhead on a laptop. This process imports the runner once
and forks a worker per request, as ProcessPoolExecutor's fork does, but from a process that
holds nothing of the kernel: no threads, no sockets but its own, no user state.

Protocol (one request at a time, on a UNIX ``SOCK_SEQPACKET`` socket: one message each):

- first, from the server: ``{"ready": true}`` once it has imported the runner;
- request: ``{"argv": [...], "env": {...}, "cwd": "..."}`` sent with two file descriptors
  (the worker's stdin and stdout, ``SCM_RIGHTS``);
- reply: ``{"pid": N}`` (or ``{"error": "..."}``).

The worker gets a process group of its own, set by the server before it tells the pid (so a
cancel that comes at once still kills it, and its children too), takes the two descriptors as fds 0 and 1, sends fd 2 to /dev/null, moves to ``cwd``,
replaces its environment with ``env``, reseeds ``random`` and runs
``kjupyter.runner.entry.main(argv)``. The server reaps its workers; it exits when its client
closes the socket (the kernel ended), leaving running workers to finish, as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys


def _reap(_signum: int, _frame: object) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


STARTED_IN = os.getcwd()


def _as_if_started_here(cwd: str) -> None:
    """What a new interpreter would have taken from its start: ``sys.path[0]`` and fsspec's configuration.

    (``python -m`` puts the start folder first on ``sys.path``; fsspec reads ``FSSPEC_*`` variables
    and its config folder at import. Variables read by the interpreter or the dynamic loader
    themselves, ``PYTHON*`` and ``LD_*``, cannot be applied after a fork: a run that changes them
    gets a new interpreter, see ``kjupyter.backends.local.forks.forkable``.)
    """
    sys.path[:] = [cwd if p in ("", STARTED_IN) else p for p in sys.path]
    import fsspec.config

    fsspec.config.conf.clear()
    fsspec.config.conf_dir = os.environ.get("FSSPEC_CONFIG_DIR", fsspec.config.default_conf_dir)
    fsspec.config.set_conf_files(fsspec.config.conf_dir, fsspec.config.conf)
    fsspec.config.set_conf_env(fsspec.config.conf)


def _child(request: dict[str, object], fds: list[int], server: socket.socket) -> None:
    import random

    code = 2
    try:
        server.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        with contextlib.suppress(OSError):  # (the server does it too, before it tells the pid: no race with a kill)
            os.setpgid(0, 0)
        os.dup2(fds[0], 0)
        os.dup2(fds[1], 1)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        for fd in (*fds, null):
            if fd > 2:
                os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the worker's stdin, for its lifetime)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.chdir(str(request["cwd"]))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})  # type: ignore[call-overload]
        _as_if_started_here(str(request["cwd"]))
        random.seed()
        from kjupyter.runner.entry import main

        code = main([str(a) for a in list(request["argv"])])  # type: ignore[call-overload]
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        import atexit

        atexit._run_exitfuncs()  # the user's exit handlers run, as at an interpreter's exit
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve(server: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the kernel's terminal is not for us
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(server, 1 << 20, 2)
        except OSError:
            return
        if not message:
            return  # the client is gone
        try:
            request = json.loads(message)
            if len(fds) != 2:
                raise ValueError(f"expected 2 file descriptors, got {len(fds)}")
            pid = os.fork()
        except Exception as exc:
            for fd in fds:
                os.close(fd)
            server.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            continue
        if pid == 0:
            _child(request, fds, server)
        with contextlib.suppress(OSError):  # its own process group before anyone can signal it (the child does too)
            os.setpgid(pid, pid)
        for fd in fds:
            os.close(fd)
        server.send(json.dumps({"pid": pid}).encode())


def main() -> None:
    import kjupyter.runner.entry
    import kjupyter.runner.worker  # noqa: F401 (imported once here, inherited by every worker)

    server = socket.socket(fileno=int(sys.argv[1]))
    server.send(b'{"ready": true}')
    serve(server)


if __name__ == "__main__":
    main()
