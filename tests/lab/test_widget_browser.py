"""The run widget in a real browser (JupyterLab, chromium): the log follows new lines unless the user scrolled
it up, and the header stays on one line in a narrow output.

Slow tier: a real ``jupyter lab`` process and kernel, Debian's chromium driven headless by Python
Playwright. The widget is fed events from the notebook itself (no run: what is tested is its view).
It needs no lab extension: a checkout without a built one runs it too.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

from .browser import CHROMIUM, KERNEL_READY, launched_page, notebook, run_cell, running_lab, save_screenshot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SETUP = """\
from kjupyter.futures import RunFuture
from kjupyter.notebook.widget import RunWidget
from kjupyter.run_events import LogLine, Phase, PhaseChanged

future = RunFuture("a-rather-long-run-name-x7k2", None, cluster="a-cluster-with-a-long-name", function="demo")
view = RunWidget.show(future)
view(PhaseChanged(future.run_id, Phase.RUNNING, pod="a-rather-long-run-name-x7k2-0-abcde", node="node-with-a-long-name-1"))
n = 0

def add(k):
    global n
    for _ in range(k):
        view(LogLine(future.run_id, f"line {n}"))
        n += 1
    return f"added up to line {n - 1}"

# The phase change makes the display's saved text due (sent once, FALLBACK_INTERVAL later), and JupyterLab
# renders a widget's view anew on each display update: wait for it here, so that it does not land while
# the user has scrolled (no later event makes another one due).
import time
deadline = time.monotonic() + 30
while view.updates < 1 and time.monotonic() < deadline:
    time.sleep(0.1)
f"ready ({view.updates} display update)"
"""
BLOCKING = """\
import time
from kjupyter import remote

@remote
def ticker(k):
    for i in range(k):
        print(f"tick {i}", flush=True)
    time.sleep(1)
    return k

ticker(60)
"""

# Where the log box is scrolled to, in pixels from its top and from its bottom (the box is a
# reversed column, whose scrollTop counts from the bottom: computed from the geometry instead).
POSITION = """(cell) => {
    const e = document.querySelectorAll('.jp-Cell')[cell].querySelector('.kjupyter-log');
    const reversed = getComputedStyle(e).flexDirection === 'column-reverse';
    const fromTop = reversed ? e.scrollHeight - e.clientHeight + e.scrollTop : e.scrollTop;
    return {fromTop: Math.round(fromTop), fromBottom: Math.round(e.scrollHeight - e.clientHeight - fromTop),
            overflows: e.scrollHeight > e.clientHeight + 20};
}"""

SAVED_TEXT = """(cell) => {
    const panel = Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.content?.model?.cells);
    const outputs = panel.content.widgets[cell].model.outputs;
    for (let i = 0; i < outputs.length; i++) {
        const data = outputs.get(i).data;
        if ('application/vnd.jupyter.widget-view+json' in data) return data['text/plain'];
    }
    return null;
}"""


@pytest.fixture
def page() -> Any:
    for module in ("playwright", "jupyterlab"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"no {module}: pip install 'kjupyter[lab,test]'")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no browser at {CHROMIUM}: apt-get install -y chromium (or set KJUPYTER_CHROMIUM)")
    with launched_page(1200, 900) as page:
        yield page


def add_lines(page: Any, last: int) -> None:
    """Run the cell that adds 20 lines, and wait until the log shows line ``last``."""
    run_cell(page, 1, f"added up to line {last}")
    page.locator(".kjupyter-log", has_text=f"line {last}").wait_for()
    page.wait_for_timeout(300)  # let the browser lay the new lines out (and scroll, or not) before measuring


def test_the_log_follows_new_lines_until_the_user_scrolls_up(page: Any, tmp_path: Path, isolated_home: Path) -> None:
    with running_lab(tmp_path / "lab", {"KJUPYTER_HOME": str(isolated_home)}) as lab:
        notebook(lab.root / "widget.ipynb", SETUP, "add(20)", BLOCKING)
        lab.start_kernel_for("widget.ipynb")
        page.goto(lab.page_url("lab/tree/widget.ipynb"))
        page.locator(".jp-Notebook").wait_for()
        page.wait_for_function(KERNEL_READY, timeout=60000)
        try:
            run_cell(page, 0, "ready (1 display update)")
            last = -1
            for _ in range(4):  # the log overflows its box: the newest line stays in view
                last += 20
                add_lines(page, last)
                position = page.evaluate(POSITION, 0)
                assert position["fromBottom"] <= 2, position
            assert position["overflows"], position

            log = page.locator(".kjupyter-log")
            log.hover()
            page.mouse.wheel(0, -200)  # the user scrolls up to read: the box stays where they put it
            page.wait_for_timeout(500)
            reading = page.evaluate(POSITION, 0)
            assert reading["fromBottom"] > 100, reading
            for _ in range(2):
                last += 20
                add_lines(page, last)
                position = page.evaluate(POSITION, 0)
                assert abs(position["fromTop"] - reading["fromTop"]) <= 2, (reading, position)
                assert position["fromBottom"] > reading["fromBottom"], (reading, position)

            log.hover()
            page.mouse.wheel(0, 100000)  # back at the bottom: it follows again
            page.wait_for_timeout(500)
            for _ in range(2):
                last += 20
                add_lines(page, last)
                position = page.evaluate(POSITION, 0)
                assert position["fromBottom"] <= 2, position
            text = log.inner_text()
            assert text.index("line 0\n") < text.index(f"line {last}")  # oldest first, as printed

            save_screenshot(page, "widget-log.png")

            # A narrow output (a split view): the header keeps one line, cut with an ellipsis, beside Cancel.
            page.set_viewport_size({"width": 560, "height": 900})
            page.wait_for_timeout(500)
            header = page.locator(".kjupyter-header")
            box = header.bounding_box()
            line_height = float(header.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 20"))
            assert box is not None and box["height"] < 1.6 * line_height, (box, line_height)
            assert header.evaluate("e => e.scrollWidth > e.clientWidth"), "the header should be cut in a narrow view"
            button = page.get_by_role("button", name="Cancel")
            button_box = button.bounding_box()
            assert button_box is not None and button_box["x"] >= box["x"] + box["width"] - 1, (box, button_box)
            save_screenshot(page, "widget-narrow.png")

            # A real run that blocks its cell: when it ends, the display is updated with its text, which
            # makes JupyterLab draw the widget anew: one widget, at the bottom of its log, without Cancel.
            page.set_viewport_size({"width": 1200, "height": 900})
            run_cell(page, 2, re.compile(r"kjupyter: run ticker-\w+ on local Succeeded in"))
            cell = page.locator(".jp-Cell").nth(2)
            cell.locator(".kjupyter-log", has_text="tick 59").wait_for()
            page.wait_for_timeout(500)
            assert cell.locator(".kjupyter-log").count() == 1 and cell.locator(".kjupyter-header").count() == 1
            assert "Succeeded" in cell.locator(".kjupyter-header").inner_text()
            assert (
                cell.get_by_role("button", name="Cancel").count() == 0
                or not cell.get_by_role("button", name="Cancel").is_visible()
            )
            position = page.evaluate(POSITION, 2)
            assert position["overflows"] and position["fromBottom"] <= 2, position
            saved = page.evaluate(SAVED_TEXT, 2)  # what JupyterLab writes to the .ipynb for that output
            assert re.match(r"kjupyter: run ticker-\w+ \(ticker\) on local Succeeded in", saved), saved
            assert saved.endswith("tick 59"), saved
            cell.locator(".kjupyter-log").scroll_into_view_if_needed()
            save_screenshot(page, "widget-ended.png")
        except BaseException:
            save_screenshot(page, "widget-FAILED.png")
            raise
