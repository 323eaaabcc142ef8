"""Watches on the fake cluster over many reconnects: a constant number of open watches, no polling.

The fake's watch registry is sampled while runs go (how many pod and job watches are open right now),
and its request log says what was asked for.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import kjupyter
from kjupyter import remote
from kjupyter.backends.kubernetes import watch as k8s_watch
from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster
from tests.fakekube.resources import JOBS, PODS
from tests.k8s.helpers import kube_session

WATCH_S = 1  # server-side timeout of each watch request: a reconnect every second, cheaply


def tick(n: int) -> int:
    for i in range(n):
        print(f"tick {i}", flush=True)
        time.sleep(0.1)
    return n


class OpenWatches:
    """Samples the fake's open pod and job watches every 20 ms."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.samples: list[tuple[int, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            with self.cluster.store.lock:
                kinds = Counter(w.resource for w in self.cluster.store._watchers)
            self.samples.append((kinds[PODS.key], kinds[JOBS.key]))

    def __enter__(self) -> OpenWatches:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture
def cluster(make_fake_cluster: Callable[..., FakeCluster]) -> FakeCluster:
    return make_fake_cluster(nodes=[{"name": "cpu-1", "cpu": "8", "memory": "32Gi"}], bookmark_interval=0.2)


@pytest.fixture
def session(tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    monkeypatch.setattr(k8s_watch, "WATCH_SECONDS", WATCH_S)
    yield from kube_session(tmp_path, cluster.kubeconfig_path, store=True)


def test_a_long_map_keeps_one_pod_and_one_job_watch_and_never_polls(session: Session, cluster: FakeCluster) -> None:
    assert remote(tick).submit(1).result(30) == 1  # the session's watches are open and synced
    cluster.clear_requests()
    with OpenWatches(cluster) as watches:
        started = time.monotonic()
        future = remote(tick).submit_map([30] * 8, parallelism=2)  # 4 waves of ~3 s: ~12 s, 10+ watch timeouts
        cluster.wait_for(lambda: len(cluster.requests("watch", "pods")) >= 3, 30)
        cluster.drop_watches(after_events=1, count=2)  # and two streams cut mid-way, for good measure
        assert future.result(120) == [30] * 8
        assert future.wait_ended(30)
        elapsed = time.monotonic() - started
    pods = {r.name for r in cluster.requests("get", "pods/log")}
    assert len(pods) == 2  # a map of 8 items at parallelism 2: two worker pods, each read
    # Open watches, sampled ~every 20 ms for the whole run: never more than one per resource.
    assert len(watches.samples) > 100 and max(watches.samples) <= (1, 1)
    assert max(p for p, _ in watches.samples) == 1 and max(j for _, j in watches.samples) == 1
    assert sum(1 for s in watches.samples if s == (1, 1)) > len(watches.samples) // 2
    # Reconnects, not re-lists: every watch resumes from a resourceVersion, with the session's selector.
    for resource in ("pods", "jobs"):
        reconnects = cluster.requests("watch", resource)
        assert len(reconnects) >= int(elapsed / WATCH_S) - 1, (elapsed, len(reconnects))
        assert all(r.query.get("resourceVersion") for r in reconnects)
        assert {r.query["labelSelector"] for r in reconnects} == {
            f"app.kubernetes.io/managed-by=kjupyter,kjupyter.io/session in ({session.session_id})"
        }
        assert cluster.requests("list", resource) == []
        assert cluster.requests("get", resource) == []  # no per-pod or per-job GET
    # What else was asked: each pod's log (followed, then read once more at its end) and, while a pod
    # is Pending, its events, once per new problem: per pod, never per second.
    others = Counter(
        (r.verb, r.full_resource, r.name or r.query.get("fieldSelector", ""))
        for r in cluster.requests()
        if r.verb not in ("watch",)
    )
    # (and the run's three writes: the Job, suspended; its Secret; the Job resumed)
    assert {k[:2] for k in others} <= {("create", "jobs"), ("create", "secrets"), ("patch", "jobs"),
                                       ("get", "pods/log"), ("list", "events")}  # fmt: skip
    assert others[("create", "jobs", "")] == 1 and others[("create", "secrets", "")] == 1
    assert all(n <= 4 for k, n in others.items() if k[0] == "list"), others
    assert all(n <= 6 for k, n in others.items() if k[1] == "pods/log"), others


@pytest.fixture
def default_session(tmp_path: Path, cluster: FakeCluster) -> Iterator[Session]:
    """Watch requests with the real server-side timeout (290 s): none ends by itself during a test."""
    yield from kube_session(tmp_path, cluster.kubeconfig_path, store=True)


def test_attach_uses_the_shared_watches(default_session: Session, cluster: FakeCluster) -> None:
    session = default_session
    # Three runs of another session (as another kernel would start them), detached.
    other = Session(session.config)
    other.session_id = "other-kernel"
    futures = [other.submit_call(tick, (20 + i,), {}, {}).detach() for i in range(3)]
    cluster.wait_for(lambda: len(cluster.objects("jobs")) == 3, 20)
    other.close()  # its watches are gone; the runs go on
    assert remote(tick).submit(1).result(30) == 1  # this session's own watches
    cluster.clear_requests()
    attached = [kjupyter.attach(f.run_id) for f in futures]
    assert [a.result(60) for a in attached] == [20, 21, 22]
    assert remote(tick).submit(2).result(30) == 2  # own runs still work on the widened watches
    both = ",".join(sorted(["other-kernel", session.session_id]))
    for resource in ("pods", "jobs"):
        # The first run of the other session widens the shared watches (one re-list and one new watch, the
        # old stream closed); the next two runs of that session cost no watch request at all.
        (watch,) = cluster.requests("watch", resource)
        assert watch.query["labelSelector"] == f"app.kubernetes.io/managed-by=kjupyter,kjupyter.io/session in ({both})"
        lists = [r for r in cluster.requests("list", resource) if "session" in r.query.get("labelSelector", "")]
        assert len(lists) == 1 and lists[0].query["labelSelector"] == watch.query["labelSelector"]
    assert len(cluster.requests("get", "jobs")) == 3  # attach reads each Job once
    assert cluster.requests("get", "pods") == []


def test_429_retry_after_is_honoured_on_the_wire(session: Session, cluster: FakeCluster) -> None:
    cluster.throttle(count=2, retry_after=1, verb="create", resource="jobs")
    assert remote(tick).submit(1).result(30) == 1
    creates = cluster.requests("create", "jobs")
    assert [r.status for r in creates] == [429, 429, 201]
    assert creates[1].time - creates[0].time >= 1.0 and creates[2].time - creates[1].time >= 1.0


def test_attach_to_a_finished_run_of_this_session(default_session: Session, cluster: FakeCluster) -> None:
    first = remote(tick).submit(3)
    assert first.result(30) == 3 and first.wait_ended(10)
    cluster.clear_requests()
    again = kjupyter.attach(first.run_id)  # the watches saw it all already: it is handed its objects once
    assert again.result(30) == 3
    assert cluster.requests("watch") == []
    (pods,) = cluster.requests("list", "pods")
    assert pods.query["labelSelector"] == f"app.kubernetes.io/managed-by=kjupyter,kjupyter.io/run={first.run_id}"
