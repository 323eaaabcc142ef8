"""Plain-text view of a run: log lines, diagnosis, a text progress bar, a summary.

Used in scripts, terminals and the CLI; notebooks get the widget view, which
prints the same :func:`summary` at the end so a saved notebook shows it too.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from kjupyter.futures import RunFuture
from kjupyter.run_events import Diagnosis, Event, LogLine, Phase, PhaseChanged, Progress, RunFinished
from kjupyter.spec import format_duration


def summary(future: RunFuture) -> str:
    """One line that says how a run ended: ``kjupyter: run train-x1 on local Succeeded in 2.1s``."""
    elapsed = (future.finished_at or time.time()) - future.created
    text = f"kjupyter: run {future.run_id} on {future.cluster} {future.phase.value} in {format_duration(round(elapsed, 1))}"
    counts = getattr(future, "counts", None)
    if counts and future.total > 1:
        text += f" ({counts['succeeded']} succeeded, {counts['failed']} failed"
        text += f", {counts['cancelled']} cancelled" if counts.get("cancelled") else ""
        text += f" of {counts['total']})"
    if future.diagnosis and future.phase is not Phase.SUCCEEDED:
        text += f"\n  {future.diagnosis}"
    return text


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
            elif isinstance(event, Diagnosis):
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
