"""Plain-text view of a run: log lines, diagnosis, a tqdm progress bar (a map), a summary.

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

from tqdm import tqdm

from kjupyter import failure_text as ft
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
    phase = shown_phase(future)
    since = "in" if phase.finished else "for"
    text = f"kjupyter: {what} on {future.cluster} {phase.value} {since} {format_duration(round(elapsed, 1))}"
    if future.kind == "map":  # failures first: "27 ok · 3 raised (returned)", "stopped at item 7: ValueError"
        text += f": {map_status(future, ended=future.phase.finished)}"
    used = usage_line(future)
    if used:
        text += f" ({used})"
    return text  # (no diagnosis: the widget or the console showed it, and the raised failure says it once)


def shown_phase(future: RunFuture, phase: Phase | None = None) -> Phase:
    """How a run's end reads: a map that stopped at a failed item Failed (its other items were cancelled, it was
    not); a map that returned its items' exceptions (``return_exceptions=True``) Succeeded, its words say what raised."""
    phase = phase or future.phase
    if future.kind != "map" or not phase.finished or not future.done():
        return phase
    if getattr(future, "stopped_at", None) is not None:
        return Phase.FAILED
    if phase is Phase.FAILED and getattr(future, "return_exceptions", False) and not future.cancelled():
        return Phase.SUCCEEDED if future.exception(0) is None else phase
    return phase


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


def report(future: RunFuture, tail: Sequence[str], total_lines: int, *, raised: bool = False) -> str:
    """A run in plain text: the summary, what failed, the last log lines (``tail``, of ``total_lines``).

    ``raised``: the cell raised the run's failure, and its error output says it; a call's failure is then not
    repeated here (a map's failed items still are: the error names only the first).
    """
    parts = [summary(future, function=True)]
    if not future.phase.finished:
        parts.append(f"  (saved while the run went on: `kjupyter logs {future.run_id}` has its log)")
    failures = future.failures()
    if raised and future.kind != "map":
        failures = []
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


exception_line = ft.first_line_of  # ``ValueError: four``


def map_status(future: RunFuture, *, ended: bool, running: int = 0) -> str:
    """A map's state in words, failures first (cancelled items are not failures)."""
    counts = dict(getattr(future, "counts", None) or {"total": future.total, "succeeded": 0, "failed": 0,
                                                        "cancelled": 0})  # fmt: skip
    stopped = getattr(future, "stopped_at", None)
    error = future.exception(0) if stopped is not None and future.done() and not future.cancelled() else None
    return ft.map_status(counts, ended=ended, return_exceptions=bool(getattr(future, "return_exceptions", False)),
                         stopped_at=stopped, stop_error=error, running=running)  # fmt: skip


class ConsoleView:
    """Subscribe it to a future: it prints what happens as it happens.

    Log lines go to ``out``, kjupyter's own lines to ``err``. A map shows a tqdm progress bar on a terminal
    (a line every tenth of the items elsewhere, in tqdm's format), its words failures first. A call's failure
    is not printed here: the exception it raises is shown once, by kjupyter's renderer.
    """

    def __init__(self, future: RunFuture, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.future = future
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.is_map = future.kind == "map"
        self.tty = bool(getattr(self.err, "isatty", lambda: False)())
        self._last_decile = -1
        self._last_words = ""
        self._bar: tqdm | None = None
        self._running = 0
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, LogLine):
                prefix = f"[{event.index}] " if self.is_map else ""
                self._print(prefix + event.text, self.out)
            elif isinstance(event, Diagnosis) and event.reason != "Cached":  # (the summary says that one)
                if event.fatal and (not self.is_map or event.reason in ft.REDUNDANT_REASONS):
                    return  # a call's failure says it once, when it is raised; "it failed" adds nothing
                where = f" (item {event.index})" if event.index is not None and self.is_map else ""
                self._print(f"kjupyter: {event.sentence}{where}", self.err)
                if event.hint:
                    self._print(f"  hint: {event.hint}", self.err)
            elif isinstance(event, PhaseChanged) and event.index is None and event.phase is Phase.PENDING:
                self._print(f"kjupyter: run {event.run_id} submitted to {self.future.cluster}", self.err)
            elif isinstance(event, Progress) and self.is_map:
                self._running = event.running
                self._progress(ended=False)
            elif isinstance(event, RunFinished):
                if self.is_map:
                    self._progress(ended=True)
                if self._bar is not None:
                    self._bar.close()
                    self._bar = None
                if self.is_map or not self.future.done() or self._succeeded():
                    print(summary(self.future), file=self.err, flush=True)

    def _succeeded(self) -> bool:
        return not self.future.cancelled() and self.future.exception(0) is None

    def _print(self, text: str, stream: TextIO) -> None:
        if self._bar is None:
            print(text, file=stream, flush=True)
            return
        with tqdm.external_write_mode(file=stream, nolock=True):  # the bar steps aside for the line
            print(text, file=stream, flush=True)

    def _progress(self, *, ended: bool) -> None:
        counts = getattr(self.future, "counts", None) or {"total": self.future.total, "succeeded": 0, "failed": 0,
                                                          "cancelled": 0}  # fmt: skip
        settled = counts["succeeded"] + counts["failed"] + counts["cancelled"]
        words = map_status(self.future, ended=ended, running=self._running).split(" done · ", 1)[-1]  # (tqdm: n/N)
        if self.tty:
            if self._bar is None:
                self._bar = tqdm(total=counts["total"], file=self.err, unit="item", desc=f"kjupyter {self.future.run_id}",
                                 leave=True, dynamic_ncols=True)  # fmt: skip
            self._bar.n = settled
            self._bar.set_postfix_str(words, refresh=True)
            return
        decile = settled * 10 // max(counts["total"], 1)
        if decile != self._last_decile or (ended and words != self._last_words):  # a line every tenth, the end
            self._last_decile, self._last_words = decile, words
            elapsed = time.time() - self.future.created
            meter = tqdm.format_meter(
                settled, counts["total"], elapsed, unit="item", postfix=words
            )  # (no width: whole words)
            print(f"kjupyter {self.future.run_id}: {meter}", file=self.err, flush=True)
