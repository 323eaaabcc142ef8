"""The in-pod entry point: ``python -m kjupyter.runner --run URL``.

Reads the run's payload, runs it, and writes a result or an error envelope
back. It is the only kjupyter code that runs inside a pod, so it imports
little (no Kubernetes, no Jupyter) and reports every failure as data: an
error envelope plus a non-zero exit code, never silence.

Exit codes: 0 success, 1 the user's code raised, 2 kjupyter could not run the
payload (no run key, a payload that fails authentication, unreadable store,
version mismatch, missing package).

Nothing is unpickled before it is authenticated: the run's key comes in
``$KJUPYTER_RUN_KEY`` (hex; removed from the environment before user code
runs), the payload and each map item must carry its HMAC under that key, and
every result or error written back is signed with it (:mod:`kjupyter.integrity`).

For a map, the task index comes from ``--index`` or ``JOB_COMPLETION_INDEX``,
which Kubernetes sets in every pod of an Indexed Job.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from kjupyter import payload as pl
from kjupyter import pickler, run_keys
from kjupyter.errors import KjupyterError, SerializationError
from kjupyter.inline_frames import eof_line
from kjupyter.runner.channels import Channel, InlineChannel, StoreChannel

EXIT_OK, EXIT_USER_ERROR, EXIT_RUNNER_ERROR = 0, 1, 2
STARTED_MARKER_ENV = "KJUPYTER_STARTED_AT"  # set by benchmarks to measure in-pod overhead


def _install_packages(packages: list[str]) -> None:
    """pip-install the run's ``packages`` into a private folder put first on sys.path."""
    if not packages:
        return
    target = tempfile.mkdtemp(prefix="kjupyter-packages-")
    print(f"[kjupyter] installing {' '.join(packages)}", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", target]
    done = subprocess.run([*cmd, *packages], stdout=sys.stderr, stderr=sys.stderr, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pip could not install {packages}: exit code {done.returncode}")
    sys.path.insert(0, target)


def _what(thing: str, channel: Channel, name: str) -> str:
    """``the payload of run R (URL/payload.pkl)``: what failed and where, for an IntegrityError."""
    run_id = os.environ.get("KJUPYTER_RUN_ID", "")
    return f"{thing}{f' of run {run_id}' if run_id else ''} ({channel.where}/{name})"


def load_payload(channel: Channel, key: bytes) -> tuple[str, Any]:
    """Verify and read the payload (installing its packages): ``(kind, body)``."""
    what = _what("the payload", channel, "payload.pkl")
    with channel.open_payload() as raw, pl.verified(raw, key, pl.PAYLOAD_PURPOSE, what) as f:
        header = pl.read_header(f)
        header.check_compatible()
        _install_packages(list(header.extra.get("packages", [])))
        return header.kind, pl.load_body(f)


def load_task(channel: Channel, index: int, key: bytes) -> Callable[[], Any]:
    """Verify and read the payload; return a zero-argument callable that runs the user's code."""
    kind, body = load_payload(channel, key)
    if kind == pl.CALL:
        fn, args, kwargs = body
        return lambda: fn(*args, **kwargs)
    if kind == pl.MAP:
        what = _what(f"item {index}", channel, "items.pkl")
        item = pl.load_item(channel.read_item(index), key=key, index=index, what=what)
        return lambda: body(item)
    raise SerializationError(f"the runner cannot execute a {kind!r} payload")


def run(channel: Channel, index: int, key: bytes, *, final: bool = True,
        loader: Callable[[Channel, int, bytes], Callable[[], Any]] | None = None) -> int:  # fmt: skip
    """Run task ``index`` and write its outcome; ``final`` False: a failure is only printed (it will be retried)."""
    try:
        task = (loader or load_task)(channel, index, key)
    except KjupyterError as exc:  # a sentence of kjupyter's own (authentication, versions): no traceback
        _report(channel, index, exc.with_traceback(None), "runner", key)
        return EXIT_RUNNER_ERROR
    except BaseException as exc:  # report everything, including SystemExit from pip
        _report(channel, index, exc, "runner", key)
        return EXIT_RUNNER_ERROR
    if started := os.environ.get(STARTED_MARKER_ENV):
        print(f"[kjupyter] user code starts {time.time() - float(started):.4f}s after launch", file=sys.stderr)
    try:
        value = task()
    except BaseException as exc:
        _report(channel, index, exc, "user", key, write=final)
        return EXIT_USER_ERROR
    purpose = pl.result_purpose(index)
    try:
        channel.write_outcome(
            index, lambda f: pl.write_envelope(f, pl.RESULT, value, key=key, purpose=purpose, outbound=False)
        )
    except BaseException as exc:
        _report(channel, index, _explain_result_error(value, exc), "result", key)
        return EXIT_USER_ERROR
    return EXIT_OK


def _explain_result_error(value: Any, exc: BaseException) -> BaseException:
    if isinstance(exc, SerializationError | OSError) or "pickle" not in str(exc).lower():
        return exc
    where, culprit, err = pickler.find_unpicklable(value, "the result")
    return SerializationError(
        f"the function's return value cannot be pickled: {where} is {pickler.describe(culprit)} ({err or exc})"
    )


def _report(channel: Channel, index: int, exc: BaseException, where: str, key: bytes, write: bool = True) -> None:
    """Write the signed error envelope; the log gets the traceback only where the envelope cannot carry it.

    The client shows the envelope's traceback (once, the user's frames): a copy in the log would show it twice.
    The log has one line instead; a failure that will be retried (``write`` False), or whose envelope cannot
    be written, prints the whole traceback, since nothing else will carry it.
    """
    data = pl.dump_error(exc, key=key, purpose=pl.result_purpose(index), where=where)
    header = json.loads(data.split(b"\n", 2)[1])
    if not write or where != "user":  # (kjupyter's own refusals are one sentence already: the log keeps them)
        print(header["traceback"], file=sys.stderr, end="", flush=True)
    if not write:
        return
    try:
        channel.write_outcome(index, lambda f: _write_all(f, data))
    except BaseException as write_exc:  # the store is gone: the exit code and log still tell
        if where == "user":
            print(header["traceback"], file=sys.stderr, end="", flush=True)
        print(f"[kjupyter] could not write the error to the store: {write_exc}", file=sys.stderr, flush=True)
        return
    if where != "user":
        return
    message = str(header.get("message", "")).strip().splitlines()
    line = str(header.get("type", type(exc).__name__)).removeprefix("builtins.") + (
        f": {message[0]}" if message else ""
    )
    print(f"[kjupyter] raised {line} (its traceback went back with the result)", file=sys.stderr, flush=True)


def _write_all(f: IO[bytes], data: bytes) -> None:
    f.write(data)


@contextlib.contextmanager
def _line_buffered() -> Iterator[None]:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kjupyter.runner", description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=os.environ.get("KJUPYTER_RUN"), help="URL of the run folder in the store")
    parser.add_argument("--index", type=int, default=None, help="task index (default: $JOB_COMPLETION_INDEX or 0)")
    parser.add_argument("--inline", metavar="DIR", help="read the payload from DIR, print the outcome on stdout")
    parser.add_argument("--serve", metavar="LOG_DIR", help=argparse.SUPPRESS)  # local backend worker mode
    parser.add_argument("--workers", type=int, default=None, help="a worker pod of a map of --items items")
    parser.add_argument("--items", type=int, default=0, help="items of the map (with --workers)")
    parser.add_argument("--retries", type=int, default=0, help="retries per item (with --workers)")
    parser.add_argument("--claims", choices=("dynamic", "static", "chunks"), default="static",
                        help="how workers share items")  # fmt: skip
    parser.add_argument("--chunk", type=int, default=1, help="items per worker index (with --claims chunks)")
    parser.add_argument(
        "--warm",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="a warm worker: after the run, wait this long for the next (kjupyter.runner.warm)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="the run's timeout (with --warm)")
    parser.add_argument("--spawn", action="store_true",
                        help="with --warm: each run in a new interpreter, not a fork (a pod with a GPU)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.run and not args.inline:
        parser.error("--run URL (or $KJUPYTER_RUN) or --inline DIR is required")
    index = args.index if args.index is not None else int(os.environ.get("JOB_COMPLETION_INDEX") or 0)
    options = json.loads(os.environ.get("KJUPYTER_STORE_OPTIONS") or "{}")
    key = run_keys.key_from_env()
    os.environ.pop(run_keys.ENV, None)  # the user's code and its children do not need it (nor print it)
    with _line_buffered():
        if key is None:
            print(f"[kjupyter] refusing to run: ${run_keys.ENV} is missing or is not 64 hex digits, so this runner "
                  "can neither authenticate its payload nor sign its result; start runs from a kjupyter client "
                  "of the image's version, which gives each run its key", file=sys.stderr)  # fmt: skip
            return EXIT_RUNNER_ERROR
        try:
            channel: Channel = InlineChannel(args.inline, key) if args.inline else StoreChannel(args.run, options)
        except Exception as exc:
            print(f"[kjupyter] cannot open the run store: {exc}", file=sys.stderr)
            return EXIT_RUNNER_ERROR
        if args.serve:
            from kjupyter.runner.worker import PipeWorker

            control_out = os.fdopen(os.dup(1), "w")
            return PipeWorker(channel, key, control_in=sys.stdin, control_out=control_out, log_dir=args.serve,
                              retries=args.retries).work()  # fmt: skip
        if os.environ.get("JOB_COMPLETION_INDEX") is not None:  # in a pod: the log's signed last line, at exit
            atexit.register(_end_of_log, index, key)  # (registered first, so it runs after the user's handlers)
        if args.warm > 0 and args.run:
            from kjupyter.runner.warm import Supervisor

            return Supervisor(args.run, options, key, window=args.warm, timeout=args.timeout, retries=args.retries,
                              spawn=args.spawn or os.environ.get("KJUPYTER_WARM_SPAWN") == "1").serve()  # fmt: skip
        if args.workers:
            from kjupyter.runner.worker import Worker

            plan = Worker(channel, key, worker=index, workers=args.workers, count=args.items, retries=args.retries,
                          dynamic=args.claims == "dynamic", chunk=args.chunk if args.claims == "chunks" else 1)  # fmt: skip
            return plan.work()
        return run(channel, index, key)


def _end_of_log(index: int, key: bytes) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.flush()
        sys.stdout.write("\n" + eof_line(index, key) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
