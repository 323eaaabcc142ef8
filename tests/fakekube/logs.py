"""Container logs kept by the fake kubelet, with followers woken per line.

Each line carries its own timestamp in integer nanoseconds since the epoch (time.time_ns() when the line is read,
never decreasing within one container log; two lines may share one, as with containerd), printed like the
kubelet's timestamps=true output: RFC 3339 with exactly nine fraction digits (RFC3339NanoFixed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from .util import iso_nano


class ContainerLog:
    def __init__(self) -> None:
        self._lines: list[tuple[int, bytes]] = []
        self._cv = threading.Condition()
        self._last_ns = 0
        self.closed = False

    def append(self, data: bytes, ts_ns: int | None = None) -> None:
        with self._cv:
            ts = ts_ns if ts_ns is not None else max(time.time_ns(), self._last_ns)
            self._last_ns = max(self._last_ns, ts)
            self._lines.append((ts, data))
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    def lines(self) -> list[tuple[int, bytes]]:
        with self._cv:
            return list(self._lines)

    def text(self) -> str:
        return b"".join(d for _, d in self.lines()).decode(errors="replace")

    def follow(self, start: int, stop: threading.Event, poll: float = 0.25) -> Iterator[tuple[int, bytes]]:
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


def select_lines(lines: list[tuple[int, bytes]], since: int | None = None, tail: int | None = None,
                 ) -> tuple[list[tuple[int, bytes]], int]:
    """Apply since (ns; lines with timestamp >= since are kept, as the kubelet's logWriter skips only lines
    before it) and tailLines; returns (lines, index after the last one)."""
    end = len(lines)
    chosen = [(t, d) for t, d in lines if since is None or t >= since]
    if tail is not None:
        chosen = chosen[-tail:] if tail > 0 else []
    return chosen, end


def render(ts_ns: int, data: bytes, timestamps: bool) -> bytes:
    return (iso_nano(ts_ns).encode() + b" " + data) if timestamps else data
