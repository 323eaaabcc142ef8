"""Container logs kept by the fake kubelet, with followers woken per line."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from .util import iso_nano


class ContainerLog:
    def __init__(self) -> None:
        self._lines: list[tuple[float, bytes]] = []
        self._cv = threading.Condition()
        self.closed = False

    def append(self, data: bytes, ts: float | None = None) -> None:
        with self._cv:
            self._lines.append((ts if ts is not None else time.time(), data))
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    def lines(self) -> list[tuple[float, bytes]]:
        with self._cv:
            return list(self._lines)

    def text(self) -> str:
        return b"".join(d for _, d in self.lines()).decode(errors="replace")

    def follow(self, start: int, stop: threading.Event, poll: float = 0.25) -> Iterator[tuple[float, bytes]]:
        """Yield lines from index `start`, waiting for new ones until closed or `stop` is set."""
        i = start
        while True:
            with self._cv:
                while i >= len(self._lines) and not self.closed and not stop.is_set():
                    self._cv.wait(poll)
                if i >= len(self._lines):
                    return
                batch = self._lines[i:]
            i += len(batch)
            yield from batch
            if stop.is_set():
                return


def select_lines(lines: list[tuple[float, bytes]], since: float | None = None, tail: int | None = None,
                 ) -> tuple[list[tuple[float, bytes]], int]:
    """Apply sinceTime/sinceSeconds and tailLines; returns (lines, index after the last one)."""
    end = len(lines)
    chosen = [(t, d) for t, d in lines if since is None or t >= since]
    if tail is not None:
        chosen = chosen[-tail:] if tail > 0 else []
    return chosen, end


def render(ts: float, data: bytes, timestamps: bool) -> bytes:
    return (iso_nano(ts).encode() + b" " + data) if timestamps else data
