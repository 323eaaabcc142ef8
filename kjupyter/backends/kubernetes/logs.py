"""Pod logs: followed streams that reconnect without losing or repeating a line.

Every line is read with its timestamp (``timestamps=True``). After a dropped,
silent or early-ended stream the follower asks again from a little before the
last line it delivered (``sinceSeconds``, measured on this process's monotonic
clock from when that line arrived, never by comparing its clock with the
cluster's) and drops every line at or before the last one it delivered,
comparing the cluster's own timestamps and counting lines that share one.

A followed stream is not trusted to have delivered everything when it ends:
log rotation ends streams early while the container runs on
(kubernetes/kubernetes#115701). It is complete only when it delivered the
runner's signed last line (``eof``, see :mod:`kjupyter.inline_frames`), which
no user output can forge; otherwise, after the container ended, one final read
from the last delivered line confirms the tail. A stream quiet for
``FOLLOW_IDLE_S`` is re-opened (a quiet task costs one request a minute), and
one still open ``EOF_WAIT_S`` after its container ended is cut.

Logs that are refused (401/403 on pods/log) are said once per run, in one
sentence, and not asked for again by this backend for ``FORBIDDEN_BACKOFF_S``.

Lines the runner writes for an inline outcome are taken out of the user's log and
reassembled here, when they are authenticated by the run's key (see :mod:`kjupyter.inline_frames`).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from kjupyter.backends.kubernetes.client import Kube, abort
from kjupyter.errors import ApiError
from kjupyter.inline_frames import LineFilter as LineFilter
from kjupyter.inline_frames import Outcomes as Outcomes

SINCE_MARGIN_S = 60  # extra seconds asked for after a reconnect (line latency); duplicates are dropped
FOLLOW_IDLE_S = 60.0  # a followed stream with no byte for this long is re-opened from the last line
FORBIDDEN_BACKOFF_S = 60.0
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


class LogAccess:
    """Whether this backend may read pod logs: after a 401/403, no log request for a while."""

    def __init__(self) -> None:
        self.refused_at: float | None = None
        self.lock = threading.Lock()

    def allowed(self) -> bool:
        with self.lock:
            return self.refused_at is None or time.monotonic() - self.refused_at > FORBIDDEN_BACKOFF_S

    def refuse(self) -> None:
        with self.lock:
            self.refused_at = time.monotonic()

    @property
    def refused(self) -> bool:
        return not self.allowed()


class PodLog:
    """Follows one pod's log until its container ended, then confirms the tail with a final read."""

    def __init__(self, kube: Kube, namespace: str, pod: str, container: str,
                 emit: Callable[[str], None], outcomes: Outcomes, access: LogAccess | None = None,
                 on_forbidden: Callable[[ApiError], None] | None = None,
                 on_item: Callable[[int, int, str], None] | None = None) -> None:  # fmt: skip
        self.kube = kube
        self.namespace = namespace
        self.pod = pod
        self.container = container
        self.filter = LineFilter(emit, outcomes, on_item)
        self.access = access or LogAccess()
        self.on_forbidden = on_forbidden
        self.last: Key | None = None
        self.last_seen: float | None = None  # monotonic time the last delivered line arrived
        self.same = 0  # lines delivered with timestamp == last
        self.terminated = threading.Event()  # set by the backend from the pod watch
        self.trust_stream = False  # ... which also says the container ended by itself (see ``end``)
        self.gone = threading.Event()  # the pod was deleted
        self.finished = threading.Event()
        self.complete = False  # nothing left to read
        self.requests = 0
        self.response: Any = None

    def end(self, trust_stream: bool = False) -> None:
        """The container terminated (``trust_stream``: by itself, no eviction or deletion).

        A followed stream still open ``EOF_WAIT_S`` later is silent: it is cut, and the final read
        collects the rest.
        """
        self.trust_stream = trust_stream
        self.terminated.set()
        cut = threading.Timer(EOF_WAIT_S, self._cut)
        cut.daemon = True
        cut.start()

    def _cut(self) -> None:
        if not self.finished.is_set():
            abort(self.response)

    def run(self, slots: threading.Semaphore) -> None:
        """Follow while a slot is free (else wait for the end), then read once more; always sets ``finished``."""
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
        abort(self.response)

    def _refused(self, exc: ApiError) -> bool:
        """A 401/403: tell the run once, stop asking. True if it was one."""
        if exc.status not in (401, 403):
            return False
        self.access.refuse()
        if self.on_forbidden is not None:
            self.on_forbidden(exc)
        return True

    def _follow(self) -> None:
        delay = BACKOFF_START
        while not self.gone.is_set() and not self.terminated.is_set():
            if not self.access.allowed():
                return
            try:
                for _ in self._read(follow=True):
                    delay = BACKOFF_START
            except ApiError as exc:
                if exc.status == 404 or self._refused(exc):
                    return
                # 400: the container is not running yet (ContainerCreating, image pull)
            except Exception:
                pass
            if self.filter.eof:  # the runner's signed last line came through: the log is complete
                self.complete = True
                return
            # The stream ended before the runner's last line: the container ended without it (the final read
            # confirms the tail), or the stream ended early (log rotation) or broke: follow again from the last line.
            if self.terminated.wait(delay) or self.gone.is_set():
                return
            delay = min(delay * 2, BACKOFF_MAX)

    def _final(self) -> None:
        if self.gone.is_set() and not self.terminated.is_set():
            return
        if not self.access.allowed():
            return
        for attempt in range(3):
            try:
                for _ in self._read(follow=False):
                    pass
                self.complete = True
                return
            except ApiError as exc:
                if exc.status in (400, 404) or self._refused(exc):
                    return
            except Exception:
                pass
            time.sleep(0.2 * (attempt + 1))

    def _read(self, follow: bool) -> Iterator[None]:
        from kubernetes.watch.watch import iter_resp_lines

        kwargs: dict[str, Any] = {"container": self.container, "follow": follow, "timestamps": True}
        if self.last_seen is not None:
            kwargs["since_seconds"] = max(1, math.ceil(time.monotonic() - self.last_seen) + SINCE_MARGIN_S)
        kwargs["_request_timeout"] = (10, FOLLOW_IDLE_S if follow else 60)
        self.requests += 1
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
                    self.last_seen = time.monotonic()
                self.filter.feed(text)
                yield None
        finally:
            self.response = None
            with contextlib.suppress(Exception):
                response.release_conn()


def pod_lines(kube: Kube, namespace: str, pods: list[dict[str, Any]], index: int | None, *,
              workers: bool = False, key: bytes | None = None, gated: bool = False) -> Iterator[str]:  # fmt: skip
    """The log lines of a run's task ``index`` (None: all, prefixed ``[i] ``), from its pods' logs.

    A worker pod of a map runs many items: its lines are told apart by its ``item`` frames. A warm
    worker runs many runs: with the run's ``key``, only its lines (up to its end frame; ``gated``:
    from its first frame) are kept.
    """
    from kjupyter.backends.kubernetes.objects import CONTAINER
    from kjupyter.backends.kubernetes.state import PodView

    pods = sorted(pods, key=lambda p: (PodView(p).index, p["metadata"].get("creationTimestamp", "")))
    multi = workers or len({PodView(p).index for p in pods}) > 1
    for pod in pods:
        worker = PodView(pod).index
        if not workers and index is not None and worker != index:
            continue
        tagged: list[tuple[int, str]] = []
        item = [worker]

        def keep(text: str, item: list[int] = item, tagged: list[tuple[int, str]] = tagged) -> None:
            tagged.append((item[0], text))

        def on_item(i: int, _attempt: int, _state: str, item: list[int] = item) -> None:
            item[0] = i

        log = PodLog(kube, namespace, pod["metadata"]["name"], CONTAINER, keep, Outcomes(key), on_item=on_item)
        log.filter.gated, log.filter.until_end = gated, key is not None
        log.terminated.set()
        log._final()
        log.filter.close()
        for i, text in tagged:
            if index is None or i == index:
                yield (f"[{i}] " if multi and index is None else "") + text
