"""The live run view in a notebook (ipywidgets only: JupyterLab, Notebook 7, VS Code).

A header (status, cluster, pod/node, elapsed time, Cancel), a diagnosis line
when something is wrong, for a map a progress bar with counts and a viewer for
one item's log, and the live log. Events arrive on backend threads; log lines
are batched and appended a few times a second by one flusher thread with
``Output.append_stdout`` (never ``with out:`` from a thread). The widget keeps
the last lines; :meth:`RunWidget.log` has them all. When the run ends, the
plain-text :func:`kjupyter.notebook.text_view.summary` is printed too, so a notebook
reopened without widget state still says what happened.

While a blocking call (``%%kube``, ``f(x)``) holds the kernel, the frontend's
widget messages (the Cancel button's click) wait on the shell channel behind
the running cell. :class:`CommPump` lets the blocking wait handle those comm
messages, and only those: every other request (an ``execute_request`` of the
next cell, say) is held back and handed to the kernel, in order, when the
wait ends, so nothing runs re-entrantly.
"""

from __future__ import annotations

import asyncio
import collections
import html
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w
from IPython.display import display

from kjupyter.futures import RunFuture
from kjupyter.notebook.text_view import summary
from kjupyter.run_events import Diagnosis, Event, LogLine, Phase, PhaseChanged, Progress, RunFinished
from kjupyter.spec import format_duration

FLUSH_INTERVAL = 0.2  # seconds between log batches
KEEP_LINES = 500  # lines shown in the widget at once
HISTORY_LINES = (
    20_000  # lines kept for RunWidget.log() and the item viewer (bounded: a long run must not grow the kernel)
)

_COLOURS = {
    Phase.PENDING: "#b58900",
    Phase.RUNNING: "#268bd2",
    Phase.SUCCEEDED: "#2e7d32",
    Phase.FAILED: "#c62828",
    Phase.CANCELLED: "#6c757d",
}


class RunWidget:
    """One run's live view. Call it with events (it is an EventSink); ``box`` is the displayed widget."""

    def __init__(self, future: RunFuture, *, keep_lines: int = KEEP_LINES) -> None:
        self.future = future
        self.is_map = future.kind == "map"
        self.keep_lines = keep_lines
        self.phase = Phase.PENDING
        self.where = ""
        # The log as far back as HISTORY_LINES (map lines prefixed with [index]); `kjupyter logs` has all of it.
        self.lines: collections.deque[str] = collections.deque(maxlen=HISTORY_LINES)
        self.by_index: dict[int, collections.deque[str]] = {}
        self._pending: list[str] = []
        self._shown = 0  # lines currently in the log Output
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._finished = False

        self.header = w.HTML()
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop",
                                      layout=w.Layout(width="auto"))  # fmt: skip
        self.cancel_button.on_click(lambda _: after_comm(self.future.cancel))
        self.diagnosis = w.HTML(layout=w.Layout(display="none"))
        self.out = w.Output(layout=w.Layout(max_height="24em", overflow="auto"))
        children: list[Any] = [w.HBox([self.header, self.cancel_button]), self.diagnosis]
        if self.is_map:
            self.progress = w.IntProgress(value=0, min=0, max=max(future.total, 1), bar_style="info",
                                          layout=w.Layout(width="40%"))  # fmt: skip
            self.counts = w.HTML(self._counts_html(Progress(future.run_id, future.total, pending=future.total)))
            self.index = w.BoundedIntText(value=0, min=0, max=max(future.total - 1, 0), description="item",
                                          layout=w.Layout(width="10em"))  # fmt: skip
            self.index_button = w.Button(description="Show its log", layout=w.Layout(width="auto"))
            self.index_button.on_click(lambda _: self.show_index(int(self.index.value)))
            self.index_out = w.Output(layout=w.Layout(max_height="16em", overflow="auto"))
            children += [w.HBox([self.progress, self.counts]), w.HBox([self.index, self.index_button]), self.index_out]
        children.append(self.out)
        self.box = w.VBox(children)
        self._render_header()
        self._thread = threading.Thread(target=self._flusher, name=f"kjupyter-widget-{future.run_id}", daemon=True)

    @classmethod
    def show(cls, future: RunFuture) -> RunWidget:
        """Display a widget for ``future`` and return it (subscribe it to the future's events)."""
        widget = cls(future)
        display(widget.box)  # type: ignore[no-untyped-call,unused-ignore]
        widget._thread.start()
        return widget

    # --- events (backend threads) -----------------------------------------------------------

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, LogLine):
                text = f"[{event.index}] {event.text}" if self.is_map else event.text
                self.lines.append(text)
                self.by_index.setdefault(event.index, collections.deque(maxlen=HISTORY_LINES)).append(event.text)
                self._pending.append(text)
            elif isinstance(event, PhaseChanged):
                self._phase(event)
            elif isinstance(event, Diagnosis):
                where = f" (item {event.index})" if self.is_map and event.index is not None else ""
                level = "error" if event.fatal else "warning"
                self.diagnosis.value = (
                    f"<div class='kjupyter-diagnosis kjupyter-{level}' style='color:{_COLOURS[Phase.FAILED] if event.fatal else _COLOURS[Phase.PENDING]}'>"
                    f"⚠ {html.escape(str(event))}{where}</div>"
                )  # fmt: skip
                self.diagnosis.layout.display = None
            elif isinstance(event, Progress) and self.is_map:
                self.progress.value = event.succeeded + event.failed
                self.progress.bar_style = "danger" if event.failed else "info"
                self.counts.value = self._counts_html(event)
            elif isinstance(event, RunFinished):
                self._finish(event)

    def _phase(self, event: PhaseChanged) -> None:
        if event.pod or event.node:
            if event.index is None or not self.is_map:
                self.where = " / ".join(x for x in (event.pod, event.node) if x)
        if event.index is None:
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
        if self.is_map:
            self.progress.bar_style = {"Succeeded": "success", "Failed": "danger"}.get(event.phase.value, "warning")
        self._render_header(ended=event.time)
        text = summary(self.future)
        if event.message and event.phase is Phase.FAILED and event.message not in text:
            text += f"\n  {event.message}"
        print(text, flush=True)

    # --- rendering --------------------------------------------------------------------------

    def _render_header(self, ended: float | None = None) -> None:
        f = self.future
        elapsed = (ended or f.finished_at or time.time()) - f.created
        colour = _COLOURS[self.phase]
        parts = [
            f"<b style='color:{colour}' class='kjupyter-status'>{self.phase.value}</b>",
            f"<code>{html.escape(f.run_id)}</code>",
            f"on <b>{html.escape(f.cluster)}</b>",
        ]
        if self.where:
            parts.append(html.escape(self.where))
        parts.append(f"<span class='kjupyter-elapsed'>{format_duration(round(elapsed, 1))}</span>")
        self.header.value = " · ".join(parts)

    @staticmethod
    def _counts_html(p: Progress) -> str:
        return (
            f"<span class='kjupyter-counts'>{p.succeeded + p.failed}/{p.total}: succeeded {p.succeeded}, "
            f"failed {p.failed}, running {p.running}, pending {p.pending}</span>"
        )

    def _flusher(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            with self._lock:
                self._flush()
                self._render_header()

    def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        if self._shown + len(batch) > 2 * self.keep_lines:  # keep the widget small: reset to the last lines
            tail = list(self.lines)[-self.keep_lines :]
            self.out.outputs = ({"output_type": "stream", "name": "stdout", "text": "\n".join(tail) + "\n"},)
            self._shown = len(tail)
            return
        self.out.append_stdout("\n".join(batch) + "\n")
        self._shown += len(batch)

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


# --- comm messages while a cell blocks -----------------------------------------------------------

_COMM_TYPES = frozenset({"comm_open", "comm_msg", "comm_close"})
_log = logging.getLogger(__name__)
_REDISPATCHED: set[asyncio.Task[Any]] = set()
_HANDLING = threading.local()  # .pump: the CommPump whose comm message this thread is handling


class CommPump:
    """Handle a kernel's pending comm messages from inside a running cell (ipykernel 7 and 6).

    ipykernel 7 forwards each shell message to the executing thread over an
    inproc socket, ipykernel 6 reads it from the shell ROUTER socket on the
    main thread; either way the thread running the cell owns that socket, so
    it may read it while its event loop is blocked by the cell. A comm
    message is handled at once (as ipykernel handles comms during an async
    cell); anything else is kept and re-dispatched through the kernel's own
    path, in arrival order, by :meth:`close`.
    """

    def __init__(self, kernel: Any, socket: Any, redispatch: Callable[[list[Any]], None]) -> None:
        self.kernel = kernel
        self.socket = socket
        self._redispatch = redispatch
        self._held: list[list[Any]] = []
        self.after: list[Callable[[], Any]] = []

    @classmethod
    def for_current_cell(cls) -> CommPump | None:
        """A pump for the kernel running this thread's cell, or None (no kernel, other thread, unknown kernel)."""
        from IPython.core.getipython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)  # type: ignore[no-untyped-call,unused-ignore]
        if kernel is None or getattr(kernel, "session", None) is None:
            return None
        try:
            channel_thread = getattr(kernel, "shell_channel_thread", None)
            if channel_thread is not None:  # ipykernel 7: main shell or a subshell, each with its own socket
                manager = channel_thread.manager
                subshell = manager.subshell_id_from_thread_id(threading.get_ident())  # RuntimeError: not a shell
                pair = manager.get_shell_channel_to_subshell_pair(subshell)
                loop = asyncio.get_running_loop()  # the shell thread's loop, running the cell

                def redispatch7(frames: list[Any]) -> None:
                    task = loop.create_task(kernel.shell_main(subshell, frames))
                    _REDISPATCHED.add(task)  # a reference until it ran (the loop keeps only weak ones)
                    task.add_done_callback(_REDISPATCHED.discard)

                return cls(kernel, pair.to_socket, redispatch7)
            if (
                threading.current_thread() is threading.main_thread()
                and hasattr(kernel, "schedule_dispatch")
                and getattr(kernel, "shell_stream", None) is not None
            ):  # ipykernel 6: one shell ROUTER socket, read on the main thread into msg_queue

                def redispatch6(frames: list[Any]) -> None:
                    kernel.schedule_dispatch(kernel.dispatch_shell, frames)

                return cls(kernel, kernel.shell_stream.socket, redispatch6)
        except (RuntimeError, AttributeError, KeyError):
            return None
        return None

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for shell messages; handle the comm ones, hold the rest."""
        if self.socket.poll(int(timeout * 1000)):
            self._drain()

    def _drain(self) -> None:
        import zmq

        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if not self._handle_comm(frames):
                self._held.append(frames)

    def _handle_comm(self, frames: list[Any]) -> bool:
        """Handle ``frames`` if it is a comm message (True), else leave it alone (False)."""
        kernel, session = self.kernel, self.kernel.session
        try:  # peek at the header only: deserialize() records the signature, and a second one is a replay
            idents, rest = session.feed_identities(frames, copy=False)
            msg_type = session.unpack(getattr(rest[1], "bytes", rest[1]))["msg_type"]
        except Exception:  # a control frame (ipykernel's "stop aborting") or garbage: the kernel decides
            return False
        handler = kernel.shell_handlers.get(msg_type)
        if msg_type not in _COMM_TYPES or handler is None:
            return False
        try:
            msg = session.deserialize(rest, content=True, copy=False)  # checks the signature
        except Exception:
            _log.exception("kjupyter: an invalid comm message arrived while a run was blocking the kernel")
            return True
        parent, ident = kernel.get_parent("shell"), _shell_ident(kernel)
        kernel.set_parent(idents, msg, channel="shell")  # as ipykernel does: widget echoes answer this message
        _HANDLING.pump = self
        try:
            handler(None, idents, msg)
        except Exception:
            _log.exception("kjupyter: a widget message failed while a run was blocking the kernel")
        finally:
            _HANDLING.pump = None
            kernel.set_parent(ident, parent, channel="shell")
        actions, self.after = self.after, []
        for action in actions:  # back in the blocked cell: what they print goes to its output
            try:
                action()
            except Exception:
                _log.exception("kjupyter: a widget action failed while a run was blocking the kernel")
        return True

    def close(self) -> None:
        """Hand every held message back to the kernel, oldest first (they run after the cell)."""
        self._drain()
        held, self._held = self._held, []
        for frames in held:
            self._redispatch(frames)


def _shell_ident(kernel: Any) -> Any:
    """The routing identity of the request the kernel is handling (to restore it after a comm message)."""
    if hasattr(kernel, "_shell_parent_ident"):  # ipykernel 7
        return kernel._get_shell_context_var(kernel._shell_parent_ident)
    return getattr(kernel, "_parent_ident", {}).get("shell", b"")  # ipykernel 6


def after_comm(action: Callable[[], Any]) -> None:
    """Run ``action`` now, or, inside a comm message handled by a blocked cell's :class:`CommPump`, right
    after it, in the cell's context (so the run summary a cancellation prints lands in the cell's output)."""
    pump: CommPump | None = getattr(_HANDLING, "pump", None)
    if pump is not None:
        pump.after.append(action)
    else:
        action()
