"""The cluster picker's reachability probes (kjupyter/server/probes.py): all at once, bounded, cached."""

from __future__ import annotations

import threading
from typing import Any

from kjupyter.server.probes import ProbeCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_slow_cluster_does_not_hold_the_others_and_its_answer_is_kept() -> None:
    release = threading.Event()
    asked: list[str] = []

    def probe(name: str) -> dict[str, Any]:
        asked.append(name)
        if name == "slow":
            release.wait(10)
            return {"reachable": True, "detail": "Kubernetes v1.30, namespace team-a"}
        if name == "down":
            raise ConnectionError("cannot reach https://10.0.0.1:6443: connection refused")
        return {"reachable": True, "detail": ""}

    clock = Clock()
    cache = ProbeCache(probe, wait=0.3, ttl=30, clock=clock)
    try:
        rows = cache.get(["local", "slow", "down"])
        assert rows == [
            {"reachable": True, "detail": ""},
            {"reachable": None, "detail": "no answer within 0.3 s; still asking (reopen to see)"},
            {"reachable": False, "detail": "cannot reach https://10.0.0.1:6443: connection refused"},
        ]
        assert cache.calls == 3
        release.set()
        clock.now = 5  # reopened soon: the slow cluster's answer has come, nobody is asked again
        rows = cache.get(["local", "slow", "down"])
        assert rows[1] == {"reachable": True, "detail": "Kubernetes v1.30, namespace team-a"}
        assert cache.calls == 3 and sorted(asked) == ["down", "local", "slow"]
        clock.now = 31  # after the TTL every cluster is asked again, once
        cache.get(["local", "slow", "down"])
        assert cache.calls == 6
    finally:
        release.set()
        cache.close()


def test_a_probe_still_out_is_not_started_twice() -> None:
    release = threading.Event()
    clock = Clock()
    cache = ProbeCache(lambda name: release.wait(10) and {"reachable": True, "detail": ""}, wait=0.05, ttl=1,
                       clock=clock)  # fmt: skip
    try:
        cache.get(["slow"])
        clock.now = 100  # long past the TTL, but the first probe has not answered: it is not doubled
        assert cache.get(["slow"])[0]["reachable"] is None
        assert cache.calls == 1
    finally:
        release.set()
        cache.close()
