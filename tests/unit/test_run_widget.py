"""The run widget in-process (no kernel): its saved text, its display updates, its header, its log view."""

from __future__ import annotations

import re
import types
from typing import Any

import pytest

pytest.importorskip("ipywidgets")

from kjupyter.futures import MapFuture, RunFuture
from kjupyter.notebook import text_view, wait
from kjupyter.notebook import widget as widget_mod
from kjupyter.run_events import LogLine, Phase, PhaseChanged, RunFinished, TaskFinished


class Handle:
    """A display handle that records the bundles it is updated with."""

    def __init__(self) -> None:
        self.bundles: list[dict[str, Any]] = []

    def update(self, bundle: dict[str, Any], raw: bool = False) -> None:
        assert raw
        self.bundles.append(bundle)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock of the widget and of its text, moved by hand."""
    fake = Clock(1000.0)
    for module in (widget_mod, text_view):
        monkeypatch.setattr(module, "time", types.SimpleNamespace(time=fake.time, monotonic=fake.monotonic))
    return fake


def call_future(created: float = 1000.0) -> RunFuture:
    future = RunFuture("train-ab12", None, cluster="local", function="train")  # type: ignore[arg-type]
    future.created = created
    return future


FALLBACK_WAIT = widget_mod.FALLBACK_INTERVAL + 0.1


def shown(future: RunFuture, clock: Clock) -> tuple[widget_mod.RunWidget, Handle]:
    """A widget as :meth:`RunWidget.show` leaves it, with a recording handle and no flusher thread."""
    w = widget_mod.RunWidget(future)
    w.handle = Handle()
    w._updated_at = clock.now
    return w, w.handle


def finish(w: widget_mod.RunWidget, future: RunFuture, phase: Phase, at: float) -> None:
    future.phase, future.finished_at = phase, at
    w(RunFinished(future.run_id, phase, time=at))


def test_the_report_says_how_the_run_ended_what_failed_and_the_last_log_lines() -> None:
    future = MapFuture("sq-cd34", None, cluster="local", items=[10, 20, 30], function="sq",  # type: ignore[arg-type]
                       return_exceptions=True)  # fmt: skip
    future._results, future._have = [100, KeyError("twenty"), 900], [True, True, True]
    future.set_result(future._results)
    future.phase, future.finished_at = Phase.FAILED, future.created + 2.5
    tail = [f"[{i % 3}] line {i}" for i in range(25, 45)]
    text = text_view.report(future, tail, total_lines=45)
    first = text.splitlines()[0]
    # a map that returned its items' exceptions did what was asked: its words say what raised
    assert first == "kjupyter: run sq-cd34 (sq) on local Succeeded in 2.5s: 2 ok · 1 raised (returned)", text
    assert "Failed items (1):\n  item 1 (20): KeyError: 'twenty'" in text
    assert "Log (last 20 lines; 25 earlier lines: kjupyter logs sq-cd34):\n[1] line 25\n" in text
    assert text.endswith("[2] line 44")
    assert text_view.report_html(text).startswith(f"<pre class='kjupyter-report'><b>{first}</b>\n")

    call = call_future()
    call.set_exception(ValueError("bad input 7\nsecond line"))
    call.phase, call.finished_at = Phase.FAILED, call.created + 1
    assert text_view.report(call, [], 0).endswith("Failed:\n  ValueError: bad input 7")
    assert "Failed:" not in text_view.report(call, [], 0, raised=True)  # the cell's error output says it, once
    running = text_view.report(call_future(), ["one"], 1)
    assert "(saved while the run went on: `kjupyter logs train-ab12` has its log)" in running
    assert "Log (last 1 lines):\none" in running


def test_the_display_carries_the_text_and_is_updated_a_bounded_number_of_times(clock: Clock) -> None:
    future = call_future(clock.now)
    w, handle = shown(future, clock)
    first = w.mimebundle()
    assert first[widget_mod.WIDGET_VIEW]["model_id"] == w.box.model_id
    assert first["text/plain"].startswith("kjupyter: run train-ab12 (train) on local Pending for 0s")
    assert "kjupyter-report" in first["text/html"]

    for i in range(40):
        w(LogLine(future.run_id, f"line {i}"))
        clock.now += 0.2
        w._tick()
    assert handle.bundles == []  # log lines alone never update the display
    future.phase = Phase.RUNNING
    w(PhaseChanged(future.run_id, Phase.RUNNING))
    for _ in range(100):  # 20 s of flusher rounds with lines coming: one update, FALLBACK_INTERVAL after the last
        w(LogLine(future.run_id, "more"))
        clock.now += 0.2
        w._tick()
    assert len(handle.bundles) == 1
    assert "Running for" in handle.bundles[0]["text/plain"]

    future.set_result(1)
    finish(w, future, Phase.SUCCEEDED, clock.now + 0.05)
    assert len(handle.bundles) == 2 and w.updates == 2
    text = handle.bundles[-1]["text/plain"]
    assert re.match(r"kjupyter: run train-ab12 \(train\) on local Succeeded in 2\d\.\ds\n", text), text
    assert "Log (last 20 lines; 120 earlier lines: kjupyter logs train-ab12)" in text and text.endswith("more")
    assert w.cancel_button.layout.display == "none"  # the Cancel button goes when the run ends


def test_the_header_stays_on_one_line_and_is_sent_only_when_it_changes(clock: Clock) -> None:
    future = call_future(clock.now)
    w, _ = shown(future, clock)
    sent: list[str] = []
    w.header.observe(lambda change: sent.append(change["new"]), names="value")
    for _ in range(50):  # 10 s of flusher rounds: the elapsed time ticks once a second
        clock.now += 0.2
        w._tick()
    assert 9 <= len(sent) <= 11, sent
    assert all(re.search(r"kjupyter-elapsed'>\d+s<", v) for v in sent)
    value = w.header.value
    assert "white-space:nowrap;overflow:hidden;text-overflow:ellipsis" in value
    assert "title='Pending · 10s · train-ab12 · on local'" in value
    assert w.header.layout.min_width == "0" and w.header.layout.flex == "1 1 auto"
    assert w.cancel_button.layout.flex == "0 0 auto"
    finish(w, future, Phase.SUCCEEDED, clock.now + 0.26)
    assert "kjupyter-elapsed'>10.3s<" in w.header.value  # the end has its tenths


def test_the_log_is_a_bottom_anchored_column_in_reading_order(clock: Clock) -> None:
    future = call_future(clock.now)
    w, _ = shown(future, clock)
    w.keep_lines = 5
    assert w.out.layout.display == "none"  # no empty box before the first line
    w(LogLine(future.run_id, "\x1b[31mred\x1b[0m <b>"))
    w(LogLine(future.run_id, "10%\r50%\r100%"))
    w._tick()
    layout = w.out.layout
    assert (layout.display, layout.flex_flow, layout.overflow) == ("flex", "column-reverse", "auto")
    assert "kjupyter-log" in w.out._dom_classes
    assert w.out.value.endswith(">red &lt;b&gt;\n100%</pre>")  # oldest first; no colour codes; the last \r wins
    for i in range(8):
        w(LogLine(future.run_id, f"n{i}"))
    w._tick()
    assert "red" in w.out.value and "earlier" not in w.out.value  # up to twice keep_lines before the oldest go
    w(LogLine(future.run_id, "n8"))
    w._tick()
    assert "(6 earlier lines: kjupyter logs train-ab12)</i>\nn4\nn5\nn6\nn7\nn8</pre>" in w.out.value


def test_submit_shows_nothing_outside_a_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a widget was displayed")

    monkeypatch.setattr(widget_mod.RunWidget, "show", never)
    assert not wait.in_notebook()
    assert wait.show_live(call_future()) is None


def test_a_maps_first_failure_updates_the_display_once(clock: Clock) -> None:
    future = MapFuture("sq-cd34", None, cluster="local", items=list(range(6)), function="sq")  # type: ignore[arg-type]
    future.created = clock.now
    w, handle = shown(future, clock)
    for i in (1, 3, 4):
        w(TaskFinished(future.run_id, i, Phase.FAILED))
        clock.now += FALLBACK_WAIT
        w._tick()
    assert len(handle.bundles) == 1  # the first failure only; the others wait for the end


def test_the_header_says_a_run_went_to_a_warm_worker(clock: Clock) -> None:
    future = call_future(clock.now)
    w, _ = shown(future, clock)
    w(PhaseChanged(future.run_id, Phase.RUNNING, message="on warm worker train-xy-0-abcde (started 0.07s after submit)",
                   pod="train-xy-0-abcde"))  # fmt: skip
    assert "on warm worker train-xy-0-abcde (started 0.07s after submit)" in w.header.value
    w(PhaseChanged(future.run_id, Phase.RUNNING, pod="p", node="n"))  # a cold run's header names pod and node
    assert "p / n" in w.header.value
