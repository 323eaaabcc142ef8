"""core/v1 Events as the real components record them.

client-go's EventCorrelator (used by the kubelet, the Job controller, the cluster-autoscaler): an identical
event bumps `count` and `lastTimestamp` of the first one; when 10 events of the same source, object, type and
reason but different messages arrive within 10 minutes, the next ones become one event
"(combined from similar events): <latest message>" whose count grows. The scheduler's events (events.k8s.io
recorder) are only deduplicated. No spam filter (client-go drops bursts beyond 25 per object).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .api import Api
from .resources import EVENTS
from .util import Obj, iso_micro, now_iso

AGGREGATE_MAX_EVENTS = 10          # defaultAggregateMaxEvents
AGGREGATE_INTERVAL = 600.0         # defaultAggregateIntervalInSeconds
COMBINED = "(combined from similar events): "
NOT_AGGREGATED = ("default-scheduler",)


@dataclass
class _Similar:
    messages: set[str] = field(default_factory=set)
    last: float = 0.0


class EventRecorder:
    def __init__(self, api: Api, aggregate: bool = True) -> None:
        self.api = api
        self.aggregate = aggregate
        self._seen: dict[tuple[str, ...], tuple[str, str]] = {}
        self._similar: dict[tuple[str, ...], _Similar] = {}

    def _correlate(self, key: tuple[str, ...], message: str) -> tuple[bool, str]:
        """EventAggregator.EventAggregate: (combined?, message) for this event."""
        now = time.monotonic()
        similar = self._similar.get(key)
        if similar is None or now - similar.last > AGGREGATE_INTERVAL:
            similar = self._similar[key] = _Similar()
        similar.messages.add(message)
        similar.last = now
        if len(similar.messages) < AGGREGATE_MAX_EVENTS:
            return False, message
        similar.messages.pop()
        return True, COMBINED + message

    def record(self, involved: Obj, reason: str, message: str, *, component: str, type: str = "Normal",
               host: str | None = None, field_path: str | None = None, action: str | None = None,
               related: Obj | None = None) -> None:
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        key: tuple[str, ...] = (meta.get("uid", ""), type, reason, message, component, field_path or "")
        now = now_iso()
        with self.api.store.lock:
            if self.aggregate and component not in NOT_AGGREGATED:
                similar_key = (component, host or "", involved.get("kind") or "", namespace, meta["name"],
                               meta.get("uid", ""), type, reason)
                combined, message = self._correlate(similar_key, message)
                if combined:
                    key = (*similar_key, "<combined>")
            known = self._seen.get(key)
            if known is not None:
                def bump(ev: Obj) -> None:
                    ev["count"] = int(ev.get("count") or 1) + 1
                    ev["lastTimestamp"] = now
                    ev["message"] = message
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
            if related is not None:
                rmeta = related["metadata"]
                event["related"] = {"kind": related.get("kind"), "namespace": rmeta.get("namespace"),
                                    "name": rmeta["name"], "uid": rmeta.get("uid"),
                                    "apiVersion": related.get("apiVersion")}
            created = self.api.create(EVENTS, event, namespace, validate=False)
            self._seen[key] = (namespace, created["metadata"]["name"])
