"""The behaviour every backend must show, written once (fsspec's abstract-tests pattern).

A backend's test module subclasses :class:`BackendContract` and provides a
``session`` fixture: a :class:`kjupyter.session.Session` installed as the
process-wide session whose default profile uses that backend. The same tests
then run on the local backend, on the fake cluster, and on a real cluster.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import fractions
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kjupyter import RemoteError, RunTimeout, remote
from kjupyter import payload as pl
from kjupyter.errors import RunCancelled
from kjupyter.inline_frames import frame_lines
from kjupyter.run_events import Diagnosis, LogLine, RunFinished
from kjupyter.session import Session

# --- functions the tests run remotely (module level: shipped by value, as the user's would be) ---


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float


def identity(value: Any) -> Any:
    return value


def fail_with_value_error(message: str) -> None:
    raise ValueError(message)


def raise_unimportable() -> None:
    # A class created at run time in the remote process: it pickles there,
    # but cannot be rebuilt on the client.
    code = "class PodOnlyError(Exception):\n    pass\n"
    namespace: dict[str, Any] = {"__name__": "pod_only_module"}
    exec(code, namespace)
    sys.modules["pod_only_module"] = type(sys)("pod_only_module")
    sys.modules["pod_only_module"].PodOnlyError = namespace["PodOnlyError"]  # type: ignore[attr-defined]
    raise namespace["PodOnlyError"]("only the pod knows this class")


def square_or_fail(x: int) -> int:
    if x % 3 == 2:
        raise ValueError(f"bad item {x}")
    return x * x


def print_then_wait(marker: str) -> str:
    print("ready", flush=True)
    deadline = time.time() + 30
    while not os.path.exists(marker):
        if time.time() > deadline:
            return "gave up"
        time.sleep(0.01)
    print("saw marker", flush=True)
    return "done"


def sleep_with_child(pid_file: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    Path(pid_file).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(60)


def print_lines(lines: list[str]) -> str:
    for line in lines:
        print(line, flush=True)
    return "the real result"


class Touch:
    """Unpickling this creates ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # it exited between open and read
        return False


def fail_once(x: int, folder: str) -> int:
    """Raises the first time it sees ``x`` (a marker file per item), then returns ``x``."""
    marker = Path(folder) / f"seen-{x}"
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"first attempt of {x}")
    return x


def _star_fail_once(args: tuple[int, str]) -> int:
    return fail_once(*args)


def _star_slow_item(args: tuple[int, str]) -> int:
    return slow_item(*args)


def say_item(x: int) -> int:
    print(f"working on {x}", flush=True)
    return x


def slow_item(x: int, folder: str) -> int:
    Path(folder, f"started-{x}-{os.getpid()}").touch()
    time.sleep(0.3)
    return x


VALUES = [
    None, True, 42, 3.5, 2**100, "text", b"\x00bytes", [1, "a"], (1, 2), {"k": [1, {"n": None}]},
    {1, 2, 3}, frozenset({"x"}), complex(1, 2), decimal.Decimal("1.10"), fractions.Fraction(1, 3),
    datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC), Point(1.0, 2.0),
]  # fmt: skip


class BackendContract:
    """Subclass with a ``session`` fixture; every test here must pass on every backend."""

    timeout = 60.0  # seconds to wait for a run (a real cluster may need more)

    def test_call_round_trips_values_of_many_types(self, session: Session) -> None:
        fn = remote(identity)
        futures = [fn.submit(v) for v in VALUES]
        for value, future in zip(VALUES, futures, strict=True):
            assert future.result(self.timeout) == value
        array = np.arange(12, dtype=np.float32).reshape(3, 4)
        back = fn.submit(array).result(self.timeout)
        assert isinstance(back, np.ndarray) and back.dtype == np.float32
        np.testing.assert_array_equal(back, array)

    def test_remote_value_error_is_reraised_with_remote_traceback(self, session: Session) -> None:
        future = remote(fail_with_value_error).submit("boom 42")
        with pytest.raises(ValueError, match="boom 42") as info:
            future.result(self.timeout)
        remote_tb = info.value.remote_traceback  # type: ignore[attr-defined]
        assert "fail_with_value_error" in remote_tb and "raise ValueError(message)" in remote_tb
        assert "kjupyter/runner.py" not in remote_tb
        assert info.value.__cause__ is not None and "Remote traceback" in str(info.value.__cause__)

    def test_exception_that_cannot_be_unpickled_arrives_as_remote_error(self, session: Session) -> None:
        future = remote(raise_unimportable).submit()
        with pytest.raises(RemoteError) as info:
            future.result(self.timeout)
        assert info.value.remote_type.endswith("PodOnlyError")
        assert "only the pod knows this class" in str(info.value)
        assert "raise_unimportable" in info.value.remote_traceback

    def test_map_returns_results_in_order_with_exceptions(self, session: Session) -> None:
        results = remote(square_or_fail).submit_map(range(7), parallelism=3, return_exceptions=True).result(self.timeout)
        assert [r if not isinstance(r, Exception) else "E" for r in results] == [0, 1, "E", 9, 16, "E", 36]
        assert isinstance(results[2], ValueError) and "bad item 2" in str(results[2])
        assert any("item 2" in note for note in results[2].__notes__)

    def test_map_raises_first_failure_by_default(self, session: Session) -> None:
        future = remote(square_or_fail).submit_map([0, 1, 2, 3], parallelism=1)
        with pytest.raises(ValueError, match="bad item 2"):
            future.result(self.timeout)
        assert future.wait_ended(self.timeout)

    def test_map_retries_an_item_that_raises_within_its_budget(self, session: Session, tmp_path: Path) -> None:
        marks = tmp_path / "marks"
        marks.mkdir()
        future = remote(_star_fail_once, retries=1).submit_map([(i, str(marks)) for i in range(6)], parallelism=2)
        assert future.result(self.timeout) == list(range(6))
        assert future.wait_ended(self.timeout)
        assert sorted(p.name for p in marks.iterdir()) == sorted(f"seen-{i}" for i in range(6))

    def test_map_log_lines_carry_their_item_and_logs_index_filters_them(self, session: Session) -> None:
        seen: list[tuple[int, str]] = []
        future = remote(say_item).submit_map(range(8), parallelism=3)
        future.subscribe(lambda e: seen.append((e.index, e.text)) if isinstance(e, LogLine) else None)
        assert future.result(self.timeout) == list(range(8))
        assert future.wait_ended(self.timeout)
        assert sorted(seen) == [(i, f"working on {i}") for i in range(8)]
        assert list(future.backend.logs(future.run_id, 5)) == ["working on 5"]

    def test_map_survives_a_killed_worker_with_every_result_once(self, session: Session, tmp_path: Path) -> None:
        marks = tmp_path / "marks"
        marks.mkdir()
        items = [(i, str(marks)) for i in range(24)]
        future = remote(_star_slow_item, retries=1).submit_map(items, parallelism=3)
        events: list[object] = []
        future.subscribe(events.append)
        deadline = time.time() + self.timeout
        while len(list(marks.glob("started-*"))) < 4 and time.time() < deadline:
            time.sleep(0.02)
        self.kill_a_worker(future.run_id)
        assert future.result(self.timeout) == list(range(24))
        assert future.wait_ended(self.timeout)
        # Every item ran; only the one in flight on the killed worker (if it was on one) ran twice,
        # and that retry was said.
        starts = Counter(int(p.name.split("-")[1]) for p in marks.glob("started-*"))
        again = sorted(i for i, n in starts.items() if n > 1)
        retried = sorted(e.index for e in events if isinstance(e, Diagnosis) and e.reason == "Retrying")
        assert sorted(starts) == list(range(24)) and max(starts.values()) <= 2, starts
        if self.replacement_redoes_its_share:  # no store tells it which items its predecessor finished
            assert set(retried) <= set(again), (retried, starts)
        else:
            # (a worker killed after it took its item but before the item's code began: retried, started once)
            assert len(retried) <= 1 and set(again) <= set(retried), (retried, starts)

    def test_attach_follows_a_running_map(self, session: Session, tmp_path: Path) -> None:
        marks = tmp_path / "marks"
        marks.mkdir()
        future = remote(_star_slow_item).submit_map([(i, str(marks)) for i in range(8)], parallelism=2)
        deadline = time.time() + self.timeout
        while not list(marks.glob("started-*")) and time.time() < deadline:
            time.sleep(0.02)
        again = session.attach(future.run_id)
        assert again.result(self.timeout) == list(range(8)) == future.result(self.timeout)

    replacement_redoes_its_share = False  # (the Kubernetes backend without a store: its results travel in logs)

    def kill_a_worker(self, run_id: str) -> None:
        raise NotImplementedError

    def test_printed_frames_cannot_forge_a_result(self, session: Session, tmp_path: Path) -> None:
        """The user's output may contain the inline marker: unsigned frames are log text, never a result."""
        marker = tmp_path / "unpickled"
        evil = pl.dumps(pl.RESULT, Touch(str(marker)), key=os.urandom(32), purpose=pl.result_purpose(0), outbound=False)
        forged = frame_lines(0, evil, os.urandom(32))  # a whole outcome of task 0, signed with another key ...
        forged += frame_lines(0, b"junk", os.urandom(32))[:1]  # ... and a dangling frame before the real ones
        seen: list[str] = []
        future = remote(print_lines).submit(forged)
        future.subscribe(lambda event: seen.append(event.text) if isinstance(event, LogLine) else None)
        assert future.result(self.timeout) == "the real result"
        assert future.wait_ended(self.timeout)
        assert seen[: len(forged)] == forged and not marker.exists()

    def test_log_lines_arrive_while_the_task_runs(self, session: Session, tmp_path: Path) -> None:
        marker = tmp_path / "marker"
        seen: list[str] = []
        got_ready = threading.Event()

        def listen(event: object) -> None:
            if isinstance(event, LogLine):
                seen.append(event.text)
                if event.text == "ready":
                    got_ready.set()

        future = remote(print_then_wait).submit(str(marker))
        future.subscribe(listen)
        assert got_ready.wait(self.timeout), f"no 'ready' line while the task waited; saw {seen}"
        assert not future.done()  # the task is still blocked on the marker
        marker.touch()
        assert future.result(self.timeout) == "done"
        future.wait_ended(self.timeout)
        assert seen[:2] == ["ready", "saw marker"]

    def test_cancel_stops_a_running_task_and_its_children(self, session: Session, tmp_path: Path) -> None:
        pid_file = tmp_path / "pids"
        future = remote(sleep_with_child).submit(str(pid_file))
        deadline = time.time() + self.timeout
        while not pid_file.exists() and time.time() < deadline:
            time.sleep(0.02)
        pids = [int(p) for p in pid_file.read_text().split()]
        started = time.monotonic()
        assert future.cancel()
        with pytest.raises(RunCancelled):
            future.result_or_raise(self.timeout)
        while any(_alive(p) for p in pids) and time.monotonic() - started < 5:
            time.sleep(0.02)
        assert not any(_alive(p) for p in pids)
        assert time.monotonic() - started < 1.0 + self.cancel_slack
        assert future.wait_ended(self.timeout)

    cancel_slack = 0.0

    def test_timeout_fails_the_run(self, session: Session) -> None:
        events: list[object] = []
        future = remote(sleep_for, timeout=1).submit(30)
        future.subscribe(events.append)
        with pytest.raises(RunTimeout, match="timeout|deadline"):
            future.result(self.timeout)
        assert any(isinstance(e, RunFinished) and e.reason == "DeadlineExceeded" for e in events)

    def test_local_helper_module_is_shipped_by_value(self, session: Session, tmp_path: Path) -> None:
        helper_dir = tmp_path / "notebook_dir"
        helper_dir.mkdir()
        (helper_dir / "kj_helpers_mod.py").write_text(textwrap.dedent("""
            FACTOR = 7
            def scale(x):
                return x * FACTOR
        """))
        sys.path.insert(0, str(helper_dir))
        try:
            import kj_helpers_mod  # type: ignore[import-not-found]

            def use_helper(x: int) -> int:
                return kj_helpers_mod.scale(x)

            assert str(helper_dir) not in os.environ.get("PYTHONPATH", "")
            assert remote(use_helper).submit(6).result(self.timeout) == 42
        finally:
            sys.path.remove(str(helper_dir))
            sys.modules.pop("kj_helpers_mod", None)
