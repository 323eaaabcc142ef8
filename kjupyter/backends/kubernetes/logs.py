"""Pod logs: followed streams that reconnect without losing or repeating a line.

Every line is read with its timestamp (``timestamps=True``). After a dropped
stream the follower asks again from a little before the last timestamp
(``sinceSeconds``: the generated client's ``read_namespaced_pod_log`` has no
``sinceTime`` parameter) and drops every line at or before the last one it
delivered, counting lines that share a timestamp.

A followed stream that ends cleanly because its container terminated by itself
(the pod watch reports it within ``EOF_WAIT_S`` of the end of the stream) has
delivered every line: that is the pod's only log request. Otherwise (the last
stream broke, the stream ended while the container still ran, the pod was
evicted or deleted, or it was never followed because every follow slot was
taken) one final read collects what is left, before the pod can be
garbage-collected.

Lines the runner writes for an inline outcome are taken out of the user's log and
reassembled here, when they are authenticated by the run's key (see :mod:`kjupyter.inline_frames`).
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from kjupyter.backends.kubernetes.client import Kube
from kjupyter.errors import ApiError, BackendError
from kjupyter.inline_frames import LineFilter as LineFilter
from kjupyter.inline_frames import Outcomes as Outcomes

SINCE_MARGIN_S = 60  # extra seconds asked for after a reconnect (clock skew); duplicates are dropped
BACKOFF_START, BACKOFF_MAX = 0.1, 3.0
EOF_WAIT_S = 5.0  # after a clean end of a followed stream, how long the pod watch may take to report the end
Key = tuple[str, int]


def split_timestamp(line: str) -> tuple[Key | None, str]:
    """``"2026-11-23T12:00:00.123Z text"`` -> ``(("2026-11-23T12:00:00", 123000000), "text")``."""
    stamp, sep, text = line.partition(" ")
    if not sep or "T" not in stamp or not stamp[:4].isdigit():
        return None, line
    base, _, frac = stamp.rstrip("Z").partition(".")
    frac = "".join(ch for ch in frac if ch.isdigit())
    return (base[:19], int((frac + "000000000")[:9])), text


def _epoch(key: Key) -> float:
    return dt.datetime.fromisoformat(key[0]).replace(tzinfo=dt.UTC).timestamp() + key[1] / 1e9


class PodLog:
    """Follows one pod's log until its container ended; a final read unless the stream saw it end."""

    def __init__(self, kube: Kube, namespace: str, pod: str, container: str,
                 emit: Callable[[str], None], outcomes: Outcomes) -> None:  # fmt: skip
        self.kube = kube
        self.namespace = namespace
        self.pod = pod
        self.container = container
        self.filter = LineFilter(emit, outcomes)
        self.last: Key | None = None
        self.same = 0  # lines delivered with timestamp == last
        self.terminated = threading.Event()  # set by the backend from the pod watch
        self.trust_stream = False  # ... which also says the container ended by itself (see ``end``)
        self.gone = threading.Event()  # the pod was deleted
        self.finished = threading.Event()
        self.complete = False  # a followed stream ended with the container: nothing left to read
        self.response: Any = None

    def end(self, trust_stream: bool = False) -> None:
        """The container terminated; ``trust_stream``: by itself (no eviction or deletion), so the
        clean end of a followed stream delivered all of its log."""
        self.trust_stream = trust_stream
        self.terminated.set()

    def run(self, slots: threading.Semaphore) -> None:
        """Follow while a slot is free (else wait for the end and read once); always sets ``finished``."""
        try:
            got = False
            while not (got := slots.acquire(timeout=0.2)) and not self.terminated.is_set() and not self.gone.is_set():
                pass
            try:
                if got and not self.terminated.is_set():
                    self._follow()
                if not self.complete:
                    self._final()
            finally:
                if got:
                    slots.release()
        finally:
            self.filter.close()
            self.finished.set()

    def stop(self) -> None:
        self.gone.set()
        response = self.response
        if response is not None:
            try:
                response.close()
            except Exception:
                pass

    def _follow(self) -> None:
        delay = BACKOFF_START
        while not self.gone.is_set():
            try:
                for _ in self._read(follow=True):
                    delay = BACKOFF_START
                if self._stream_saw_the_end():
                    return
            except ApiError as exc:
                if exc.status == 404:
                    return
                # 400: the container is not running yet (ContainerCreating, image pull)
            except BackendError:
                pass
            except Exception:
                pass
            if self.terminated.wait(delay) or self.gone.is_set():
                return
            delay = min(delay * 2, BACKOFF_MAX)

    def _stream_saw_the_end(self) -> bool:
        """After a clean end of the followed stream: True if the container ended meanwhile.

        A followed log ends when its container does; the pod watch says so moments later. If the
        container ended by itself, the stream delivered everything (``complete``: no final read).
        If it still runs after ``EOF_WAIT_S``, the stream ended early: follow again.
        """
        deadline = time.monotonic() + EOF_WAIT_S
        while not self.terminated.wait(0.05):
            if self.gone.is_set() or time.monotonic() > deadline:
                return False
        self.complete = self.trust_stream
        return True

    def _final(self) -> None:
        if self.gone.is_set() and not self.terminated.is_set():
            return
        for attempt in range(3):
            try:
                for _ in self._read(follow=False):
                    pass
                return
            except ApiError as exc:
                if exc.status in (400, 404):
                    return
            except Exception:
                pass
            time.sleep(0.2 * (attempt + 1))

    def _read(self, follow: bool) -> Iterator[None]:
        from kubernetes.watch.watch import iter_resp_lines

        kwargs: dict[str, Any] = {"container": self.container, "follow": follow, "timestamps": True}
        if self.last is not None:
            kwargs["since_seconds"] = max(1, math.ceil(time.time() - _epoch(self.last)) + SINCE_MARGIN_S)
        if follow:
            kwargs["_request_timeout"] = (10, None)
        response = self.kube.call(f"read the log of pod {self.pod}", self.kube.core.read_namespaced_pod_log,
                                  self.pod, self.namespace, stream=True, **kwargs)  # fmt: skip
        self.response = response
        skipped = 0
        try:
            for raw in iter_resp_lines(response):
                key, text = split_timestamp(raw)
                if key is not None and self.last is not None:
                    if key < self.last:
                        continue
                    if key == self.last and skipped < self.same:
                        skipped += 1
                        continue
                if key is not None:
                    if key == self.last:
                        self.same += 1
                    else:
                        self.last, self.same = key, 1
                    skipped = self.same  # lines at this key are delivered from here on
                self.filter.feed(text)
                yield None
        finally:
            self.response = None
            try:
                response.release_conn()
            except Exception:
                pass


def read_all(kube: Kube, namespace: str, pod: str, container: str) -> list[str]:
    """Every user line of a pod's log (inline frames removed), for ``kjupyter logs``."""
    out: list[str] = []
    log = PodLog(kube, namespace, pod, container, out.append, Outcomes())
    log.terminated.set()
    log._final()
    log.filter.close()
    return out
