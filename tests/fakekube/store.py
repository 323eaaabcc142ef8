"""Object storage with etcd-like semantics: one global resourceVersion counter,
a bounded history of changes (the watch window) and fan-out to watchers and
controllers.

The store is deliberately dumb: it knows nothing about API semantics (defaults,
validation, finalizers); `api.py` does. Stored objects are never mutated in
place (a write replaces them), so `Change` objects and `copy=False` reads share
them: such objects are read-only. Everything else handed out is a deep copy.
"""

from __future__ import annotations

import builtins
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .util import Obj, deep, new_uid, now_iso


@dataclass
class Change:
    rv: int
    type: str          # ADDED / MODIFIED / DELETED
    resource: str      # resource key, e.g. "jobs.batch" or "pods"
    obj: Obj
    old: Obj | None


class TooOld(Exception):
    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class Exists(Exception):
    pass


class Watcher:
    """A subscription to the change feed of one resource (optionally one namespace)."""

    def __init__(self, store: Store, resource: str, namespace: str | None) -> None:
        self.store = store
        self.resource = resource
        self.namespace = namespace
        self.queue: queue.SimpleQueue[Change | None] = queue.SimpleQueue()
        self.closed = False

    def accepts(self, change: Change) -> bool:
        if change.resource != self.resource:
            return False
        return self.namespace is None or change.obj["metadata"].get("namespace") == self.namespace

    def get(self, timeout: float) -> Change | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True
        self.store.unwatch(self)
        self.queue.put(None)


Listener = Callable[[Change], None]


class Store:
    def __init__(self, history: int = 1000, first_rv: int = 1000) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {}
        self._uids: dict[str, tuple[str, str, str]] = {}
        self._rv = first_rv
        self._history: deque[Change] = deque(maxlen=max(1, history))
        self._compacted = first_rv
        self._watchers: set[Watcher] = set()
        self._listeners: list[Listener] = []

    # -- feed -------------------------------------------------------------
    @property
    def rv(self) -> int:
        return self._rv

    def subscribe(self, listener: Listener) -> None:
        """listener(change) is called for every change, under the store lock: keep it tiny."""
        with self.lock:
            self._listeners.append(listener)

    def set_history(self, n: int) -> None:
        with self.lock:
            old = list(self._history)
            self._history = deque(old[-n:], maxlen=max(1, n))
            if len(old) > n:
                self._compacted = old[-n - 1].rv

    def compact(self) -> None:
        """Forget all history (as an etcd compaction would): every older rv becomes 'too old'."""
        with self.lock:
            self._history.clear()
            self._compacted = self._rv

    def _emit(self, change: Change) -> None:
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].rv
        self._history.append(change)
        for w in list(self._watchers):
            if w.accepts(change):
                w.queue.put(change)
        for listener in self._listeners:
            listener(change)
        self.changed.notify_all()

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    # -- reads ------------------------------------------------------------
    def get(self, resource: str, namespace: str, name: str, *, copy: bool = True) -> Obj | None:
        with self.lock:
            obj = self._objects.get(resource, {}).get((namespace, name))
            return deep(obj) if obj is not None and copy else obj

    def get_by_uid(self, uid: str) -> tuple[str, Obj] | None:
        with self.lock:
            where = self._uids.get(uid)
            if where is None:
                return None
            obj = self._objects[where[0]][(where[1], where[2])]
            return where[0], deep(obj)

    def exists_uid(self, uid: str) -> bool:
        with self.lock:
            return uid in self._uids

    def list(self, resource: str, namespace: str | None = None, *, copy: bool = True,
             where: Callable[[Obj], bool] | None = None) -> tuple[list[Obj], int]:
        """Objects in name order, filtered by `where` (on the stored objects) before copying."""
        with self.lock:
            items = [o for (ns, _n), o in sorted(self._objects.get(resource, {}).items())
                     if (namespace is None or ns == namespace) and (where is None or where(o))]
            return ([deep(o) for o in items] if copy else items), self._rv

    def all_objects(self, where: Callable[[Obj], bool] | None = None) -> builtins.list[tuple[str, Obj]]:
        """(resource, read-only object) pairs, optionally filtered."""
        with self.lock:
            return [(res, o) for res, objs in self._objects.items() for o in objs.values()
                    if where is None or where(o)]

    # -- writes -----------------------------------------------------------
    def insert(self, resource: str, obj: Obj) -> Obj:
        """Store a new object, filling uid, creationTimestamp, resourceVersion, generation."""
        with self.lock:
            meta = obj.setdefault("metadata", {})
            key = (meta.get("namespace", ""), meta["name"])
            bucket = self._objects.setdefault(resource, {})
            if key in bucket:
                raise Exists(meta["name"])
            meta.setdefault("uid", new_uid())
            meta.setdefault("creationTimestamp", now_iso())
            meta["resourceVersion"] = self._bump()
            stored = obj                      # the store owns it from now on
            bucket[key] = stored
            self._uids[meta["uid"]] = (resource, key[0], key[1])
            self._emit(Change(self._rv, "ADDED", resource, stored, None))
            return deep(stored)

    def mutate(self, resource: str, namespace: str, name: str, fn: Callable[[Obj], Any],
               uid: str | None = None) -> Obj | None:
        """Atomically apply fn to a copy of the object; write (MODIFIED) only if it changed.

        fn may return False to abort. Returns the resulting object or None when absent
        (or when uid is given and does not match).
        """
        with self.lock:
            current = self._objects.get(resource, {}).get((namespace, name))
            if current is None or (uid is not None and current["metadata"].get("uid") != uid):
                return None
            new = deep(current)
            if fn(new) is False or new == current:
                return deep(current)
            return self._write(resource, current, new)

    def replace(self, resource: str, new: Obj) -> Obj:
        with self.lock:
            meta = new["metadata"]
            current = self._objects[resource][(meta.get("namespace", ""), meta["name"])]
            return self._write(resource, current, new)

    def _write(self, resource: str, current: Obj, new: Obj) -> Obj:
        meta = new["metadata"]
        meta["uid"] = current["metadata"]["uid"]
        meta["resourceVersion"] = self._bump()
        stored = new                          # the store owns it from now on
        self._objects[resource][(meta.get("namespace", ""), meta["name"])] = stored
        self._emit(Change(self._rv, "MODIFIED", resource, stored, current))
        return deep(stored)

    def remove(self, resource: str, namespace: str, name: str, uid: str | None = None) -> Obj | None:
        with self.lock:
            bucket = self._objects.get(resource, {})
            current = bucket.get((namespace, name))
            if current is None or (uid is not None and current["metadata"].get("uid") != uid):
                return None
            del bucket[(namespace, name)]
            self._uids.pop(current["metadata"]["uid"], None)
            final = dict(current, metadata=dict(current["metadata"], resourceVersion=self._bump()))
            self._emit(Change(self._rv, "DELETED", resource, final, current))
            return deep(final)

    # -- watches ----------------------------------------------------------
    def watch(self, resource: str, namespace: str | None, since: int | None,
              ) -> tuple[Watcher, builtins.list[Change]]:
        """Register a watcher. since=None: synthetic ADDED for the current state first.

        Otherwise the changes after `since` still in the window are replayed, or TooOld is raised.
        """
        with self.lock:
            w = Watcher(self, resource, namespace)
            if since is None:
                items = [o for (ns, _n), o in sorted(self._objects.get(resource, {}).items())
                         if namespace is None or ns == namespace]
                initial = [Change(int(o["metadata"]["resourceVersion"]), "ADDED", resource, o, None)
                           for o in items]
            else:
                if since < self._compacted:
                    oldest = self._history[0].rv if self._history else self._rv + 1
                    raise TooOld(since, oldest)
                initial = [c for c in self._history if c.rv > since and w.accepts(c)]
            self._watchers.add(w)
            return w, initial

    def unwatch(self, w: Watcher) -> None:
        with self.lock:
            self._watchers.discard(w)

    def close_watchers(self) -> None:
        with self.lock:
            watchers = list(self._watchers)
        for w in watchers:
            w.close()
