"""core/v1 Events as the real components record them (with count aggregation)."""

from __future__ import annotations

import time

from .api import Api
from .resources import EVENTS
from .util import Obj, iso_micro, now_iso


class EventRecorder:
    def __init__(self, api: Api) -> None:
        self.api = api
        self._seen: dict[tuple[str, ...], tuple[str, str]] = {}

    def record(self, involved: Obj, reason: str, message: str, *, component: str, type: str = "Normal",
               host: str | None = None, field_path: str | None = None, action: str | None = None) -> None:
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (meta.get("uid", ""), type, reason, message, component, field_path or "")
        now = now_iso()
        with self.api.store.lock:
            known = self._seen.get(key)
            if known is not None:
                def bump(ev: Obj) -> None:
                    ev["count"] = int(ev.get("count") or 1) + 1
                    ev["lastTimestamp"] = now
                if self.api.mutate(EVENTS, known[0], known[1], bump) is not None:
                    return
            ref: Obj = {"kind": involved.get("kind"), "namespace": meta.get("namespace"), "name": meta["name"],
                        "uid": meta.get("uid"), "apiVersion": involved.get("apiVersion"),
                        "resourceVersion": meta.get("resourceVersion")}
            if field_path:
                ref["fieldPath"] = field_path
            if not ref["namespace"]:
                del ref["namespace"]
            source: Obj = {"component": component}
            if host:
                source["host"] = host
            event: Obj = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": namespace},
                "involvedObject": ref, "reason": reason, "message": message, "source": source,
                "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": type,
                "eventTime": None, "reportingComponent": component, "reportingInstance": host or component,
            }
            if component == "default-scheduler":
                event["eventTime"] = iso_micro()
                event["action"] = action or "Scheduling"
            elif action:
                event["action"] = action
            created = self.api.create(EVENTS, event, namespace, validate=False)
            self._seen[key] = (namespace, created["metadata"]["name"])
