"""One event path: no user-visible callback runs on a watch thread, and a slow result holds back no other run."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kjupyter import remote
from kjupyter.run_events import LogLine
from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster
from tests.k8s.helpers import kube_session


def _slow_rebuild(value: int) -> SlowToUnpickle:
    record = os.environ.get("KJUPYTER_TEST_UNPICKLE_LOG")
    if record and not os.environ.get("KJUPYTER_RUN_ID"):  # in the client, not in the runner
        started = time.monotonic()  # (the same clock as the test's: one process)
        time.sleep(2.0)
        with open(record, "a") as f:
            f.write(f"{started} {time.monotonic()}\n")
    return SlowToUnpickle(value)


class SlowToUnpickle:
    """A result that takes 2 s to unpickle in the client."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Callable[[int], SlowToUnpickle], tuple[int]]:
        return (_slow_rebuild, (self.value,))


def slow_result(x: int) -> SlowToUnpickle:
    return SlowToUnpickle(x)


def chatter(n: int) -> int:
    for i in range(n):
        print(f"tick {i}", flush=True)
        time.sleep(0.1)
    return n


def test_a_result_that_takes_2s_to_unpickle_does_not_delay_another_runs_events(
    local_session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "unpickled"
    monkeypatch.setenv("KJUPYTER_TEST_UNPICKLE_LOG", str(record))
    arrivals: list[float] = []
    slow = remote(slow_result).submit(7)
    talk = remote(chatter).submit(40)
    talk.subscribe(lambda e: arrivals.append(time.monotonic()) if isinstance(e, LogLine) else None)
    assert slow.result(60).value == 7
    assert talk.result(60) == 40
    ((start, end),) = [tuple(map(float, line.split())) for line in record.read_text().splitlines()]
    during = [t for t in arrivals if start + 0.2 < t < end - 0.2]
    assert len(during) >= 5, (start, end, arrivals)  # lines kept arriving while the other result was unpickled


@pytest.fixture
def cluster(make_fake_cluster: Callable[..., FakeCluster]) -> FakeCluster:
    return make_fake_cluster(nodes=[{"name": "cpu-1", "cpu": "8", "memory": "32Gi"}])


@pytest.fixture
def kube(tmp_path: Path, cluster: FakeCluster) -> Iterator[Session]:
    yield from kube_session(tmp_path, cluster.kubeconfig_path, store=True)


def test_no_subscriber_and_no_result_download_runs_on_a_watch_thread(kube: Session) -> None:
    threads: set[str] = set()

    def spy(event: Any) -> None:
        threads.add(threading.current_thread().name)

    future = remote(chatter).submit(5)
    future.subscribe(spy)
    assert future.result(60) == 5
    assert future.wait_ended(10)
    assert threads and not [t for t in threads if t.startswith("kjupyter-watch")], threads
    assert all(t.startswith("kjupyter-events") for t in threads), threads
