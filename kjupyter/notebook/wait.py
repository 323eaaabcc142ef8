"""Pick how a blocking run is shown: live widget in a notebook, plain text elsewhere."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from kjupyter import failure_text as ft
from kjupyter.futures import RunFuture
from kjupyter.run_events import EventSink

ViewFactory = Callable[[RunFuture], EventSink]
POLL_INTERVAL = 0.05  # seconds: how long a blocking wait sleeps on the kernel's shell socket at a time


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where widgets can be displayed), not a terminal IPython."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell: Any = ipython.get_ipython()  # type: ignore[attr-defined]
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def make_view(future: RunFuture) -> EventSink:
    if in_notebook():
        try:
            from kjupyter.notebook.widget import RunWidget  # type: ignore[import-not-found,unused-ignore]
        except ImportError:  # ipywidgets not installed: fall back to text
            pass
        else:
            sink: EventSink = RunWidget.show(future)
            return sink
    from kjupyter.notebook.text_view import ConsoleView

    return ConsoleView(future)


def show_live(future: RunFuture) -> EventSink | None:
    """For a run nobody waits for (``f.submit()``): its live widget in a notebook; nothing elsewhere.

    A plain Python process or a terminal IPython shows nothing (the run goes on; the future has it all).
    """
    if not in_ipython():
        ft.install_excepthook()  # (its future's failure, raised by result() in a script, shows as one rendering)
    if not in_notebook():
        return None
    try:
        from kjupyter.notebook.widget import RunWidget  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # ipywidgets not installed
        return None
    widget: EventSink = RunWidget.show(future, blocking=False)
    future.subscribe(widget)
    return widget


def _block(future: RunFuture) -> None:
    """Wait for the outcome; in a notebook keep handling widget messages meanwhile (the Cancel button)."""
    if not in_notebook():
        return
    from kjupyter.notebook.comm_pump import CommPump

    pump = CommPump.for_current_cell()
    if pump is None:
        return
    try:
        while not future.done():
            pump.poll(POLL_INTERVAL)
    finally:
        pump.close()


def wait(future: RunFuture, *, show: bool = True) -> Any:
    """Block until the run ends, showing it; Ctrl-C (or a kernel interrupt) or the Cancel button cancels it.

    A failure is raised as it is (the remote exception, RunFailed, RunCancelled), and shows as kjupyter's one
    rendering of it (:mod:`kjupyter.failure_text`): in IPython and Jupyter, and, in a script, through the
    hook installed here. An interrupt cancels the run and ends in one sentence.
    """
    if not in_ipython():
        ft.install_excepthook()
    view: EventSink | None = None
    try:  # an interrupt may come at any point, even while the view is being built: it always cancels
        view = make_view(future) if show else None
        if view is not None:
            future.subscribe(view)
        try:
            _block(future)
            result = future.result()
        except Exception:  # not KeyboardInterrupt: that one must cancel first, below
            future.wait_ended(10)  # let a failing map's cancellation finish and the summary print
            raise
        future.wait_ended(10)
        return result
    except KeyboardInterrupt as exc:
        future.cancel()
        future.wait_ended(10)
        raise ft.attach(exc, [ft.sentence(exc, future.run_id) or ""]) from None


def in_ipython() -> bool:
    """True in any IPython (a kernel or a terminal): it shows exceptions through ``_render_traceback_``."""
    ipython = sys.modules.get("IPython")
    return ipython is not None and ipython.get_ipython() is not None  # type: ignore[attr-defined]
