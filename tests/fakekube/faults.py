"""Fault injection rules, RBAC denials and the request log."""

from __future__ import annotations

import fnmatch
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestInfo:
    """What the real apiserver's RequestInfo resolver would say about a request."""

    method: str
    path: str
    query: dict[str, str]
    verb: str = ""             # get list watch create update patch delete deletecollection
    resource: str = ""         # plural, e.g. "jobs"
    subresource: str = ""      # e.g. "log", "status"
    group: str = ""
    namespace: str = ""
    name: str = ""
    resource_request: bool = False


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    group: str
    time: float
    status: int = 0

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass
class Rule:
    """One injected fault. action: "status" | "latency" | "drop_watch" | "expire_watch" | "silence_watch" |
    "silence_log" | "end_log" | "hang"."""

    action: str
    method: str = "*"
    path: str = "*"
    verb: str | None = None
    resource: str | None = None
    remaining: int | None = 1          # None: forever
    status: int = 500
    retry_after: int | None = None
    message: str = "fakekube injected fault"
    seconds: float = 0.0
    after_events: int = 0
    clean: bool = False
    name: str | None = None            # glob on the object name (e.g. the pod of a pods/log request)
    namespace: str | None = None
    apply: bool = True                 # hang: process the request before holding its answer back
    hits: int = 0

    def matches(self, info: RequestInfo) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.name is not None and not fnmatch.fnmatchcase(info.name, self.name):
            return False
        if self.namespace is not None and self.namespace != info.namespace:
            return False
        if self.method != "*" and self.method.upper() != info.method:
            return False
        if not fnmatch.fnmatchcase(info.path, self.path):
            return False
        if self.verb is not None and self.verb != info.verb:
            return False
        return self.resource is None or _resource_match(self.resource, info)


def _resource_match(pattern: str, info: RequestInfo) -> bool:
    if pattern == "*":
        return True
    base, _, sub = pattern.partition("/")
    plural, _, group = base.partition(".")
    if plural != info.resource or (group and group != info.group):
        return False
    return sub == info.subresource if sub else True


@dataclass
class Denial:
    verb: str
    resource: str
    namespace: str | None = None

    def matches(self, verb: str, resource: str, subresource: str, group: str, namespace: str) -> bool:
        info = RequestInfo("", "", {}, verb=verb, resource=resource, subresource=subresource, group=group)
        if self.verb not in ("*", verb):
            return False
        if self.resource != "*" and not _resource_match(self.resource, info):
            return False
        return self.namespace is None or self.namespace == namespace


@dataclass
class Faults:
    rules: list[Rule] = field(default_factory=list)
    denials: list[Denial] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rule: Rule) -> Rule:
        with self.lock:
            self.rules.append(rule)
        return rule

    def take(self, action: str, info: RequestInfo) -> Rule | None:
        with self.lock:
            for r in self.rules:
                if r.action == action and r.matches(info):
                    if r.remaining is not None:
                        r.remaining -= 1
                    r.hits += 1
                    return r
        return None

    def allowed(self, verb: str, resource: str, subresource: str, group: str, namespace: str) -> bool:
        with self.lock:
            return not any(d.matches(verb, resource, subresource, group, namespace) for d in self.denials)

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.denials.clear()


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def find(self, **filters: Any) -> list[RequestRecord]:
        """Filter by any RequestRecord attribute; `resource` also accepts "pods/log" or "jobs.batch"."""
        with self._lock:
            records = list(self._records)
        out = []
        for r in records:
            ok = True
            for k, v in filters.items():
                if v is None:
                    continue
                if k == "resource":
                    info = RequestInfo("", "", {}, resource=r.resource, subresource=r.subresource, group=r.group)
                    ok = _resource_match(v, info) and ("/" in v or not r.subresource or v == "*")
                elif k == "method":
                    ok = r.method == str(v).upper()
                else:
                    ok = getattr(r, k) == v
                if not ok:
                    break
            if ok:
                out.append(r)
        return out


class Tokens:
    """The bearer tokens the server accepts: the current one, and rotated-out ones until their grace ends."""

    def __init__(self, token: str) -> None:
        self.current = token
        self._old: dict[str, float] = {}      # token -> monotonic deadline (inf: accepted again)
        self._lock = threading.Lock()

    def accepts(self, token: str) -> bool:
        with self._lock:
            if token == self.current:
                return True
            until = self._old.get(token)
            return until is not None and time.monotonic() < until

    def rotate(self, new: str, grace: float) -> None:
        with self._lock:
            if new != self.current:
                self._old[self.current] = time.monotonic() + max(0.0, grace)
                self._old.pop(new, None)
                self.current = new

    def forgive(self) -> None:
        """Accept every token issued so far again (clear_faults)."""
        with self._lock:
            for t in self._old:
                self._old[t] = float("inf")
