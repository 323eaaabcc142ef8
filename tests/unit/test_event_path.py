"""The one event path: per-run lanes keep order and never block other runs; hubs replay a bounded past."""

from __future__ import annotations

import threading
import time

from kjupyter.event_hub import EventHub, Lanes, Timers
from kjupyter.run_events import Diagnosis, LogLine, Phase, PhaseChanged, Progress, RunFinished


def test_a_lane_runs_its_calls_in_order_and_a_blocked_lane_does_not_hold_back_another() -> None:
    lanes = Lanes("test-lanes")
    seen: list[tuple[str, int]] = []
    release = threading.Event()
    b_done = threading.Event()
    lanes.submit("a", release.wait)  # lane a is stuck until released
    for i in range(5):
        lanes.submit("a", lambda i=i: seen.append(("a", i)))
        lanes.submit("b", lambda i=i: seen.append(("b", i)))
    lanes.submit("b", b_done.set)
    assert b_done.wait(5), "lane b waited for lane a"
    assert [x for x in seen if x[0] == "b"] == [("b", i) for i in range(5)]
    assert not [x for x in seen if x[0] == "a"]
    release.set()
    deadline = time.monotonic() + 5
    while len(seen) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [x for x in seen if x[0] == "a"] == [("a", i) for i in range(5)]


def test_a_late_subscriber_gets_the_past_once_then_the_rest_in_order() -> None:
    hub = EventHub("r1", lanes=Lanes("test-hub"))
    got: list[object] = []
    done = threading.Event()
    hub.publish(PhaseChanged("r1", Phase.RUNNING))
    hub.publish(LogLine("r1", "one"))
    hub.subscribe(got.append)
    hub.publish(LogLine("r1", "two"))
    hub.publish(RunFinished("r1", Phase.SUCCEEDED))
    hub.after_delivery(done.set)
    assert done.wait(5)
    assert [type(e).__name__ for e in got] == ["PhaseChanged", "LogLine", "LogLine", "RunFinished"]
    assert [e.text for e in got if isinstance(e, LogLine)] == ["one", "two"]


def test_replay_keeps_the_last_log_lines_and_says_how_many_it_left_out() -> None:
    hub = EventHub("r2", lanes=Lanes("test-bounded"), log_lines=3)
    for i in range(10):
        hub.publish(LogLine("r2", f"line {i}"))
        hub.publish(Progress("r2", 10, succeeded=i))
    hub.publish(Diagnosis("r2", "X", "something"))
    got: list[object] = []
    done = threading.Event()
    hub.subscribe(got.append)
    hub.after_delivery(done.set)
    assert done.wait(5)
    lines = [e.text for e in got if isinstance(e, LogLine)]
    assert lines[0].startswith("[kjupyter] 7 earlier log lines are not shown here")
    assert lines[1:] == ["line 7", "line 8", "line 9"]
    progress = [e for e in got if isinstance(e, Progress)]
    assert [p.succeeded for p in progress] == [9]  # only the latest progress is kept
    assert [e.reason for e in got if isinstance(e, Diagnosis)] == ["X"]


def test_a_failing_subscriber_is_reported_and_the_others_still_get_every_event(capsys) -> None:  # type: ignore[no-untyped-def]
    hub = EventHub("r3", lanes=Lanes("test-broken"))
    good: list[object] = []
    done = threading.Event()

    def broken(event: object) -> None:
        raise RuntimeError("a broken view")

    hub.subscribe(broken)
    hub.subscribe(good.append)
    hub.publish(LogLine("r3", "x"))
    hub.after_delivery(done.set)
    assert done.wait(5)
    assert len(good) == 1
    assert "an event handler failed" in capsys.readouterr().err


def test_timers_run_on_the_lane_of_their_key_and_a_cancelled_one_never_runs() -> None:
    lanes = Lanes("test-timers")
    timers = Timers(lanes)
    ran: list[str] = []
    done = threading.Event()
    names: list[str] = []
    timers.after(0.05, "k", lambda: (ran.append("late"), names.append(threading.current_thread().name), done.set()))
    cancelled = timers.after(0.01, "k", lambda: ran.append("cancelled"))
    timers.after(0.0, "k", lambda: ran.append("first"))
    cancelled.cancel()
    assert done.wait(5)
    assert ran == ["first", "late"]
    assert names[0].startswith("test-timers")
