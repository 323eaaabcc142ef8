"""Plain-text view of a run: log lines, diagnosis, a text progress bar, a summary.

Used in scripts, terminals and the CLI; notebooks get the widget view, which
prints the same :func:`summary` at the end, and whose display output carries
:func:`report` as its text (what a notebook shows where the widget cannot be
rendered: GitHub, nbviewer, nbconvert, an untrusted notebook).
"""

from __future__ import annotations

import html
import re
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from kjupyter import usage
from kjupyter.futures import RunFuture
from kjupyter.run_events import Diagnosis, Event, LogLine, Phase, PhaseChanged, Progress, RunFinished
from kjupyter.spec import format_duration

REPORT_LOG_LINES = 20  # log lines in a report
REPORT_FAILURES = 10  # failed items named in a report
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def summary(future: RunFuture, *, function: bool = False) -> str:
    """One line that says how a run ended: ``kjupyter: run train-x1 on local Succeeded in 2.1s``.

    With ``function``, the function's name follows the run id (``run train-x1 (train)``). A run that
    has not ended says for how long it has been going on (``Running for 12s``).
    """
    cached = getattr(future, "cached", "")  # a cache hit (kjupyter.cache): no run, the stored result
    if cached:
        return f"kjupyter: {cached}"
    elapsed = (future.finished_at or time.time()) - future.created
    name = function_name(future.function) if function else ""
    what = f"run {future.run_id}" + (f" ({name})" if name else "")
    since = "in" if future.phase.finished else "for"
    text = f"kjupyter: {what} on {future.cluster} {future.phase.value} {since} {format_duration(round(elapsed, 1))}"
    counts = getattr(future, "counts", None)
    if counts and future.total > 1:
        text += f" ({counts['succeeded']} succeeded, {counts['failed']} failed"
        text += f", {counts['cancelled']} cancelled" if counts.get("cancelled") else ""
        text += f" of {counts['total']})"
    used = usage_line(future)
    if used:
        text += f" ({used})"
    if future.diagnosis and future.phase is not Phase.SUCCEEDED:
        text += f"\n  {future.diagnosis}"
    return text


def usage_line(future: RunFuture) -> str:
    """``GPU-h 0.52 (A100) · cpu-h 1.04 · est. cost 1.93 USD`` once the run used GPUs or its cluster has prices."""
    used = future.usage.as_dict if future.usage is not None else {}
    if not used:
        return ""
    prices = getattr(getattr(future.backend, "profile", None), "prices", None) or usage.Prices()
    if not (prices or usage.gpu_hours(used)):
        return ""
    return usage.describe(used, prices)


def function_name(qualname: str) -> str:
    """How a run's function is named to the user (a ``%%kube`` cell's task is "%%kube cell")."""
    return "%%kube cell" if qualname == "CellTask" else qualname


def terminal_line(line: str) -> str:
    """A log line as a terminal ends up showing it: no colour codes; after a carriage return, what follows it."""
    return _ANSI.sub("", line).rstrip("\r").rsplit("\r", 1)[-1]


def report(future: RunFuture, tail: Sequence[str], total_lines: int) -> str:
    """A run in plain text: the summary, what failed, the last log lines (``tail``, of ``total_lines``)."""
    parts = [summary(future, function=True)]
    if not future.phase.finished:
        parts.append(f"  (saved while the run went on: `kjupyter logs {future.run_id}` has its log)")
    failures = future.failures()
    if failures:
        parts.append("Failed:" if len(failures) == 1 and failures[0][0] is None else f"Failed items ({len(failures)}):")
        for index, exc in failures[:REPORT_FAILURES]:
            where = "" if index is None else f"item {index} ({future.describe(index)}): "
            parts.append(f"  {where}{exception_line(exc)}")
        if len(failures) > REPORT_FAILURES:
            parts.append(f"  ... and {len(failures) - REPORT_FAILURES} more")
    shown = list(tail)[-REPORT_LOG_LINES:]
    if shown:
        earlier = total_lines - len(shown)
        more = f"; {earlier} earlier lines: kjupyter logs {future.run_id}" if earlier > 0 else ""
        parts.append(f"Log (last {len(shown)} lines{more}):")
        parts.extend(terminal_line(line) for line in shown)
    return "\n".join(parts)


def report_html(text: str) -> str:
    """:func:`report`'s text as HTML (its first line in bold)."""
    first, _, rest = text.partition("\n")
    body = f"<b>{html.escape(first)}</b>" + (f"\n{html.escape(rest)}" if rest else "")
    return f"<pre class='kjupyter-report'>{body}</pre>"


def exception_line(exc: BaseException) -> str:
    """``ValueError: four``: an exception's type and the first line of its message."""
    message = str(exc).strip().splitlines()
    first = message[0] + (" …" if len(message) > 1 else "") if message else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def progress_bar(p: Progress, width: int = 30) -> str:
    done = p.succeeded + p.failed
    filled = int(width * done / p.total) if p.total else width
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {done}/{p.total} "
        f"succeeded {p.succeeded} failed {p.failed} running {p.running} pending {p.pending}"
    )


class ConsoleView:
    """Subscribe it to a future: it prints what happens as it happens."""

    def __init__(self, future: RunFuture, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.future = future
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.is_map = future.kind == "map"
        self.tty = bool(getattr(self.err, "isatty", lambda: False)())
        self._last_decile = -1
        self._bar_shown = False
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, LogLine):
                self._clear_bar()
                prefix = f"[{event.index}] " if self.is_map else ""
                print(prefix + event.text, file=self.out, flush=True)
            elif isinstance(event, Diagnosis) and event.reason != "Cached":  # (the summary says that one)
                self._clear_bar()
                where = f" (item {event.index})" if event.index is not None and self.is_map else ""
                print(f"kjupyter: {event}{where}", file=self.err, flush=True)
            elif isinstance(event, PhaseChanged) and event.index is None and event.phase is Phase.PENDING:
                print(f"kjupyter: run {event.run_id} submitted to {self.future.cluster}", file=self.err, flush=True)
            elif isinstance(event, Progress) and self.is_map:
                self._progress(event)
            elif isinstance(event, RunFinished):
                self._clear_bar()
                print(summary(self.future), file=self.err, flush=True)

    def _progress(self, p: Progress) -> None:
        if self.tty:
            print("\r" + progress_bar(p), end="", file=self.err, flush=True)
            self._bar_shown = True
            return
        decile = (p.succeeded + p.failed) * 10 // max(p.total, 1)
        if decile != self._last_decile:
            self._last_decile = decile
            print("kjupyter: " + progress_bar(p), file=self.err, flush=True)

    def _clear_bar(self) -> None:
        if self._bar_shown:
            print("\r\033[K", end="", file=self.err, flush=True)
            self._bar_shown = False
