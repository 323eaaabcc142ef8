"""Pure parts of pod logs: inline outcome framing (signed frames), and de-duplication across reconnects."""

from __future__ import annotations

import datetime as dt
import io
import os
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

import pytest

from kjupyter.backends.kubernetes.logs import PodLog, split_timestamp
from kjupyter.inline_frames import INLINE_MARKER, LineFilter, Outcomes
from kjupyter.runner.channels import InlineChannel

KEY = bytes(range(32))


def framed(monkeypatch: pytest.MonkeyPatch, index: int, data: bytes) -> list[str]:
    """The lines the runner prints for an inline outcome (what the pod's log then holds)."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "__stdout__", out)

    def write(f: IO[bytes]) -> None:
        f.write(data)

    InlineChannel("/nonexistent", KEY).write_outcome(index, write)
    return out.getvalue().split("\n")[:-1]


def test_inline_outcome_round_trip_hides_frames_and_keeps_user_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    big = os.urandom(100_000)  # ~17 frame lines of base64
    user: list[str] = []
    outcomes = Outcomes(KEY)
    f = LineFilter(user.append, outcomes)
    frames = framed(monkeypatch, 3, big)
    assert frames[0] == "" and all(line.startswith(INLINE_MARKER) for line in frames[1:]) and len(frames) == 19
    for line in ["hello", "", "world", *frames, "after"]:
        f.feed(line)
    f.close()
    assert user == ["hello", "", "world", "after"]  # the user's blank line stays, the runner's goes
    assert outcomes.get(3) == big and outcomes.get(0) is None


def test_text_printed_without_newline_before_the_frame_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    user: list[str] = []
    outcomes = Outcomes(KEY)
    f = LineFilter(user.append, outcomes)
    frames = framed(monkeypatch, 0, b"value")
    f.feed("progress 99%" + frames[1])  # print(..., end="") then the frame on the same log line
    for line in frames[2:]:
        f.feed(line)
    assert user == ["progress 99%"] and outcomes.get(0) == b"value"


@pytest.mark.parametrize("damage", ["chunk", "size", "missing-end", "missing-chunk"])
def test_a_damaged_frame_gives_no_outcome(monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    outcomes = Outcomes(KEY)
    shown: list[str] = []
    f = LineFilter(shown.append, outcomes)
    frames = framed(monkeypatch, 1, os.urandom(20_000))
    changed = ""
    if damage == "chunk":  # one base64 character of a chunk
        body, _, tag = frames[2].rpartition(" ")
        frames[2] = changed = body[:-1] + ("A" if body[-1] != "A" else "B") + " " + tag
    elif damage == "size":
        fields = frames[-1].split(" ")
        fields[4] = "19999"
        frames[-1] = changed = " ".join(fields)
    elif damage == "missing-end":
        frames = frames[:-1]
    else:
        del frames[2]
    for line in frames:
        f.feed(line)
    assert outcomes.get(1) is None
    assert shown == ([changed] if changed else [])  # a frame that fails its tag is the user's text, never hidden


# --- de-duplication across reconnects ----------------------------------------------------


def stamp(seconds_ago: float) -> str:
    when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"  # nanoseconds, as the kubelet writes them


class Dropped(ConnectionError):
    pass


class FakeResponse:
    def __init__(self, lines: list[str], then_drop: bool, on_end: threading.Event | None) -> None:
        self.lines, self.then_drop, self.on_end = lines, then_drop, on_end

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        for line in self.lines:
            yield (line + "\n").encode()
        if self.then_drop:
            raise Dropped("connection reset by peer")
        if self.on_end is not None:
            self.on_end.set()

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeKube:
    """Answers read_namespaced_pod_log with scripted responses and records the arguments."""

    def __init__(self, script: list[FakeResponse]) -> None:
        self.script = script
        self.calls: list[dict[str, Any]] = []
        self.core = self

    def read_namespaced_pod_log(self, *args: Any, **kwargs: Any) -> None:  # only a name for Kube.call
        raise AssertionError("not called directly")

    def call(self, what: str, fn: Any, *args: Any, stream: bool = False, **kwargs: Any) -> FakeResponse:
        self.calls.append(kwargs)
        return self.script.pop(0)


def test_reconnects_lose_no_line_and_repeat_none() -> None:
    t = [stamp(30 - i) for i in range(10)]
    t[4] = t[3]  # lines 3, 4 and 5 share one timestamp (the kubelet's clock is coarse on some nodes)
    t[5] = t[3]
    lines = [f"{t[i]} line {i}" for i in range(10)]
    log_ended = threading.Event()
    script = [
        FakeResponse(lines[:5], then_drop=True, on_end=None),  # cut after line 4
        FakeResponse(lines[:2], then_drop=True, on_end=None),  # cut again, before anything new (a proxy restart)
        FakeResponse(lines[2:8], then_drop=False, on_end=log_ended),  # the container ends: a clean end
        FakeResponse(lines, then_drop=False, on_end=None),  # the final read: everything, lines 8 and 9 too
    ]
    kube = FakeKube(script)
    got: list[str] = []
    log = PodLog(kube, "ns", "pod-0", "task", got.append, Outcomes())  # type: ignore[arg-type]

    def end_when_the_stream_ends() -> None:
        log_ended.wait(10)
        log.terminated.set()

    threading.Thread(target=end_when_the_stream_ends, daemon=True).start()
    log.run(threading.Semaphore(1))
    assert got == [f"line {i}" for i in range(10)]
    assert not script
    assert [c["follow"] for c in kube.calls] == [True, True, True, False]
    assert "since_seconds" not in kube.calls[0]
    assert all(c["timestamps"] and c["container"] == "task" for c in kube.calls)
    assert all(c["since_seconds"] >= 26 for c in kube.calls[1:])  # from before the last line seen, with margin


def test_split_timestamp() -> None:
    assert split_timestamp("2026-11-23T12:00:00.123Z text with spaces") == (("2026-11-23T12:00:00", 123000000),
                                                                           "text with spaces")  # fmt: skip
    assert split_timestamp("2026-11-23T12:00:00.123456789Z ") == (("2026-11-23T12:00:00", 123456789), "")
    assert split_timestamp("no timestamp here") == (None, "no timestamp here")


# --- when the followed stream is the only request ----------------------------------------------


KEY = bytes(range(32))


def run_log(script: list[FakeResponse], ended: threading.Event, trust_stream: bool) -> tuple[list[str], FakeKube]:
    """Follow a pod whose container ends (as the pod watch reports it) once ``ended`` is set."""
    kube = FakeKube(script)
    got: list[str] = []
    log = PodLog(kube, "ns", "pod-0", "task", got.append, Outcomes(KEY))  # type: ignore[arg-type]

    def end_when_told() -> None:
        ended.wait(10)
        log.end(trust_stream=trust_stream)

    threading.Thread(target=end_when_told, daemon=True).start()
    log.run(threading.Semaphore(1))
    assert not script
    return got, kube


def test_a_stream_that_delivers_the_runners_last_line_is_the_only_request() -> None:
    from kjupyter.inline_frames import eof_line

    lines = [f"{stamp(10 - i)} line {i}" for i in range(6)] + [f"{stamp(3)} {eof_line(0, KEY)}"]
    ended = threading.Event()
    got, kube = run_log([FakeResponse(lines, then_drop=False, on_end=ended)], ended, trust_stream=True)
    assert got == [f"line {i}" for i in range(6)]  # (the signed last line is not shown)
    assert [c["follow"] for c in kube.calls] == [True]


def test_a_stream_that_ends_without_the_runners_last_line_gets_a_final_read() -> None:
    lines = [f"{stamp(10 - i)} line {i}" for i in range(6)]
    ended = threading.Event()
    script = [
        FakeResponse(lines[:4], then_drop=False, on_end=ended),  # rotated away early, then the container ended
        FakeResponse(lines, then_drop=False, on_end=None),  # the final read: the two lines the stream lost
    ]
    got, kube = run_log(script, ended, trust_stream=True)
    assert got == [f"line {i}" for i in range(6)]
    assert [c["follow"] for c in kube.calls] == [True, False]


def test_a_forged_last_line_does_not_end_the_log_early() -> None:
    from kjupyter.inline_frames import eof_line

    forged = eof_line(0, b"\x01" * 32)  # printed by the user's code: not signed with the run's key
    lines = [f"{stamp(10 - i)} line {i}" for i in range(3)] + [f"{stamp(7)} {forged}"]
    ended = threading.Event()
    script = [
        FakeResponse(lines, then_drop=False, on_end=ended),
        FakeResponse([*lines, f"{stamp(6)} line 3"], then_drop=False, on_end=None),
    ]
    got, kube = run_log(script, ended, trust_stream=True)
    assert got[:3] == ["line 0", "line 1", "line 2"] and got[-1] == "line 3"
    assert [c["follow"] for c in kube.calls] == [True, False]


def test_a_stream_that_ends_while_the_container_runs_is_followed_again() -> None:
    from kjupyter.inline_frames import eof_line

    lines = [f"{stamp(10 - i)} line {i}" for i in range(6)] + [f"{stamp(3)} {eof_line(0, KEY)}"]
    ended = threading.Event()
    script = [
        FakeResponse(lines[:3], then_drop=False, on_end=None),  # a clean end, but the container goes on
        FakeResponse(lines, then_drop=False, on_end=ended),  # from before line 2: the rest, then the end
    ]
    got, kube = run_log(script, ended, trust_stream=True)
    assert got == [f"line {i}" for i in range(6)]
    assert [c["follow"] for c in kube.calls] == [True, True] and kube.calls[1]["since_seconds"] >= 1


def test_an_evicted_pods_stream_is_not_trusted_to_be_complete() -> None:
    lines = [f"{stamp(10 - i)} line {i}" for i in range(6)]
    ended = threading.Event()
    script = [
        FakeResponse(lines[:4], then_drop=False, on_end=ended),  # ends as the pod is evicted
        FakeResponse(lines, then_drop=False, on_end=None),  # the final read
    ]
    got, kube = run_log(script, ended, trust_stream=False)
    assert got == [f"line {i}" for i in range(6)]
    assert [c["follow"] for c in kube.calls] == [True, False]
