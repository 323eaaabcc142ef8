"""The live run view in a notebook (ipywidgets only: JupyterLab, Notebook 7, VS Code).

A header on one line (status, elapsed time, run, cluster, pod/node; cut with an ellipsis when
the output is narrow; a map names its pods' count), a Cancel button while the run goes on, a
diagnosis when something is wrong (its sentence, and its hint on a line below), for a map the
failure-first view of :mod:`kjupyter.notebook.map_view` (its words, a bar split by outcome, the
failed items with their own logs) and a viewer for any item's log, the live log, and at the end of
a failure the whole remote traceback under "Full traceback". A blocking run that failed leaves
the failure to the exception its cell raises (shown once, by :mod:`kjupyter.failure_text`): the
widget then hides its diagnosis and prints no summary. Colours are JupyterLab's theme variables. Events arrive on backend threads; log lines are batched and shown a few times a second by
one flusher thread (widget traits only, never ``with out:`` from a thread). The header is sent
only when its text changes: its elapsed time ticks once a second. The widget keeps the last
lines; :meth:`RunWidget.log` has them all.

The log follows new lines while the user has not scrolled it up, with CSS only (no front-end
code): it is an HTML widget laid out as a reversed flex column, a box that browsers start at its
bottom and keep there as lines are added, and leave where the user scrolled it up to until they
scroll back down. (An Output widget cannot do this: the front end rebuilds its content on every
change, which throws the scroll position away.)

The widget is displayed with a display id and a mime bundle that carries, beside the widget
view, :func:`kjupyter.notebook.text_view.report` as ``text/plain`` and ``text/html``: summary,
failures, last log lines. That is what a saved notebook shows where the widget cannot be
rendered (GitHub, nbviewer, nbconvert, untrusted notebooks). The bundle is updated through the
display handle when the run ends, and, while it goes on, when its phase changes, a diagnosis
comes or a first item fails, at most once per :data:`FALLBACK_INTERVAL`: a front end re-creates
the widget's view on every update (JupyterLab does), which would lose the place of a user
reading the log, so there is no periodic update. When a blocking run ends well, the plain-text
:func:`kjupyter.notebook.text_view.summary` is printed too (a failure: the cell's error says it).

The Cancel button works while a blocking call holds the kernel through
:mod:`kjupyter.notebook.comm_pump`.
"""

from __future__ import annotations

import collections
import html
import itertools
import threading
import time
from collections.abc import Iterable
from typing import Any

import ipywidgets as w
from IPython.display import display

from kjupyter import failure_text as ft
from kjupyter.futures import RunFuture
from kjupyter.notebook import map_view as mv
from kjupyter.notebook.comm_pump import after_comm
from kjupyter.notebook.text_view import (
    REPORT_LOG_LINES,
    report,
    report_html,
    shown_phase,
    summary,
    terminal_line,
    usage_line,
)
from kjupyter.run_events import Diagnosis, Event, LogLine, Phase, PhaseChanged, Progress, RunFinished, TaskFinished
from kjupyter.spec import format_duration

FLUSH_INTERVAL = 0.2  # seconds between log batches
FALLBACK_INTERVAL = 5.0  # seconds: at most one update of the display's text per this while a run goes on
KEEP_LINES = 500  # lines shown in the widget at once (up to twice as many before the oldest go)
HISTORY_LINES = (
    20_000  # lines kept for RunWidget.log() and the item viewer (bounded: a long run must not grow the kernel)
)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# JupyterLab's theme variables, readable in its light and dark themes (with fallbacks for other front ends).
_COLOURS = {
    Phase.PENDING: "var(--jp-warn-color1, #b58900)",
    Phase.RUNNING: "var(--jp-brand-color1, #1976d2)",
    Phase.SUCCEEDED: "var(--jp-success-color1, #2e7d32)",
    Phase.FAILED: "var(--jp-error-color1, #d32f2f)",
    Phase.CANCELLED: "var(--jp-ui-font-color2, #757575)",
}
_ONE_LINE = "white-space:nowrap;overflow:hidden;text-overflow:ellipsis"
_LOG_STYLE = ("margin:0;white-space:pre-wrap;overflow-wrap:anywhere;font-family:var(--jp-code-font-family,monospace);"
              "font-size:var(--jp-code-font-size,13px);line-height:var(--jp-code-line-height,1.3)")  # fmt: skip


def log_html(lines: Iterable[str], earlier: int = 0, run_id: str = "RUN") -> str:
    """The log view's HTML: the lines (escaped, as a terminal shows them), after a note of the earlier ones."""
    note = f"<i>({earlier} earlier lines: kjupyter logs {html.escape(run_id)})</i>\n" if earlier > 0 else ""
    body = "\n".join(html.escape(terminal_line(line)) for line in lines)
    return f"<pre class='kjupyter-log-lines' style='{_LOG_STYLE}'>{note}{body}</pre>"


class RunWidget:
    """One run's live view. Call it with events (it is an EventSink); ``box`` is the displayed widget.

    ``blocking``: the cell waits for the run (``%%kube``, ``f(x)``), so the summary printed at the
    end lands in its output; a run shown by ``f.submit()`` prints nothing (the cell has ended).
    """

    def __init__(self, future: RunFuture, *, keep_lines: int = KEEP_LINES, blocking: bool = True) -> None:
        self.future = future
        self.is_map = future.kind == "map"
        self.keep_lines = keep_lines
        self.blocking = blocking
        self.phase = Phase.PENDING
        self.where = ""
        # The log as far back as HISTORY_LINES (map lines prefixed with [index]); `kjupyter logs` has all of it.
        self.lines: collections.deque[str] = collections.deque(maxlen=HISTORY_LINES)
        self.total_lines = 0
        self.by_index: dict[int, collections.deque[str]] = {}
        self._pending: list[str] = []
        self._shown: list[str] = []  # lines in the log view
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._finished = False
        self.handle: Any = None  # the display's handle (None outside IPython)
        self.updates = 0  # display updates sent
        self._due = False  # the display's text should be updated (at most once per FALLBACK_INTERVAL)
        self._updated_at = 0.0
        self._failure_seen = False

        self.header = w.HTML(layout=w.Layout(flex="1 1 auto", min_width="0", display="block", overflow="hidden"))
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop",
                                      layout=w.Layout(width="auto", flex="0 0 auto"))  # fmt: skip
        self.cancel_button.on_click(lambda _: after_comm(self.future.cancel))
        self.diagnosis = w.HTML(layout=w.Layout(display="none"))
        # column-reverse: the browser keeps the box at its bottom as lines come, unless the user scrolled up
        self.out = w.HTML(layout=w.Layout(display="none", flex_flow="column-reverse", max_height="24em",
                                          overflow="auto"))  # fmt: skip
        self.out.add_class("kjupyter-log")
        children: list[Any] = [w.HBox([self.header, self.cancel_button], layout=w.Layout(width="100%")),
                               self.diagnosis]  # fmt: skip
        self.failed = w.HTML(layout=w.Layout(display="none"))  # failed items (a map), the full traceback
        self.pods: set[str] = set()
        self.running = 0
        if self.is_map:
            self.counts = w.HTML(mv.counts_html(future, ended=False))
            self.index = w.BoundedIntText(value=0, min=0, max=max(future.total - 1, 0), description="item",
                                          layout=w.Layout(width="10em"))  # fmt: skip
            self.index_button = w.Button(description="Show its log", layout=w.Layout(width="auto"))
            self.index_button.on_click(lambda _: self.show_index(int(self.index.value)))
            self.index_out = w.Output(layout=w.Layout(max_height="16em", overflow="auto"))
            children += [self.counts, w.HBox([self.index, self.index_button]), self.index_out]
        children += [self.failed, self.out]
        self.box = w.VBox(children)
        self._render_header()
        self._thread = threading.Thread(target=self._flusher, name=f"kjupyter-widget-{future.run_id}", daemon=True)

    @classmethod
    def show(cls, future: RunFuture, *, blocking: bool = True) -> RunWidget:
        """Display a widget for ``future`` and return it (subscribe it to the future's events)."""
        widget = cls(future, blocking=blocking)
        widget.handle = display(widget.mimebundle(), raw=True, display_id=True)  # type: ignore[no-untyped-call,unused-ignore]
        widget._updated_at = time.monotonic()
        widget._thread.start()
        return widget

    def mimebundle(self) -> dict[str, Any]:
        """The display's data: the widget view, and the run as text for where the widget cannot be shown."""
        with self._lock:
            tail = list(itertools.islice(reversed(self.lines), REPORT_LOG_LINES))[::-1]
            raised = self.blocking and self._finished and self.future.done() and not self._succeeded()
            text = report(self.future, tail, self.total_lines, raised=raised)
        view = {"version_major": 2, "version_minor": 0, "model_id": self.box.model_id}
        return {WIDGET_VIEW: view, "text/plain": text, "text/html": report_html(text)}

    # --- events (backend threads) -----------------------------------------------------------

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, LogLine):
                text = f"[{event.index}] {event.text}" if self.is_map else event.text
                self.lines.append(text)
                self.total_lines += 1
                self.by_index.setdefault(event.index, collections.deque(maxlen=HISTORY_LINES)).append(event.text)
                self._pending.append(text)
            elif isinstance(event, PhaseChanged):
                self._phase(event)
            elif isinstance(event, Diagnosis) and not (event.fatal and event.reason in ft.REDUNDANT_REASONS):
                self.diagnosis.value = diagnosis_html(event, self.is_map)  # (one that only says "it failed": the
                self.diagnosis.layout.display = None  # failure itself, or the failed items, say more)
                self._due = True
            elif isinstance(event, Progress) and self.is_map:
                self.running = event.running
                self.counts.value = mv.counts_html(self.future, ended=False, running=event.running)
            elif isinstance(event, TaskFinished) and self.is_map:
                self.counts.value = mv.counts_html(self.future, ended=False, running=self.running)
                if event.phase is Phase.FAILED:
                    self._show_failed()
                    self._due = self._due or not self._failure_seen  # the first failure is worth a saved word
                    self._failure_seen = True
            elif isinstance(event, RunFinished):
                self._finish(event)

    def _phase(self, event: PhaseChanged) -> None:
        if event.message.startswith("on warm worker"):  # (which warm pod, and how soon it started the run)
            self.where = event.message
        elif self.is_map and event.pod:
            self.pods.add(event.pod)  # a map names its pods' count, not one pod of many
            self.where = f"{len(self.pods)} pod{'s' if len(self.pods) > 1 else ''}"
        elif event.pod or event.node:
            if event.index is None or not self.is_map:
                self.where = " / ".join(x for x in (event.pod, event.node) if x)
        if event.index is None:
            self._due = self._due or event.phase is not self.phase
            self.phase = event.phase
            diagnosis = self.future.diagnosis
            if event.phase is Phase.RUNNING and (diagnosis is None or not diagnosis.fatal):
                self.diagnosis.layout.display = "none"  # a warning (say, waiting for a node) resolved itself
        self._render_header()

    def _finish(self, event: RunFinished) -> None:
        if self._finished:
            return
        self._finished = True
        self.phase = event.phase
        self._stop.set()
        self._flush()
        self.cancel_button.disabled = True
        self.cancel_button.layout.display = "none"  # nothing left to cancel
        raised = self.blocking and self.future.done() and not self._succeeded()
        if self.is_map:
            self.phase = shown_phase(self.future, event.phase)
            self.counts.value = mv.counts_html(self.future, ended=True)
        if raised:
            self.diagnosis.layout.display = "none"  # the error the cell raises, right below, says it (once)
        self._show_failed(ended=True)
        self._render_header(ended=event.time)
        self._update_display()
        if self.blocking and not raised:  # a failure is told by the exception the cell raises, once
            print(summary(self.future), flush=True)

    def _succeeded(self) -> bool:
        return not self.future.cancelled() and self.future.exception(0) is None

    def _show_failed(self, ended: bool = False) -> None:
        """The failed items (a map), and at the end the full remote traceback, one click away."""
        parts = [mv.failed_html(self.future, lambda i: self.by_index.get(i, ()))]
        exc = self.future.exception(0) if ended and self.future.done() and not self.future.cancelled() else None
        full = str(getattr(exc, "remote_traceback", "") or "")
        if full:
            parts.append(f"<details class='kjupyter-traceback'><summary>Full traceback</summary>"
                         f"<pre style='{_LOG_STYLE}'>{html.escape(full)}</pre></details>")  # fmt: skip
        value = "".join(parts)
        if value:
            self.failed.value = value
            self.failed.layout.display = None

    def _update_display(self) -> None:
        """Send the display's bundle again (its text is what a saved notebook keeps)."""
        self._due = False
        self._updated_at = time.monotonic()
        if self.handle is not None:
            self.handle.update(self.mimebundle(), raw=True)
            self.updates += 1

    # --- rendering --------------------------------------------------------------------------

    def _render_header(self, ended: float | None = None) -> None:
        """Set the header's HTML if it changed: the elapsed time has whole seconds until the run ended."""
        f = self.future
        elapsed = (ended or f.finished_at or time.time()) - f.created
        took = format_duration(round(elapsed, 1) if ended is not None else int(elapsed))
        words = [self.phase.value, took, f.run_id, f"on {f.cluster}"] + ([self.where] if self.where else [])
        parts = [
            f"<b style='color:{_COLOURS[self.phase]}' class='kjupyter-status'>{self.phase.value}</b>",
            f"<span class='kjupyter-elapsed'>{took}</span>",
            f"<code>{html.escape(f.run_id)}</code>",
            f"on <b>{html.escape(f.cluster)}</b>",
        ]
        if self.where:
            parts.append(html.escape(self.where))
        used = usage_line(f) if self.phase.finished else ""  # GPU-hours and estimated cost, once it ended
        if used:
            words.append(used)
            parts.append(f"<span class='kjupyter-usage'>{html.escape(used)}</span>")
        title = html.escape(" · ".join(words), quote=True)
        value = f"<div class='kjupyter-header' title='{title}' style='{_ONE_LINE}'>{' · '.join(parts)}</div>"
        if value != self.header.value:  # nothing is sent when nothing changed
            self.header.value = value

    def _flusher(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            self._tick()

    def _tick(self) -> None:
        """One round of the flusher: the new log lines, the header, the display's text if due."""
        with self._lock:
            if self._finished:
                return
            self._flush()
            self._render_header()
            if self._due and time.monotonic() - self._updated_at >= FALLBACK_INTERVAL:
                self._update_display()

    def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self._shown.extend(batch)
        if len(self._shown) > 2 * self.keep_lines:  # keep the widget small: back to the last lines
            del self._shown[: -self.keep_lines]
        self.out.value = log_html(self._shown, self.total_lines - len(self._shown), self.future.run_id)
        self.out.layout.display = "flex"

    # --- for the user -----------------------------------------------------------------------

    def show_index(self, index: int) -> None:
        """Show the log of one item of a map in the item viewer."""
        with self._lock:
            lines = list(self.by_index.get(index, ()))
            text = "\n".join(lines) + "\n" if lines else f"(no log lines from item {index} yet)\n"
        self.index_out.outputs = ({"output_type": "stream", "name": "stdout", "text": text},)

    def log(self, index: int | None = None) -> str:
        """The log (or one item's), its last HISTORY_LINES lines (`kjupyter logs RUN` has every line)."""
        with self._lock:
            return "\n".join(self.lines if index is None else self.by_index.get(index, ()))


def diagnosis_html(d: Diagnosis, is_map: bool = False) -> str:
    """A diagnosis as two lines: what is wrong, then what to do (theme colours, readable in dark themes)."""
    where = f" (item {d.index})" if is_map and d.index is not None else ""
    level = "error" if d.fatal else "warning"
    colour = _COLOURS[Phase.FAILED] if d.fatal else _COLOURS[Phase.PENDING]
    hint = (
        f"<div class='kjupyter-hint' style='color:var(--jp-ui-font-color1, inherit)'>hint: {html.escape(d.hint)}</div>"
        if d.hint
        else ""
    )
    return (f"<div class='kjupyter-diagnosis kjupyter-{level}'><div style='color:{colour}'>⚠ "
            f"{html.escape(d.sentence)}{where}</div>{hint}</div>")  # fmt: skip
