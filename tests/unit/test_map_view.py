"""The failure-first map view and the diagnosis lines, in-process: what the widget's HTML says."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("ipywidgets")

from kjupyter.errors import RunCancelled
from kjupyter.futures import MapFuture
from kjupyter.notebook import map_view as mv
from kjupyter.notebook import widget as widget_mod
from kjupyter.run_events import Diagnosis, Phase, Progress, RunFinished, TaskFinished


def map_future(n: int = 6, *, return_exceptions: bool = False) -> MapFuture:
    return MapFuture("sq-ab12", None, cluster="local", items=[f"file-{i}.csv" for i in range(n)],  # type: ignore[arg-type]
                     return_exceptions=return_exceptions, function="sq")  # fmt: skip


def settle(future: MapFuture, outcomes: dict[int, object]) -> None:
    for i, value in outcomes.items():
        future._results[i], future._have[i] = value, True


def test_the_bar_is_split_by_outcome_and_failed_items_do_not_turn_it_red() -> None:
    html = mv.bar_html({"total": 10, "succeeded": 6, "failed": 1, "cancelled": 2}, running=1)
    widths = dict(re.findall(r"kjupyter-bar-(\w+)' title='\d+ \w+' style='[^']*width:([\d.]+)%", html))
    assert widths == {"done": "60.000", "failed": "10.000", "cancelled": "20.000", "running": "10.000"}
    assert "var(--jp-error-color1" in html and "var(--jp-success-color1" in html  # theme colours (dark theme too)


def test_failed_items_are_listed_with_their_input_exception_and_own_log() -> None:
    future = map_future()
    bad = ValueError("bad row 17\nmore")
    bad.remote_traceback = (  # type: ignore[attr-defined]
        'Traceback (most recent call last):\n  File "/x/kjupyter/runner/entry.py", line 9, in run\n    task()\n'
        '  File "/home/me/etl.py", line 4, in parse\n    raise ValueError(row)\nValueError: bad row 17\n'
    )
    settle(future, {0: 0, 1: bad, 2: RunCancelled("x"), 3: KeyError("k")})
    logs = {1: ["reading file-1.csv", "row 17 is bad"], 3: []}
    html = mv.failed_html(future, lambda i: logs.get(i, []))
    assert html.count("<details class='kjupyter-failed-item'") == 2  # the cancelled item is no failure
    assert "<b>item 1</b> (&#x27;file-1.csv&#x27;): " in html and "ValueError: bad row 17<" in html
    assert (
        "reading file-1.csv\nrow 17 is bad\nTraceback (most recent call last):\n  File &quot;/home/me/etl.py&quot;, line 4"
        in html
    )
    assert "entry.py" not in html and "(no log lines from this item)" in html  # the item's own frames only
    assert "Failed items (2):" in html


def test_a_stopped_map_reads_failed_and_a_map_that_returned_its_errors_reads_ok() -> None:
    stopped = map_future()
    w = widget_mod.RunWidget(stopped)
    settle(
        stopped, {0: 0, 1: 1, 2: ValueError("two"), 3: RunCancelled("x"), 4: RunCancelled("x"), 5: RunCancelled("x")}
    )
    stopped.stopped_at = 2
    stopped.set_exception(stopped._results[2])  # type: ignore[arg-type]
    w(RunFinished("sq-ab12", Phase.CANCELLED, time=stopped.created + 1))
    assert ">Failed<" in w.header.value and "Cancelled" not in w.header.value  # it stopped at its error
    assert "stopped at item 2: ValueError · 2 ok · 3 cancelled" in w.counts.value
    assert "data-index='2'" in w.failed.value

    returned = map_future(4, return_exceptions=True)
    w = widget_mod.RunWidget(returned)
    w(Progress("sq-ab12", 4, succeeded=1, failed=1, running=2))
    assert (
        "0/4 done · 0 ok · 2 running" in w.counts.value
    )  # counts of settled items (the future's), running from Progress
    settle(returned, {0: 0, 1: ValueError("one"), 2: 2, 3: 3})
    returned.set_result(list(returned._results))
    w(TaskFinished("sq-ab12", 1, Phase.FAILED))
    w(RunFinished("sq-ab12", Phase.FAILED, time=returned.created + 1))
    assert ">Succeeded<" in w.header.value and "3 ok · 1 raised (returned)" in w.counts.value


def test_a_diagnosis_is_two_lines_and_one_that_only_says_it_failed_is_not_shown() -> None:
    d = Diagnosis("r", "OOMKilled", "The container ran out of memory (limit 1Gi).", "Raise memory=.", fatal=True)
    html = widget_mod.diagnosis_html(d)
    assert re.search(r"<div style='color:var\(--jp-error-color1[^']*'>⚠ The container ran out of memory \(limit 1Gi\)\."
                     r"</div><div class='kjupyter-hint'[^>]*>hint: Raise memory=\.</div>", html), html  # fmt: skip
    w = widget_mod.RunWidget(map_future())
    w(Diagnosis("r", "FailedIndexes", "The Job failed: Job has failed indexes.", fatal=True))
    assert w.diagnosis.value == "" and w.diagnosis.layout.display == "none"
