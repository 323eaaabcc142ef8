"""A warm worker: a pod that runs its first run, then waits ``keep_warm`` seconds for the next.

``python -m kjupyter.runner --run URL --warm SECONDS`` makes the runner a supervisor. It runs
every run in a **fresh child process**, the first run included, so no module global, open file
or thread crosses from one run to the next. The child is forked from the supervisor, which
imported the runner but never runs user code (a few milliseconds instead of a new interpreter's
imports); with ``--spawn`` (the client asks for it when the pod has a GPU: CUDA must never be
initialised in a parent that forks, and spawning rules it out whatever the image does at
import) each child is a new interpreter instead:

1. The first run's child: ``python -m kjupyter.runner --run URL --workers 1 --items 1``. Its
   signed ``item`` frames (start, then done or fail) tell the client how the run went, so the
   client ends the run on its frame and does not wait for the pod.
2. Then the supervisor waits for a **ticket**, ``warm/ticket-<n>.json`` in the first run's
   folder of the store, polling with a backoff from 50 ms to 1 s (about one store request a
   second while idle, and no request to the API server). A ticket names the next run (its id,
   its folder, its timeout and retries) and is signed with the pod's key ``Kw`` (the first run's
   key, the only one the pod holds), so whoever can write to the store but does not hold the
   key cannot hand the pod a run.
3. Each run keeps the random key of its own that its client made for it, so its payload,
   results and frames are signed with that key, and nothing of one run can pass for another's.
   The ticket carries it wrapped: XORed with ``HMAC-SHA256(Kw, "warm-key:" + run id)``, a pad
   used for that run only (:func:`wrap_key`). Only a holder of ``Kw`` can unwrap it.
4. While a child runs, ``warm/cancel-<n>`` is polled every :data:`CANCEL_POLL_S`: a signed
   cancel kills the child's process group (SIGTERM, then SIGKILL after :data:`KILL_GRACE_S`)
   and prints the run's ``cancelled`` frame; the pod stays warm. The run's ``timeout`` is
   enforced here in the same way (a ``timeout`` frame). The Job's deadline is the backstop.
5. When ``keep_warm`` seconds pass after the last run ended with no ticket, the supervisor
   exits 0: its Job completes and its TTL removes it, whether or not its kernel is still there.

A child that dies of a signal (the kernel's OOM killer picks the biggest process of the pod:
the child) leaves no outcome: the supervisor reports it as the run's failure, in one
sentence, and the pod stays warm. A supervisor replaced by the Job (its pod died) finds the
first run already ended (``warm/first-ended``) and exits at once: it never reruns a run.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from kjupyter import run_keys
from kjupyter import store as st
from kjupyter.inline_frames import item_line

POLL_START_S, POLL_MAX_S = 0.05, 1.0  # idle polling for the next ticket: backoff bounds
CANCEL_POLL_S = 0.5  # how often a running run's cancel object is looked for
KILL_GRACE_S = 3.0  # SIGTERM, then SIGKILL after this
FIRST_ENDED = "warm/first-ended"  # written once the first run ended (a replaced supervisor exits)
FAILURES_ENV = "KJUPYTER_WORKER_FAILURES"


def ticket_name(seq: int) -> str:
    return f"warm/ticket-{seq}.json"


def cancel_name(seq: int) -> str:
    return f"warm/cancel-{seq}"


def wrap_key(pod_key: bytes, run_id: str, key: bytes) -> str:
    """Run ``run_id``'s key, wrapped for a warm pod whose key is ``pod_key`` (hex); unwrapping is the same."""
    pad = hmac.new(pod_key, b"warm-key:" + run_id.encode(), hashlib.sha256).digest()
    if len(key) != len(pad):
        raise ValueError(f"a run key is {len(pad)} bytes, not {len(key)}")
    return bytes(a ^ b for a, b in zip(key, pad, strict=True)).hex()


def unwrap_key(pod_key: bytes, run_id: str, wrapped: str) -> bytes:
    return bytes.fromhex(wrap_key(pod_key, run_id, bytes.fromhex(wrapped)))


def _tag(pod_key: bytes, what: str, body: bytes) -> str:
    return hmac.new(pod_key, b"kjupyter-warm\0" + what.encode() + b"\0" + body, hashlib.sha256).hexdigest()


def ticket_bytes(pod_key: bytes, seq: int, ticket: dict[str, Any]) -> bytes:
    """A signed ticket: the JSON body, a newline, its tag."""
    body = json.dumps({**ticket, "seq": seq}, sort_keys=True).encode()
    return body + b"\n" + _tag(pod_key, f"ticket/{seq}", body).encode()


def cancel_bytes(pod_key: bytes, seq: int) -> bytes:
    return _tag(pod_key, f"cancel/{seq}", b"").encode()


def read_ticket(data: bytes, pod_key: bytes, seq: int) -> dict[str, Any] | None:
    """The ticket's fields, or None if its tag does not verify (not written by this pod's client)."""
    body, _, tag = data.rpartition(b"\n")
    if not hmac.compare_digest(_tag(pod_key, f"ticket/{seq}", body).encode(), tag.strip()):
        return None
    ticket: dict[str, Any] = json.loads(body)
    return ticket if ticket.get("seq") == seq else None


@dataclass
class Ticket:
    seq: int
    run_id: str
    run_url: str
    timeout: float | None
    retries: int
    key: bytes = b""
    exit: bool = False  # the client retires this worker (max_warm): exit now


class Supervisor:
    def __init__(self, first_url: str, options: dict[str, Any], key: bytes, *, window: float,
                 timeout: float | None, retries: int, spawn: bool = False) -> None:  # fmt: skip
        self.spawn = spawn
        self.first = st.open_run_dir(first_url, options)
        self.options = options
        self.key = key
        self.window = window
        self.timeout = timeout
        self.retries = retries
        self.polls = 0  # store requests made while idle (tests, benchmarks)

    def serve(self) -> int:
        # The pod is deleted (SIGTERM from the kubelet): its run's process group goes too (the except in _run),
        # whatever the container runtime does with processes outside PID 1's group.
        signal.signal(signal.SIGTERM, _stop)
        if int(os.environ.get(FAILURES_ENV) or 0) > 0 and self._exists(FIRST_ENDED):
            say("this warm worker replaces one that died after its first run; it has nothing to do and exits")
            return 0
        first = Ticket(0, os.environ.get("KJUPYTER_RUN_ID", ""), self.first.url, self.timeout, self.retries, self.key)
        self._run(first, first=True)
        self._write(FIRST_ENDED, b"1")
        seq = 1
        while True:
            polls = self.polls
            ticket = self._next_ticket(seq, time.monotonic() + self.window)
            if ticket is None:
                say(
                    f"no run came within keep_warm={self.window:g}s ({self.polls - polls} store reads while it "
                    "waited): this warm worker exits"
                )
                return 0
            if ticket.exit:
                say("retired by its client (max_warm): this warm worker exits")
                return 0
            self._run(ticket, first=False)
            seq += 1

    # --- store access (never cached: each poll is one GET) ---------------------------------
    def _read(self, name: str) -> bytes | None:
        try:
            return self.first.read_bytes(name)
        except FileNotFoundError:
            return None
        except Exception as exc:  # the store is unreachable for a moment: the next poll tries again
            say(f"could not read {name} from the store ({exc}); trying again")
            return None

    def _exists(self, name: str) -> bool:
        return self._read(name) is not None

    def _write(self, name: str, data: bytes) -> None:
        with contextlib.suppress(Exception):
            self.first.write_bytes(name, data)

    def _next_ticket(self, seq: int, deadline: float) -> Ticket | None:
        delay = POLL_START_S
        refused = False
        while True:
            self.polls += 1
            data = self._read(ticket_name(seq))
            if data is not None:
                fields = read_ticket(data, self.key, seq)
                if fields is not None and fields.get("exit"):
                    return Ticket(seq, "", "", None, 0, exit=True)
                if fields is not None:
                    run_id = str(fields["run_id"])
                    return Ticket(seq, run_id, str(fields["run_url"]), fields.get("timeout"),
                                  int(fields.get("retries") or 0), unwrap_key(self.key, run_id, str(fields["key"])))  # fmt: skip
                if not refused:
                    say(f"ignoring {ticket_name(seq)}: it is not signed by this worker's client")
                    refused = True
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, POLL_MAX_S)

    # --- one run ----------------------------------------------------------------------------
    def _run(self, ticket: Ticket, *, first: bool) -> None:
        key = ticket.key
        env = dict(os.environ)
        env[run_keys.ENV] = key.hex()
        env["KJUPYTER_RUN_ID"] = ticket.run_id
        env.pop("JOB_COMPLETION_INDEX", None)  # (only the supervisor prints the log's last line)
        if not first:
            env.pop(FAILURES_ENV, None)
        argv = [sys.executable, "-m", "kjupyter.runner", "--run", ticket.run_url, "--workers", "1", "--items", "1",
                "--index", "0", "--retries", str(ticket.retries)]  # fmt: skip
        started = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        child: Child = Spawned(argv, env) if self.spawn else Forked(argv[3:], env)
        try:
            ended = self._watch(child, ticket, started)
        except BaseException:  # the supervisor is told to stop (SIGTERM from the kubelet): so is the run
            _kill(child)
            raise
        if ended is not None:
            say(ended[1])
            frame(0, ended[0], key)
            return
        code = child.code
        if code is not None and code < 0 and not self._outcome_written(ticket):
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            why = " (the pod's memory limit, most likely)" if -code == signal.SIGKILL else ""
            say(f"the run's process was killed by {name}{why}; this warm worker stays up for the next run")
            frame(0, "fail", key)

    def _watch(self, child: Child, ticket: Ticket, started: float) -> tuple[str, str] | None:
        """Wait for the child; ``(frame state, sentence)`` if it was cancelled or timed out, else None."""
        while True:
            if child.wait(CANCEL_POLL_S) is not None:
                return None
            if ticket.timeout and time.monotonic() - started > float(ticket.timeout):
                _kill(child)
                return "timeout", f"the run exceeded its timeout of {float(ticket.timeout):g}s and was stopped"
            data = self._read(cancel_name(ticket.seq))
            if data is not None and hmac.compare_digest(data.strip(), cancel_bytes(self.key, ticket.seq)):
                _kill(child)
                return "cancelled", "the run was cancelled; this warm worker stays up for the next run"

    def _outcome_written(self, ticket: Ticket) -> bool:
        try:
            return st.open_run_dir(ticket.run_url, self.options).exists(st.result_name(0))
        except Exception:
            return False


class Child(abc.ABC):
    """A run's process, in a process group of its own; ``code`` once it ended (negative: killed by a signal)."""

    pid: int
    code: int | None = None

    @abc.abstractmethod
    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds; the exit code, or None if it still runs."""


class Spawned(Child):
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, env=env, start_new_session=True)
        self.pid = self.proc.pid

    def wait(self, timeout: float) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.code = self.proc.wait(timeout=timeout)
        return self.code


class Forked(Child):
    """A fork of the supervisor (which has no threads and never ran user code) that runs the runner's main."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid = os.fork()
        if self.pid == 0:
            self._child(argv, env)
        with contextlib.suppress(OSError):  # (the child does it too: no race with a kill)
            os.setpgid(self.pid, self.pid)

    @staticmethod
    def _child(argv: list[str], env: dict[str, str]) -> None:
        import atexit
        import random

        code = 2
        try:
            atexit._clear()  # the supervisor's handlers (the log's last line) are not the run's
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (nor is its SIGTERM handler)
            with contextlib.suppress(OSError):
                os.setpgid(0, 0)
            os.environ.clear()
            os.environ.update(env)
            from kjupyter.runner.forkserver import _as_if_started_here

            _as_if_started_here(os.getcwd())
            random.seed()
            from kjupyter.runner.entry import main

            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            import atexit as at

            at._run_exitfuncs()  # the user's exit handlers run, as at an interpreter's exit
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
            elif time.monotonic() >= deadline:
                break
            else:
                time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        return self.code


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _kill(child: Child) -> None:
    """SIGTERM the child's process group, SIGKILL it if it is still there after KILL_GRACE_S."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)
        if child.wait(wait) is not None:
            break
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)  # what the run left behind in its group


def frame(index: int, state: str, key: bytes) -> None:
    out = sys.__stdout__ or sys.stdout
    sys.stderr.flush()
    out.write("\n" + item_line(index, 0, state, key) + "\n")
    out.flush()


def say(text: str) -> None:
    print(f"[kjupyter] {text}", file=sys.stderr, flush=True)
