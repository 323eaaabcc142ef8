"""Where a task's payload comes from and its outcome goes: the run store, or inline over stdout.

:class:`StoreChannel` reads and writes the run's folder in the store.
:class:`InlineChannel` (no store) takes the payload from a file and writes the
outcome as signed frames on stdout (:mod:`kjupyter.inline_frames`), which the
client reads from the pod's log. Channels move bytes; the runner verifies and signs them.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable
from typing import IO, Any, Protocol

from kjupyter import inline_frames
from kjupyter import payload as pl
from kjupyter import store as st


class Channel(Protocol):
    """Where the runner reads its inputs and writes its outcome; ``where`` names it in messages."""

    where: str

    def open_payload(self) -> contextlib.AbstractContextManager[IO[bytes]]: ...
    def read_item(self, index: int) -> bytes: ...
    def write_outcome(self, index: int, write: Callable[[IO[bytes]], None]) -> None: ...


class StoreChannel:
    """Inputs and outcomes in the run store (any fsspec URL)."""

    PAYLOAD_CACHE_LIMIT = 16 * 2**20  # a map's function is read once per worker when it is this small

    def __init__(self, run_url: str, options: dict[str, Any]) -> None:
        self.run = st.open_run_dir(run_url, options)
        self.where = self.run.url
        self._payload: bytes | None = None  # kept for the next task of the same worker (serve mode)
        self._count: int | None = None

    def open_payload(self) -> contextlib.AbstractContextManager[IO[bytes]]:
        if self._payload is not None:
            return contextlib.nullcontext(io.BytesIO(self._payload))
        if self.run.exists(st.ITEMS):  # a map: every task of this worker runs the same function
            data = self.run.read_bytes(st.PAYLOAD)
            if len(data) <= self.PAYLOAD_CACHE_LIMIT:
                self._payload = data
            return contextlib.nullcontext(io.BytesIO(data))
        return self.run.open_read(st.PAYLOAD)  # a call: streamed, however large its arguments

    def read_item(self, index: int) -> bytes:
        if self._count is None:
            self._count = pl.item_count(self.run.read_bytes(st.ITEMS, 0, len(pl.ITEMS_MAGIC) + 8))
        count = self._count
        if not 0 <= index < count:
            raise IndexError(f"task index {index} is out of range: the map has {count} items")
        start, end = pl.item_bounds(self.run.read_bytes(st.ITEMS, *pl.item_range_request(index)))
        return self.run.read_bytes(st.ITEMS, start, end)

    def write_outcome(self, index: int, write: Callable[[IO[bytes]], None]) -> None:
        with self.run.open_write(st.result_name(index)) as f:
            write(f)


class InlineChannel:
    """Inputs from a mounted folder (the run's Secret); the outcome framed on stdout.

    The Kubernetes backend reads the frames from the pod's log, checks them with the run's
    key and hides them from the user's log (see :mod:`kjupyter.inline_frames`).
    """

    def __init__(self, folder: str, key: bytes) -> None:
        self.folder = folder
        self.where = folder
        self.key = key

    def open_payload(self) -> contextlib.AbstractContextManager[IO[bytes]]:
        return open(os.path.join(self.folder, st.PAYLOAD), "rb")

    def read_item(self, index: int) -> bytes:
        with open(os.path.join(self.folder, st.ITEMS), "rb") as f:
            blob = f.read()
        count = pl.item_count(blob[: len(pl.ITEMS_MAGIC) + 8])
        if not 0 <= index < count:
            raise IndexError(f"task index {index} is out of range: the map has {count} items")
        start, _ = pl.item_range_request(index)
        begin, end = pl.item_bounds(blob[start : start + 16])
        return blob[begin:end]

    def write_outcome(self, index: int, write: Callable[[IO[bytes]], None]) -> None:
        buf = io.BytesIO()
        write(buf)
        lines = inline_frames.frame_lines(index, buf.getvalue(), self.key)
        sys.stdout.flush()
        out = sys.__stdout__ or sys.stdout
        out.write("\n" + "\n".join(lines) + "\n")
        out.flush()
