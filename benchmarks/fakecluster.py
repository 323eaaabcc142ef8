"""The fake Kubernetes cluster of the tests (tests/fakekube), as the benchmarks use it.

- :func:`kube_session`: a kjupyter session whose default profile is a
  ``backend = "kubernetes"`` profile on the fake cluster, with a ``file://`` store
  (the fake's pods share the host's filesystem).
- :class:`Census`: what a piece of work cost the API server, from the fake's own
  request log (every HTTP request it answered) and from its store (every object
  created), plus the largest number of watch connections open at once.
"""

from __future__ import annotations

import collections
import contextlib
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakekube.cluster import FakeCluster

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
BIG_NODE = {"name": "node-1", "cpu": "1000", "memory": "4000Gi", "pods": 100_000}


@contextlib.contextmanager
def kube_session(cluster: FakeCluster, *, lift_limiter: bool = False, extra: str = "") -> Iterator[Any]:
    """Make the kjupyter session's default profile a kubernetes profile on ``cluster``.

    ``lift_limiter``: raise the backend's client-side rate limiter (20 requests/s,
    burst 40) out of the way. It paces requests and never changes which requests
    are made; the control-plane benchmark lifts it so that a 10,000-item map does
    not spend half an hour waiting for tokens (see BENCHMARKS.md).
    """
    from kjupyter.config import load_config
    from tests.sessions import installed_session

    # Pods of a cancelled map may still be writing into the store while it is removed.
    with tempfile.TemporaryDirectory(prefix="kj-bench-", ignore_cleanup_errors=True) as tmp:
        path = Path(tmp) / "kjupyter.toml"
        path.write_text(
            'default = "kube"\n[clusters.kube]\nbackend = "kubernetes"\n'
            f'kubeconfig = "{cluster.kubeconfig_path}"\nimage = "python:3.11"\n'
            f'store = "file://{tmp}/store"\npending_timeout = "10m"\n' + extra
        )
        with installed_session(load_config(files=[path])) as sess:
            if lift_limiter:
                limiter = sess.backend(sess.profile_for({})).kube.limiter  # type: ignore[attr-defined]
                limiter.qps, limiter.burst, limiter.tokens = 1e9, 10**9, 1e9
            yield sess


@contextlib.contextmanager
def fake_cluster(**options: Any) -> Iterator[FakeCluster]:
    """A started fake cluster (see tests/fakekube/README.md for the options), stopped at the end."""
    cluster = FakeCluster(**options).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        if cluster.errors:
            raise RuntimeError("fakekube internal errors:\n" + "\n".join(cluster.errors))


@dataclass
class Counts:
    """The API-server cost of one piece of work."""

    writes: int = 0
    reads: int = 0  # every GET that is not a watch, log reads included
    log_reads: int = 0  # GET pods/log (followed or not)
    watches: int = 0  # watch requests (connections opened)
    max_open_watches: int = 0  # largest number of watch connections open at the same time
    created_by_client: int = 0  # objects the client POSTed (201)
    jobs_created: int = 0  # Job objects that came to exist (by anyone)
    pods_created: int = 0  # Pod objects that came to exist (the Job controller makes them)
    seconds: float = 0.0
    completed: int | None = None  # items finished when a time budget stopped the run (None: ran to completion)
    projected_from: int | None = None  # not measured: scaled from the counts of this size (0: to be projected)
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def status_reads(self) -> int:
        return self.reads - self.log_reads


class Census:
    """Counts requests and created objects on ``cluster`` between ``start()`` and ``stop()``."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.created: collections.Counter[str] = collections.Counter()
        self.active = False
        self.max_watches = 0
        self.completed: int | None = None
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        cluster.store.subscribe(self._on_change)

    def _on_change(self, change: Any) -> None:
        if self.active and change.type == "ADDED":
            self.created[change.resource] += 1

    def _open_watches(self) -> int:
        store = self.cluster.store
        with store.lock:
            return len(store._watchers)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.max_watches = max(self.max_watches, self._open_watches())

    def start(self) -> Census:
        self.cluster.clear_requests()
        self.created.clear()
        self.max_watches = self._open_watches()
        self.active = True
        self._stop.clear()
        self._sampler = threading.Thread(target=self._sample, daemon=True, name="bench-census")
        self._sampler.start()
        return self

    def stop(self, seconds: float = 0.0) -> Counts:
        self.active = False
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
        records = self.cluster.requests()
        kinds = collections.Counter(
            f"{r.method} {r.verb} {r.resource}{'/' + r.subresource if r.subresource else ''}" for r in records
        )
        reads = [r for r in records if r.method == "GET" and r.verb != "watch"]
        return Counts(
            writes=sum(1 for r in records if r.method in WRITE_METHODS),
            reads=len(reads),
            log_reads=sum(1 for r in reads if r.subresource == "log"),
            watches=sum(1 for r in records if r.verb == "watch"),
            max_open_watches=self.max_watches,
            created_by_client=sum(1 for r in records if r.method == "POST" and r.status == 201),
            jobs_created=self.created["jobs.batch"] + self.created["jobs"],
            pods_created=self.created["pods"],
            seconds=seconds,
            completed=self.completed,
            by_kind=dict(sorted(kinds.items())),
        )
