"""RunService (what the routes call) against a scripted backend: followed logs, cancelled runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kjupyter.backends.base import MAP, RunInfo
from kjupyter.config import load_config
from kjupyter.errors import BackendError
from kjupyter.run_events import Phase
from kjupyter.server.service import NotFound, RunService


class ScriptedBackend:
    """Like the Kubernetes backend: a followed log ends at once; a cancelled run is forgotten."""

    def __init__(self) -> None:
        self.runs: dict[str, RunInfo] = {}
        self.log: list[str] = []
        self.reads = 0
        self.lock = threading.Lock()

    def list_runs(self, user: str | None = None) -> list[RunInfo]:
        with self.lock:
            return list(self.runs.values())

    def logs(self, run_id: str, index: int | None = None, *, follow: bool = False) -> Iterator[str]:
        with self.lock:
            self.reads += 1
            if run_id not in self.runs:
                raise BackendError(f"no run {run_id!r}")
            lines = list(self.log)
        yield from lines

    def cancel(self, run_id: str) -> bool:
        with self.lock:
            return self.runs.pop(run_id, None) is not None

    def set_phase(self, run_id: str, phase: Phase) -> None:
        with self.lock:
            self.runs[run_id] = replace(self.runs[run_id], phase=phase)

    def print(self, *lines: str) -> None:
        with self.lock:
            self.log.extend(lines)

    def close(self) -> None:
        pass


@pytest.fixture
def service(tmp_path: Path) -> tuple[RunService, ScriptedBackend]:
    path = tmp_path / "kjupyter.toml"
    path.write_text('default = "kube"\n[clusters.kube]\nbackend = "kubernetes"\nnamespace = "ml"\n')
    svc = RunService(load_config(files=[path]), user="ada")
    backend = ScriptedBackend()
    svc._backends["kube"] = backend  # type: ignore[assignment]
    svc.FOLLOW_INTERVAL = 0.05
    return svc, backend


def run_info(run_id: str, phase: Phase = Phase.RUNNING) -> RunInfo:
    return RunInfo(run_id=run_id, cluster="kube", phase=phase, kind=MAP, user="ada", function="square",
                   created=time.time(), total=3, running=1)  # fmt: skip


def test_a_followed_log_goes_on_after_the_backend_stream_ends(service: tuple[RunService, ScriptedBackend]) -> None:
    svc, backend = service
    backend.runs["r1"] = run_info("r1")
    backend.print("[0] item 0 started", "[0] same")
    cluster, info = svc.find("r1")
    lines = svc.logs(cluster, info, None, True)
    got = [next(lines), next(lines)]
    assert got == ["[0] item 0 started", "[0] same"]
    # Lines printed later, some identical to earlier ones, interleaved between tasks.
    backend.print("[1] item 1 started")
    backend.log.insert(1, "[0] same")  # a re-read may order tasks' lines differently
    assert [next(lines), next(lines)] == ["[0] same", "[1] item 1 started"]
    backend.print("[1] last line")
    backend.set_phase("r1", Phase.SUCCEEDED)
    rest = list(lines)  # ends by itself once the run ended and a last read was made
    assert rest == ["[1] last line"]
    assert backend.reads >= 3


def test_a_followed_log_stops_when_the_client_goes_away(service: tuple[RunService, ScriptedBackend]) -> None:
    svc, backend = service
    backend.runs["r1"] = run_info("r1")
    backend.print("one")
    stop = threading.Event()
    cluster, info = svc.find("r1")
    lines = svc.logs(cluster, info, None, True, stop)
    assert next(lines) == "one"
    done = threading.Event()
    threading.Thread(target=lambda: (list(lines), done.set()), daemon=True).start()
    time.sleep(0.2)
    assert not done.is_set()  # the run goes on: so does the follow
    stop.set()
    assert done.wait(2), "the follow did not stop when asked"


def test_a_log_that_is_not_followed_is_read_once(service: tuple[RunService, ScriptedBackend]) -> None:
    svc, backend = service
    backend.runs["r1"] = run_info("r1")
    backend.print("a", "b")
    cluster, info = svc.find("r1")
    assert list(svc.logs(cluster, info, None, False)) == ["a", "b"]
    assert backend.reads == 1


def test_a_cancelled_run_stays_listed_as_cancelled_after_the_backend_forgets_it(
    service: tuple[RunService, ScriptedBackend],
) -> None:
    svc, backend = service
    backend.runs["r1"] = run_info("r1")
    backend.runs["r2"] = run_info("r2")
    cluster, info = svc.find("r1")
    assert svc.cancel(cluster, info) is True
    assert "r1" not in backend.runs  # the Job is gone
    rows = {r["run_id"]: r for r in svc.list_runs().runs}
    assert rows["r1"]["phase"] == "Cancelled" and rows["r1"]["active"] is False and rows["r1"]["running"] == 0
    assert rows["r1"]["finished"] is not None and rows["r2"]["phase"] == "Running"
    assert [r["run_id"] for r in svc.list_runs(status="cancelled").runs] == ["r1"]
    assert svc.find("r1")[1].phase is Phase.CANCELLED
    # A second cancel finds nothing to cancel, and the run is still shown.
    assert svc.cancel(cluster, svc.find("r1")[1]) is False
    assert svc.find("r1")[1].phase is Phase.CANCELLED
    # The log of a run that is gone is not followed: the backend's sentence ends the stream.
    with pytest.raises(BackendError, match="no run 'r1'"):
        list(svc.logs(cluster, svc.find("r1")[1], None, True))
    with pytest.raises(NotFound):
        svc.find("never-was")


def test_only_the_last_cancelled_runs_are_remembered(service: tuple[RunService, ScriptedBackend]) -> None:
    svc, backend = service
    svc.KEEP_CANCELLED = 3
    for i in range(5):
        backend.runs[f"r{i}"] = run_info(f"r{i}")
        svc.cancel("kube", backend.runs[f"r{i}"])
    assert sorted(r["run_id"] for r in svc.list_runs().runs) == ["r2", "r3", "r4"]
