"""Long-running responses: watches (one JSON event per line, chunked) and pod logs."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from . import errors
from .logs import ContainerLog, render, select_lines
from .resources import PODS, Resource
from .selection import FieldRequirement, Requirement, fields_match, labels_match
from .store import Change, TooOld
from .util import Obj, dumps, get_path, parse_time

if TYPE_CHECKING:
    from .server import Handler


def _event_line(kind: str, obj: Obj) -> bytes:
    return dumps({"type": kind, "object": obj}) + b"\n"


def _expired_line(message: str) -> bytes:
    return _event_line("ERROR", errors.expired(message).status())


def serve_watch(h: Handler, res: Resource, ns: str | None, labels: list[Requirement],
                fields: list[FieldRequirement], q: dict[str, str]) -> None:
    cluster = h.cluster
    raw_rv = q.get("resourceVersion") or ""
    try:
        since = None if raw_rv in ("", "0") else int(raw_rv)
    except ValueError:
        raise errors.bad_request(f'invalid resource version: strconv.ParseUint: parsing "{raw_rv}": invalid syntax') \
            from None
    timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
    bookmarks = q.get("allowWatchBookmarks", "").lower() in ("1", "true")
    if ns is not None:
        cluster.api.list(res, ns)   # 404 for an unknown namespace, before the stream starts
    expire = cluster.faults.take("expire_watch", h.info)
    watcher = None
    try:
        if expire is None:
            watcher, initial = cluster.store.watch(res.key, ns, since)
    except TooOld as e:
        expire_msg: str | None = str(e)
    else:
        expire_msg = None if expire is None else (
            f"too old resource version: {since or 0} ({cluster.store.rv})")
    h.start_chunked("application/json")
    if expire_msg is not None:
        h.chunk(_expired_line(expire_msg))
        h.end_chunked()
        return
    assert watcher is not None
    drop = cluster.faults.take("drop_watch", h.info)
    silence = cluster.faults.take("silence_watch", h.info)
    stopping = h.server.stopping
    deadline = time.monotonic() + timeout if timeout is not None else None
    interval = cluster.options.bookmark_interval
    next_bookmark = time.monotonic() + interval
    sent = 0

    def match(o: Obj | None) -> bool:
        return o is not None and labels_match(labels, o) and fields_match(fields, o)

    def translate(c: Change) -> tuple[str, Obj] | None:
        new_ok, old_ok = match(c.obj), match(c.old)
        if c.type == "ADDED":
            return ("ADDED", c.obj) if new_ok else None
        if c.type == "DELETED":
            return ("DELETED", c.obj) if new_ok or old_ok else None
        if new_ok and old_ok:
            return "MODIFIED", c.obj
        if new_ok:
            return "ADDED", c.obj
        return ("DELETED", c.obj) if old_ok else None

    try:
        if drop is not None and drop.after_events == 0:
            _drop(h, drop.clean)
            return
        if silence is not None and silence.after_events == 0:
            watcher.close()
            h.hold()
            return
        pending: list[Change] = list(initial)
        while True:
            if stopping.is_set() or cluster.stopped:
                h.abort()
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                h.end_chunked()
                return
            change = pending.pop(0) if pending else None
            if change is None:
                wait = min(0.25, next_bookmark - now if bookmarks else 0.25)
                if deadline is not None:
                    wait = min(wait, deadline - now)
                change = watcher.get(max(0.0, wait))
                if change is None:
                    if watcher.closed:
                        h.abort()
                        return
                    if bookmarks and time.monotonic() >= next_bookmark:
                        next_bookmark = time.monotonic() + interval
                        h.chunk(_event_line("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                                         "metadata": {"resourceVersion": str(cluster.store.rv)}}))
                    continue
            event = translate(change)
            if event is None:
                continue
            h.chunk(_event_line(*event))
            sent += 1
            if drop is not None and sent >= drop.after_events:
                _drop(h, drop.clean)
                return
            if silence is not None and sent >= silence.after_events:
                watcher.close()   # nothing more is sent: no events, no bookmarks, no timeout
                h.hold()
                return
    finally:
        watcher.close()


def _drop(h: Handler, clean: bool) -> None:
    if clean:
        h.end_chunked()
    else:
        h.abort()


def serve_log(h: Handler, ns: str, name: str, q: dict[str, str]) -> None:
    cluster = h.cluster
    pod = cluster.api.get(PODS, ns, name)
    mains = [c["name"] for c in get_path(pod, "spec", "containers", default=[])]
    inits = [c["name"] for c in get_path(pod, "spec", "initContainers", default=[])]
    container = q.get("container") or ""
    if not container:
        if len(mains) != 1:
            msg = f"a container name must be specified for pod {name}, choose one of: [{' '.join(mains)}]"
            if inits:
                msg += f" or one of the init containers: [{' '.join(inits)}]"
            raise errors.bad_request(msg)
        container = mains[0]
    if container not in mains + inits:
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    run = cluster.kubelet.log_of(ns, name, pod["metadata"]["uid"])
    cr = run.find(container) if run else None
    previous = q.get("previous", "").lower() in ("1", "true")
    if cr is None:
        raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating')
    log: ContainerLog | None
    if previous:
        log = cr.previous_log
        if log is None:
            raise errors.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
    else:
        log = cr.log
        if cr.state == "waiting" and not log.lines():
            if cr.previous_log is not None:
                log = cr.previous_log
            else:
                reason = "trying and failing to pull image" if cr.pull_state else cr.reason
                raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
    since: int | None = None   # ns
    if q.get("sinceSeconds"):
        since = time.time_ns() - int(q["sinceSeconds"]) * 1_000_000_000
    elif q.get("sinceTime"):
        try:
            # The apiserver passes sinceTime on to the kubelet formatted as RFC 3339 *seconds*: the fraction is
            # dropped, so every line from the start of that second on comes back (clients resuming must dedupe).
            since = math.floor(parse_time(q["sinceTime"])) * 1_000_000_000
        except ValueError:
            raise errors.bad_request(f'parsing time "{q["sinceTime"]}" as "2006-01-02T15:04:05Z07:00": '
                                     "cannot parse") from None
    tail = int(q["tailLines"]) if q.get("tailLines") else None
    limit = int(q["limitBytes"]) if q.get("limitBytes") else None
    timestamps = q.get("timestamps", "").lower() in ("1", "true")
    follow = q.get("follow", "").lower() in ("1", "true")
    lines, end = select_lines(log.lines(), since, tail)
    if not follow:
        data = b"".join(render(t, d, timestamps) for t, d in lines)
        if limit is not None:
            data = data[:limit]
        h.record.status = 200
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        return
    silence = cluster.faults.take("silence_log", h.info)
    early = cluster.faults.take("end_log", h.info)
    cut = min((r.after_events for r in (silence, early) if r is not None), default=None)
    h.start_chunked("text/plain")
    budget = [limit]
    sent = [0]

    def emit(t: int, d: bytes) -> bool:
        """Send one line; False when the stream must stop here (limitBytes used up, or a fault's line count)."""
        if cut is not None and sent[0] >= cut:
            return False
        out = render(t, d, timestamps)
        if budget[0] is not None:
            out = out[:budget[0]]
            budget[0] -= len(out)
        h.chunk(out)
        sent[0] += 1
        return (budget[0] is None or budget[0] > 0) and (cut is None or sent[0] < cut)

    def finish() -> None:
        if cut is not None and sent[0] >= cut:
            if silence is not None and silence.after_events == cut:
                h.hold()          # the container keeps printing, nothing more arrives, nothing closes
            else:
                h.end_chunked()   # a clean end although the container still runs (log rotation)
            return
        h.end_chunked()

    if cut == 0:
        finish()
        return
    for t, d in lines:
        if not emit(t, d):
            finish()
            return
    stopping = h.server.stopping
    for t, d in log.follow(end, stopping):
        if since is not None and t < since:
            continue
        if not emit(t, d):
            break
    if stopping.is_set():
        h.abort()
        return
    finish()
