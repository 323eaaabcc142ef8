"""Shared watches: one pod watch and one job watch per session and namespace.

They select kjupyter's objects by the session label
(``kjupyter.io/session in (...)``). Following a run of another session
(``attach``, ``kjupyter logs -f``) adds that session to the set and
re-lists once with the wider selector: the number of open watches stays two
however many runs are followed.

Each watch lists once, then watches from the list's resourceVersion; it
resumes from the last resourceVersion it saw (bookmarks included) after a
dropped stream or an API server restart, with exponential backoff, and lists
again only when the server says the version is too old (410 Gone). Objects
are handed to a callback as ``(event_type, object_dict)``; a re-list replays
every current object as ``SYNC`` and reports objects that vanished meanwhile
as ``DELETED``. Nothing here polls.

A stream that goes silent without closing (a dead proxy or load balancer) is a
fault, not a quiet cluster: every watch asks for bookmarks and a server-side
``timeoutSeconds``, and reads with a client timeout. Once the server has shown
how often it sends bookmarks, a stream quiet for three of those gaps is
dropped and resumed (seconds against this project's fake cluster, about a
minute against a real API server, which bookmarks about once a minute); a
stream never quieter than ``WATCH_SECONDS + 5`` otherwise. 401 and 403 are not
retried in silence: ``on_error`` tells the backend, which tells the runs.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from kjupyter.backends.kubernetes.client import Kube, abort, timed_out
from kjupyter.backends.kubernetes.objects import LABEL_SESSION, MANAGED_BY
from kjupyter.errors import ApiError, BackendError
from kjupyter.names import label_value

Handler = Callable[[str, dict[str, Any]], None]
WATCH_SECONDS = 60  # server-side timeout of one watch request (it is then resumed, not re-listed)
IDLE_MARGIN_S = 5.0  # a stream with nothing, not even a bookmark, for WATCH_SECONDS + this is dead
MIN_IDLE_S = 2.0  # never drop a stream quieter than this, whatever the bookmark pace
BACKOFF_START, BACKOFF_MAX = 0.1, 5.0


class _Expired(Exception):
    pass


class Watch:
    """One watch (pods or jobs) on one label selector, in a daemon thread."""

    def __init__(self, kube: Kube, resource: str, namespace: str, selector: str, handler: Handler,
                 on_error: Callable[[BackendError], None] | None = None) -> None:  # fmt: skip
        self.kube, self.resource, self.namespace = kube, resource, namespace
        self.selector, self.handler, self.on_error = selector, handler, on_error
        self.rv = ""
        self.known: dict[str, str] = {}  # uid -> name of objects seen, to report deletions after a re-list
        self.stopped = threading.Event()
        self.reset = threading.Event()  # the selector changed: list again, then watch
        self.synced = threading.Event()
        self.response: Any = None
        self.bookmark_gap: float | None = None  # the server's pace of bookmarks, once seen twice in a row
        self.silent_drops = 0  # streams dropped because they went silent (for tests and benchmarks)
        self.thread = threading.Thread(target=self._loop, daemon=True, name=f"kjupyter-watch-{resource}")

    def start(self) -> Watch:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        abort(self.response)

    def reselect(self, selector: str) -> None:
        """Follow a new selector: the current stream is closed and the objects listed again."""
        self.selector = selector
        self.synced.clear()
        self.reset.set()
        abort(self.response)

    def _list_fn(self) -> Callable[..., Any]:
        if self.resource == "pods":
            return self.kube.core.list_namespaced_pod  # type: ignore[no-any-return]
        return self.kube.batch.list_namespaced_job  # type: ignore[no-any-return]

    def _loop(self) -> None:
        delay = BACKOFF_START
        while not self.stopped.is_set():
            try:
                if self.reset.is_set():
                    self.reset.clear()
                    self.rv = ""
                if not self.rv:
                    self._relist()
                if self.reset.is_set():
                    continue
                self._watch()
                delay = BACKOFF_START
            except _Expired:
                self.rv = ""
                continue
            except BackendError as exc:
                if isinstance(exc, ApiError) and exc.status == 410:
                    self.rv = ""
                    continue
                if isinstance(exc, ApiError) and exc.status in (401, 403):
                    if self.on_error is not None:
                        self.on_error(exc)
                    self.stopped.wait(BACKOFF_MAX * 6)  # told once per run; try again now and then, slowly
                    continue
            except Exception as exc:  # a dropped or silent stream: resume from the last resourceVersion
                if timed_out(exc):
                    self.silent_drops += 1
            if self.stopped.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_MAX)

    def _relist(self) -> None:
        data = self.kube.call(f"list {self.resource}", self._list_fn(), self.namespace, label_selector=self.selector)
        items = data.get("items") or []
        current = {i["metadata"]["uid"]: i for i in items}
        for uid, name in list(self.known.items()):
            if uid not in current:
                self.known.pop(uid, None)
                self._dispatch("DELETED", {"metadata": {"uid": uid, "name": name, "namespace": self.namespace},
                                           "kind": "Pod" if self.resource == "pods" else "Job"})  # fmt: skip
        for item in items:
            self._dispatch("SYNC", item)
        self.rv = str(data.get("metadata", {}).get("resourceVersion", ""))
        self.synced.set()

    def idle_limit(self) -> float:
        """How long the stream may say nothing (not even a bookmark) before it is taken for dead."""
        limit = WATCH_SECONDS + IDLE_MARGIN_S
        if self.bookmark_gap is not None:
            limit = min(limit, max(MIN_IDLE_S, 3 * self.bookmark_gap))
        return limit

    def _watch(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        response = self.kube.call(
            f"watch {self.resource}", self._list_fn(), self.namespace, label_selector=self.selector, watch=True,
            resource_version=self.rv, allow_watch_bookmarks=True, timeout_seconds=WATCH_SECONDS,
            _request_timeout=(10, self.idle_limit()), stream=True,
        )  # fmt: skip
        self.response = response
        last_bookmark: float | None = None
        try:
            if self.reset.is_set():
                return
            for line in iter_resp_lines(response):
                if self.stopped.is_set() or self.reset.is_set():
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired()
                    raise BackendError(f"watch error: {obj.get('message', obj)}")
                rv = obj.get("metadata", {}).get("resourceVersion")
                if rv:
                    self.rv = str(rv)
                if kind == "BOOKMARK":
                    now = time.monotonic()
                    if last_bookmark is not None:
                        self.bookmark_gap = now - last_bookmark
                    last_bookmark = now
                    continue
                self._dispatch(str(kind), obj)
        finally:
            self.response = None
            with contextlib.suppress(Exception):
                response.release_conn()

    def _dispatch(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata", {})
        if kind == "DELETED":
            self.known.pop(meta.get("uid", ""), None)
        else:
            self.known[meta.get("uid", "")] = meta.get("name", "")
        try:
            self.handler(kind, obj)
        except Exception:  # a broken handler must not stop the watch
            import traceback

            traceback.print_exc()


def session_selector(sessions: set[str]) -> str:
    """``app.kubernetes.io/managed-by=kjupyter,kjupyter.io/session in (a,b)``."""
    values = ",".join(sorted(label_value(s) for s in sessions))
    return f"{MANAGED_BY}=kjupyter,{LABEL_SESSION} in ({values})"


class Watcher:
    """The pod watch and the job watch of one namespace, for the runs of a set of sessions."""

    def __init__(self, kube: Kube, namespace: str, session: str, on_pod: Handler, on_job: Handler,
                 on_error: Callable[[BackendError], None] | None = None) -> None:  # fmt: skip
        self.sessions = {session}
        self.lock = threading.Lock()
        selector = session_selector(self.sessions)
        self.pods = Watch(kube, "pods", namespace, selector, on_pod, on_error)
        self.jobs = Watch(kube, "jobs", namespace, selector, on_job, on_error)

    def add_session(self, session: str) -> bool:
        """Also follow the runs of ``session``; True if that needed a re-list (a new session)."""
        with self.lock:
            if session in self.sessions:
                return False
            self.sessions.add(session)
            selector = session_selector(self.sessions)
        self.jobs.reselect(selector)
        self.pods.reselect(selector)
        return True

    def start(self) -> Watcher:
        self.jobs.start()
        self.pods.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        return self.jobs.synced.wait(timeout) and self.pods.synced.wait(timeout)

    def stop(self) -> None:
        self.pods.stop()
        self.jobs.stop()
