"""The bookkeeping of follow-up runs (:class:`kjupyter.reruns.Reruns`), with the backend left out."""

from __future__ import annotations

import io
import threading
from types import SimpleNamespace
from typing import Any

from kjupyter import Retry
from kjupyter import payload as pl
from kjupyter.futures import MapFuture
from kjupyter.reruns import Reruns, Source
from kjupyter.run_events import Diagnosis, Phase, Progress, RunFinished, TaskFinished
from kjupyter.spec import RunSpec

KEY = b"k" * 32


def outcome(run_id: str, index: int) -> io.BytesIO:
    """Task ``index`` of ``run_id`` succeeded with the value ``"<run_id>/<index>"``."""
    body = f"{run_id}/{index}"
    return io.BytesIO(pl.dumps(pl.RESULT, body, key=KEY, purpose=pl.result_purpose(index), outbound=False))


class Recorder(Source):
    """A Source whose reruns are only written down."""

    submitted: list[tuple[str, list[int], int | None]]

    def submit(self, future: Any, run_id: str, positions: list[int], memory: int | None) -> None:
        self.submitted.append((run_id, positions, memory))
        future.reruns.parts[run_id] = positions
        future.live_run_id = run_id
        for j, p in enumerate(positions):
            future._where[p] = (run_id, KEY, j)

    def record(self, run_id: str, **changes: Any) -> None:
        pass


def delivered(future: MapFuture) -> None:
    """Wait until the views have seen every event published so far (they get them on the run's lane)."""
    done = threading.Event()
    future.hub.after_delivery(done.set)
    assert done.wait(5)


def growing_map(n: int) -> tuple[MapFuture, Recorder, list[object]]:
    backend: Any = SimpleNamespace(profile=SimpleNamespace(backend="kubernetes"), cancel=lambda run_id: True,
                                   open_outcome=outcome)  # fmt: skip
    future = MapFuture("m-000001", backend, cluster="kube", items=list(range(n)), return_exceptions=True, run_key=KEY)
    spec = RunSpec.build(memory="1Gi", retries=Retry(3, grow_memory=2.0, max_memory="3Gi"))
    source = Recorder(None, print, "map", list(range(n)), spec, backend, "kube")
    source.submitted = []
    future.reruns = Reruns(future, source, positions=range(n))
    seen: list[object] = []
    future.subscribe(seen.append)
    return future, source, seen


def test_failed_items_are_held_grouped_by_memory_and_counted_over_the_whole_map() -> None:
    future, source, seen = growing_map(4)
    future.handle(TaskFinished("m-000001", 0, Phase.SUCCEEDED, 0))
    future.handle(TaskFinished("m-000001", 1, Phase.FAILED, 137, "OOMKilled", "Item 1 ran out of memory"))
    future.handle(TaskFinished("m-000001", 2, Phase.FAILED, 1, "Error", "item 2 failed"))
    future.handle(TaskFinished("m-000001", 3, Phase.FAILED, 137, "OOMKilled", "Item 3 ran out of memory"))
    future.handle(Progress("m-000001", 4, 1, 3, 0, 0))
    future.handle(RunFinished("m-000001", Phase.FAILED, "Failed", "3 of 4 item(s) failed"))
    assert not future.done()  # held back: the failures are rerun
    assert source.submitted == [("m-000001-a2", [2], 2**30)]  # the exception, with the memory it had, first
    delivered(future)
    assert [e for e in seen if isinstance(e, Progress)][-1].failed == 0  # (held items are pending, not failed)
    # The first rerun's task 0 is item 2; its end starts the next group: items 1 and 3, with 2Gi.
    future.handle(TaskFinished("m-000001-a2", 0, Phase.SUCCEEDED, 0))
    future.handle(RunFinished("m-000001-a2", Phase.SUCCEEDED, "Completed", ""))
    assert source.submitted[1] == ("m-000001-a3", [1, 3], 2 * 2**30)
    future.handle(TaskFinished("m-000001-a3", 1, Phase.FAILED, 137, "OOMKilled", ""))  # item 3 again: capped 3Gi
    future.handle(TaskFinished("m-000001-a3", 0, Phase.SUCCEEDED, 0))  # item 1
    future.handle(RunFinished("m-000001-a3", Phase.FAILED, "Failed", ""))
    assert source.submitted[2] == ("m-000001-a4", [3], 3 * 2**30)
    future.handle(TaskFinished("m-000001-a4", 0, Phase.FAILED, 137, "OOMKilled", ""))  # at the cap: no more
    future.handle(RunFinished("m-000001-a4", Phase.FAILED, "Failed", ""))
    assert len(source.submitted) == 3 and future.done()
    delivered(future)
    # Each value comes from the run that made it, in input order; item 3 is its verdict.
    assert future.result(0)[:3] == ["m-000001/0", "m-000001-a3/0", "m-000001-a2/0"]
    sentences = [e.sentence for e in seen if isinstance(e, Diagnosis)]
    assert sentences == [
        "Item 1 ran out of memory (limit 1Gi); retrying it with 2Gi (attempt 2 of 4).",
        "Item 2 failed (Error); retrying it (attempt 2 of 4).",
        "Item 3 ran out of memory (limit 1Gi); retrying it with 2Gi (attempt 2 of 4).",
        "Item 3 ran out of memory (limit 2Gi); retrying it with 3Gi (attempt 3 of 4).",
        "Item 3 ran out of memory at 3Gi, the cap max_memory=3Gi, so no retry can give it more: raise max_memory= "
        "(and memory=), or make it use less memory.",
    ]
    ends = [e for e in seen if isinstance(e, RunFinished)]
    assert [(e.run_id, e.phase, e.message) for e in ends] == [("m-000001", Phase.FAILED, "1 of 4 item(s) failed")]
    assert future.failures() == [(3, future._verdicts[3])]
    assert str(future._verdicts[3]).startswith("Item 3 ran out of memory at 3Gi, the cap")


def test_a_cancel_between_two_runs_starts_no_rerun() -> None:
    future, source, seen = growing_map(2)
    future.handle(TaskFinished("m-000001", 0, Phase.FAILED, 137, "OOMKilled", ""))
    future.handle(TaskFinished("m-000001", 1, Phase.SUCCEEDED, 0))
    future.cancel()  # (the first run's end is on its way)
    future.handle(RunFinished("m-000001", Phase.FAILED, "Failed", "1 of 2 item(s) failed"))
    assert source.submitted == [] and future.cancelled()
    delivered(future)
    assert [e.phase for e in seen if isinstance(e, RunFinished)] == [Phase.CANCELLED]
