"""run.json from a run's events (kjupyter.backends.run_record): exact writes on a fake clock."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from kjupyter import store as st
from kjupyter.backends.base import SubmitRequest
from kjupyter.backends.run_record import MAX_FAILED_ITEMS, RunRecord, open_result, record_info, run_meta
from kjupyter.errors import BackendError
from kjupyter.run_events import Diagnosis, Phase, PhaseChanged, Progress, RunFinished, TaskFinished
from kjupyter.spec import RunSpec


class FakeTime:
    """A clock and a timer queue: callbacks run when the clock passes their time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()

    def clock(self) -> float:
        return self.now

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (self.now + delay, next(self.seq), fn))

    def advance(self, to: float) -> None:
        while self.timers and self.timers[0][0] <= to:
            due, _, fn = heapq.heappop(self.timers)
            self.now = due
            fn()
        self.now = to


@pytest.fixture
def run_dir(tmp_path: Path) -> st.RunDir:
    return st.RunStore(f"file://{tmp_path}").run("ada", "r-1")


def request(count: int) -> SubmitRequest:
    return SubmitRequest(run_id="r-1", kind="map", spec=RunSpec(), payload=b"", count=count, user="ada",
                         session="s", function="f")  # fmt: skip


def test_a_map_of_1000_tasks_over_ten_seconds_writes_once_a_second(run_dir: st.RunDir) -> None:
    t = FakeTime()
    record = RunRecord(run_dir, interval=1.0, clock=t.clock, schedule=t.schedule)
    seen: list[object] = []
    sink = record.wrap(seen.append)
    record.create(run_meta(request(1000), cluster="c", backend="local"))
    t.advance(0.1)
    sink(PhaseChanged("r-1", Phase.RUNNING))
    for i in range(1, 1001):  # one task ends every 10 ms, from 0.115 s to 10.105 s
        t.advance(0.105 + 0.01 * i)
        sink(TaskFinished("r-1", i - 1, Phase.SUCCEEDED if i % 100 else Phase.FAILED, 0))
        sink(Progress("r-1", 1000, succeeded=i - i // 100, failed=i // 100, running=min(2, 1000 - i),
                      pending=max(0, 1000 - i - 2)))  # fmt: skip
        if i == 500:
            mid = run_dir.read_json(st.RUN_JSON)
    t.advance(20.0)
    sink(RunFinished("r-1", Phase.FAILED, "Failed"))
    # create, running, one counts write per second (1.1 s ... 11.1 s: the last one trails the end of the
    # stream of events), the end: 14, for 2,000 events.
    assert run_dir.writes == [st.RUN_JSON] * 14
    assert record.progress_writes == 11
    assert mid["phase"] == "Running" and mid["counts"] == {"succeeded": 495, "failed": 4, "running": 2,
                                                           "pending": 499}  # fmt: skip  # task 499, at 5.1 s
    final = run_dir.read_json(st.RUN_JSON)
    assert final["phase"] == "Failed" and final["reason"] == "Failed" and final["finished"] > final["created"]
    assert final["counts"] == {"succeeded": 990, "failed": 10, "cancelled": 0, "running": 0, "pending": 0}
    assert final["failed_items"] == [99 + 100 * k for k in range(10)]  # (riding on the counts' writes)
    assert mid["failed_items"] == [99, 199, 299, 399]
    assert final["user"] == "ada" and final["run_id"] == "r-1" and final["count"] == 1000
    assert len(seen) == 2002  # every event was passed on


def test_the_failed_items_kept_are_the_first_ones_and_the_listing_reads_them(run_dir: st.RunDir) -> None:
    record = RunRecord(run_dir, interval=0.0)
    record.create(run_meta(request(200), cluster="c", backend="local"))
    for i in range(200):
        record.observe(TaskFinished("r-1", i, Phase.CANCELLED if i % 2 else Phase.FAILED, 1))
    record.observe(RunFinished("r-1", Phase.FAILED, "Failed"))
    meta = run_dir.read_json(st.RUN_JSON)
    assert meta["failed_items"] == list(range(0, 2 * MAX_FAILED_ITEMS, 2))  # cancelled items are not failures
    assert meta["counts"]["failed"] == 100 and meta["counts"]["cancelled"] == 100
    assert record_info(meta, "c").extra == {"failed_items": list(range(0, 100, 2))}
    assert record_info({"run_id": "r-2"}, "c").extra == {"failed_items": []}


def test_no_write_without_change_and_none_after_the_end(run_dir: st.RunDir) -> None:
    t = FakeTime()
    record = RunRecord(run_dir, interval=1.0, clock=t.clock, schedule=t.schedule)
    record.create(run_meta(request(2), cluster="c", backend="kubernetes"))
    same = Progress("r-1", 2, 0, 0, 0, 2)  # the counts run.json starts with
    for step in range(1, 50):
        t.advance(step * 0.1)
        record.observe(same)
    assert run_dir.writes == [st.RUN_JSON]
    record.observe(Progress("r-1", 2, 1, 0, 1, 0))  # due: written at once
    record.observe(Progress("r-1", 2, 2, 0, 0, 0))  # too soon: a trailing write is scheduled
    record.observe(RunFinished("r-1", Phase.SUCCEEDED, "Completed"))
    t.advance(100.0)  # the trailing write finds the record closed
    record.observe(Progress("r-1", 2, 2, 0, 0, 0))
    assert run_dir.writes == [st.RUN_JSON] * 3
    assert run_dir.read_json(st.RUN_JSON)["phase"] == "Succeeded"


def test_the_diagnosis_jobs_shows_is_recorded_at_the_pace_of_the_counts(run_dir: st.RunDir) -> None:
    t = FakeTime()
    record = RunRecord(run_dir, interval=1.0, clock=t.clock, schedule=t.schedule)
    record.create(run_meta(request(1000), cluster="c", backend="local"))
    for i in range(500):  # retries of a large map: warnings ride on paced writes, not a write each
        t.advance(0.5 + i * 0.01)
        record.observe(Diagnosis("r-1", "Retrying", f"Task {i} failed (exit code 1); retry 1 of 2.", index=i))
    t.advance(6.0)
    assert run_dir.writes == [st.RUN_JSON] * 7  # create, then one a second (1 s ... 6 s) for 500 warnings
    assert run_dir.read_json(st.RUN_JSON)["diagnosis"] == "Task 499 failed (exit code 1); retry 1 of 2."
    record.observe(Diagnosis("r-1", "OOMKilled", "Task 3 ran out of memory.", fatal=True))  # at once
    record.observe(Diagnosis("r-1", "OOMKilled", "Task 4 ran out of memory.", fatal=True))  # the first is the cause
    record.observe(Diagnosis("r-1", "Retrying", "Task 5 failed.", index=5))
    assert run_dir.writes == [st.RUN_JSON] * 8
    record.observe(RunFinished("r-1", Phase.FAILED, "Failed", "3 of 1000 task(s) failed"))
    assert run_dir.read_json(st.RUN_JSON)["diagnosis"] == "Task 3 ran out of memory."


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([RunFinished("r-1", Phase.FAILED, "DeadlineExceeded", "the run exceeded its timeout of 5s")],
         "The run exceeded its timeout of 5s."),
        ([Diagnosis("r-1", "NoGPU", "No GPUs here."), RunFinished("r-1", Phase.SUCCEEDED, "Completed", "1 ok")],
         "No GPUs here."),
        ([RunFinished("r-1", Phase.SUCCEEDED, "Completed", "1 task(s) succeeded")], None),
        ([RunFinished("r-1", Phase.CANCELLED, "Cancelled", "the run was cancelled")], None),
        # "the Job failed" only restates that items failed: the end names them (as the widget does)
        ([Diagnosis("r-1", "FailedIndexes", "The Job failed: Job has failed indexes.", fatal=True),
          RunFinished("r-1", Phase.FAILED, "Failed", "3 of 30 item(s) failed")], "3 of 30 item(s) failed."),
    ],
)
def test_how_a_run_ended_is_its_diagnosis_when_nothing_else_said(
    run_dir: st.RunDir, events: list[object], expected: str | None
) -> None:
    record = RunRecord(run_dir)
    record.create(run_meta(request(1), cluster="c", backend="local"))
    for event in events:
        record.observe(event)  # type: ignore[arg-type]
    assert run_dir.read_json(st.RUN_JSON).get("diagnosis") == expected


def test_open_result_names_the_missing_task(run_dir: st.RunDir) -> None:
    run_dir.write_bytes(st.result_name(0), b"envelope")
    with open_result(run_dir, "r-1", 0) as f:
        assert f.read() == b"envelope"
    with pytest.raises(BackendError, match="run r-1 task 1 left no result"), open_result(run_dir, "r-1", 1):
        pass
    with pytest.raises(BackendError, match="task 0 left no result"), open_result(None, "r-1", 0):
        pass
