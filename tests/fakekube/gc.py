"""Garbage collector (ownerReferences: Background, Foreground, Orphan) and the
TTL-after-finished controller for Jobs."""

from __future__ import annotations

import time
from typing import Any

from .controller import Controller
from .errors import ApiError
from .resources import BY_KEY, JOBS
from .store import Change
from .util import Obj, condition_true, get_path, parse_time


def owner_uids(obj: Obj) -> list[str]:
    return [r["uid"] for r in get_path(obj, "metadata", "ownerReferences", default=[]) if r.get("uid")]


class GarbageCollector(Controller):
    name = "garbage-collector"

    def on_change(self, change: Change) -> None:
        meta = change.obj["metadata"]
        if change.type == "DELETED":
            self.enqueue(("owner", meta["uid"]))
            for uid in owner_uids(change.obj):
                self.enqueue(("owner", uid))
            return
        fins = meta.get("finalizers") or []
        if meta.get("deletionTimestamp") and ("orphan" in fins or "foregroundDeletion" in fins):
            self.enqueue(("owner", meta["uid"]))
        if change.type == "ADDED" and owner_uids(change.obj):
            self.enqueue(("dependent", change.resource, meta.get("namespace", ""), meta["name"]), 0.05)

    def _dependents(self, uid: str) -> list[tuple[str, Obj]]:
        return self.store.all_objects(where=lambda o: uid in owner_uids(o))   # read-only objects

    def _delete(self, res: str, obj: Obj, propagation: str = "Background") -> None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return
        try:
            self.api.delete(BY_KEY[res], meta.get("namespace") or None, meta["name"], propagation=propagation,
                            uid=meta["uid"])
        except ApiError:
            pass

    def _drop_ref(self, res: str, obj: Obj, uid: str) -> None:
        def drop(o: Obj) -> None:
            refs = [r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            if refs:
                o["metadata"]["ownerReferences"] = refs
            else:
                o["metadata"].pop("ownerReferences", None)
        meta = obj["metadata"]
        self.api.mutate(BY_KEY[res], meta.get("namespace") or None, meta["name"], drop, uid=meta["uid"])

    def _drop_finalizer(self, res: str, obj: Obj, finalizer: str) -> None:
        def drop(o: Obj) -> None:
            fins = [f for f in o["metadata"].get("finalizers") or [] if f != finalizer]
            if fins:
                o["metadata"]["finalizers"] = fins
            else:
                o["metadata"].pop("finalizers", None)
        meta = obj["metadata"]
        self.api.mutate(BY_KEY[res], meta.get("namespace") or None, meta["name"], drop, uid=meta["uid"])

    def reconcile(self, key: Any) -> None:
        if key[0] == "dependent":
            _, res, ns, name = key
            obj = self.store.get(res, ns, name)
            if obj is not None and owner_uids(obj) and not any(self.store.exists_uid(u) for u in owner_uids(obj)):
                self._delete(res, obj)
            return
        uid = key[1]
        found = self.store.get_by_uid(uid)
        dependents = self._dependents(uid)
        if found is None:
            for res, dep in dependents:
                if any(self.store.exists_uid(u) for u in owner_uids(dep) if u != uid):
                    self._drop_ref(res, dep, uid)
                else:
                    self._delete(res, dep)
            return
        res, owner = found
        fins = owner["metadata"].get("finalizers") or []
        if not owner["metadata"].get("deletionTimestamp"):
            return
        if "orphan" in fins:
            for dres, dep in dependents:
                self._drop_ref(dres, dep, uid)
            self._drop_finalizer(res, owner, "orphan")
        elif "foregroundDeletion" in fins:
            for dres, dep in dependents:
                self._delete(dres, dep, "Foreground" if dres == JOBS.key else "Background")
            blocking = [d for _, d in dependents if any(
                r.get("uid") == uid and r.get("blockOwnerDeletion")
                for r in d["metadata"].get("ownerReferences") or [])]
            if not blocking:
                self._drop_finalizer(res, owner, "foregroundDeletion")


class TTLAfterFinished(Controller):
    name = "ttl-after-finished"

    def on_change(self, change: Change) -> None:
        if change.resource == JOBS.key and change.type != "DELETED" and \
                get_path(change.obj, "spec", "ttlSecondsAfterFinished") is not None:
            self.enqueue((change.obj["metadata"]["namespace"], change.obj["metadata"]["name"]))

    def reconcile(self, key: Any) -> None:
        ns, name = key
        job = self.store.get(JOBS.key, ns, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        ttl = get_path(job, "spec", "ttlSecondsAfterFinished")
        if ttl is None:
            return
        finished = [c for c in get_path(job, "status", "conditions", default=[])
                    if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"]
        if not finished or not (condition_true(job, "Complete") or condition_true(job, "Failed")):
            return
        due = parse_time(finished[0]["lastTransitionTime"]) + ttl
        now = time.time()
        if now < due:
            self.enqueue(key, due - now)
            return
        try:
            self.api.delete(JOBS, ns, name, propagation="Foreground", uid=job["metadata"]["uid"])
        except ApiError:
            pass
