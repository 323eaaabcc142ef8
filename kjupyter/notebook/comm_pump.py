"""Widget messages while a blocking cell holds the kernel (the run widget's Cancel button).

While a blocking call (``%%kube``, ``f(x)``) holds the kernel, the frontend's
widget messages (the Cancel button's click) wait on the shell channel behind
the running cell. :class:`CommPump` lets the blocking wait handle those comm
messages, and only those: every other request (an ``execute_request`` of the
next cell, say) is held back and handed to the kernel, in order, when the
wait ends, so nothing runs re-entrantly.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

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
