"""Cheap pods for the fake cluster: the real in-pod runner, without a fresh interpreter per pod.

The fake cluster's kubelet runs every container's command as a host process, and
runs ``python`` as the interpreter named by its ``python`` option. A pod of
kjupyter runs ``python -m kjupyter.runner --run URL``: on 2 cores a fresh
interpreter importing cloudpickle and fsspec costs ~0.2-0.5 s of CPU, so a map of
10,000 items would spend most of an hour starting interpreters.

Here ``python`` is a tiny launcher (``python -S -I`` importing only ``socket``,
``json`` and ``os``, ~15 ms) that hands its argv, environment, working directory
and stdin/stdout/stderr (``SCM_RIGHTS``) to a warm *zygote* process. The zygote
has ``kjupyter.runner`` imported; it forks, the child takes over the pod's file
descriptors and environment and calls ``kjupyter.runner.main(argv)`` -- the same
code, the same store reads and writes, the same log lines on the pod's stdout --
and the launcher exits with the child's exit code. Nothing on the kjupyter client
side changes, and none of it talks to the API server: the control-plane counts are
those of real runner processes.

Only ``-m kjupyter.runner`` goes through the zygote; any other ``python`` command
runs the real interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ENV_SOCKET = "KJ_BENCH_ZYGOTE"

LAUNCHER = """# sitecustomize of the benchmark's fake pods: hands `python -m kjupyter.runner` to the zygote
import os, sys
if sys.orig_argv[1:3] == ["-m", "kjupyter.runner"] and os.environ.get("{env}"):
    import json, socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["{env}"])
    msg = json.dumps({{"argv": sys.orig_argv[3:], "env": dict(os.environ), "cwd": os.getcwd()}}).encode()
    socket.send_fds(s, [len(msg).to_bytes(4, "big") + msg], [0, 1, 2])
    data = b""
    while len(data) < 4:
        chunk = s.recv(4 - len(data))
        if not chunk:
            os._exit(137)
        data += chunk
    os._exit(int.from_bytes(data, "big", signed=True))
"""


def _die_with_launcher(conn: socket.socket) -> None:
    try:
        conn.recv(1)  # the launcher sends nothing: this returns when it is gone
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


def _child(conn: socket.socket) -> int:
    header, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    size = int.from_bytes(header[:4], "big")
    body = header[4:]
    while len(body) < size:
        body += conn.recv(size - len(body))
    msg = json.loads(body)
    # The pod's process is the launcher: when the kubelet kills it (a deleted pod, an OOM kill),
    # this fork must die with it, as the container's process would.
    threading.Thread(target=_die_with_launcher, args=(conn,), daemon=True).start()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(msg["cwd"])
    os.environ.clear()
    os.environ.update(msg["env"])
    tempfile.tempdir = None
    import kjupyter.runner

    try:
        code = kjupyter.runner.main(msg["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 2
    import atexit

    atexit._run_exitfuncs()  # as an interpreter's exit would (the runner's signed last log line is one)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    return int(code or 0)


def serve(path: str) -> None:
    """The zygote: accept a launcher, fork, run the runner in the child, send back its exit code."""
    import cloudpickle  # noqa: F401  (warm imports: what a runner needs)
    import fsspec  # noqa: F401

    import kjupyter.runner  # noqa: F401
    from kjupyter import payload, store  # noqa: F401

    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        del sys.modules[name]  # as in a pod: no top-level module that is not installed
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(512)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = 2
            try:
                code = _child(conn)
            finally:
                try:
                    conn.sendall(struct.pack(">i", code))
                finally:
                    os._exit(code)
        conn.close()


class Zygote:
    """Start the zygote; ``options`` are the FakeCluster options that route pods' ``python`` through it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kj-zygote-"))
        self.socket = str(self.dir / "z.sock")
        (self.dir / "sitecustomize.py").write_text(LAUNCHER.format(env=ENV_SOCKET))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"from benchmarks.fastpods import serve; serve({self.socket!r})"],
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError("the benchmark's runner zygote did not start")

    def options(self) -> dict[str, object]:
        """FakeCluster options: the pods' PYTHONPATH starts with the folder of the hand-off sitecustomize."""
        from tests.fakekube.cluster import _default_pythonpath

        return {"pythonpath": [str(self.dir), *_default_pythonpath()], "extra_env": {ENV_SOCKET: self.socket}}

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 3
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.proc.poll() is None:
            self.proc.kill()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
