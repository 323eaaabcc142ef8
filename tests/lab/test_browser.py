"""JupyterLab in a real browser: a notebook launches runs; the sidebar shows, follows and cancels them.

Slow tier (~30 s): a real ``jupyter lab`` process, a real kernel, Debian's chromium
driven headless by Python Playwright. Screenshots (light and dark theme) go to
``tests/artifacts/`` for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .browser import KERNEL_READY, command, notebook, run_cell, running_lab, save_screenshot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SETUP = """\
import os, pathlib, time
from kjupyter import remote

GATES = pathlib.Path(os.environ["KJ_TEST_GATES"])

@remote
def square(i):
    print(f"item {i} started", flush=True)
    while not (GATES / f"go-{i}").exists():
        time.sleep(0.05)
    print(f"item {i} done", flush=True)
    return i * i

@remote
def sleeper():
    print("sleeping", flush=True)
    time.sleep(600)

squares = square.submit_map(range(3), parallelism=1)
"launched map"
"""
SECOND = """\
nap = sleeper.submit()
"launched sleeper"
"""


def test_sidebar_follows_logs_and_cancels_on_the_local_backend(
    browser_page: Any, tmp_path: Path, isolated_home: Path
) -> None:
    page = browser_page
    problems: list[str] = []
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.method} {r.url} {r.failure}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    try:
        _scenario(page, tmp_path, isolated_home)
    except BaseException:
        save_screenshot(page, "lab-FAILED.png")
        print("\n".join(problems))
        raise


def _scenario(page: Any, tmp_path: Path, isolated_home: Path) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    env = {
        "KJUPYTER_HOME": str(isolated_home),
        "XDG_CONFIG_HOME": str(tmp_path / "xdgconfig"),
        "KJ_TEST_GATES": str(gates),
    }
    with running_lab(tmp_path / "lab", env) as lab:
        notebook(lab.root / "runs.ipynb", SETUP, SECOND)
        statuses: list[int] = []
        page.on("response", lambda r: statuses.append(r.status) if re.search(r"/kjupyter/runs(\?|$)", r.url) else None)
        lab.start_kernel_for("runs.ipynb")
        page.goto(lab.page_url("lab/tree/runs.ipynb"))
        page.locator(".jp-Notebook").wait_for()
        page.wait_for_function(KERNEL_READY, timeout=60000)
        assert page.locator(".kj-status").inner_text().strip().endswith("local")

        # A map of three gated items appears in the sidebar, Running, with its progress.
        run_cell(page, 0, "launched map")
        page.locator(".jp-SideBar [data-id='kjupyter-runs']").click()
        square = page.locator(".kj-run", has=page.locator(".kj-run-name", has_text="square"))
        square.and_(page.locator("[data-phase='Running']")).wait_for()
        assert "/3 done" in square.locator(".kj-progress-text").inner_text()

        # Its log opens and follows: a line printed after the viewer opened arrives in it.
        square.locator(".kj-logs-button").click()
        log = page.locator(".kj-logs-text")
        log.filter(has_text="item 0 started").wait_for()
        (gates / "go-0").touch()
        log.filter(has_text="item 0 done").wait_for()
        log.filter(has_text="item 1 started").wait_for()
        (gates / "go-1").touch()
        (gates / "go-2").touch()
        log.filter(has_text="item 2 done").wait_for()
        page.locator(".kj-logs-state[data-state='ended']").wait_for()
        square.and_(page.locator("[data-phase='Succeeded']")).wait_for()
        assert "3/3 done" in square.locator(".kj-progress-text").inner_text()
        save_screenshot(page, "lab-runs-log-light.png")

        # A second run is cancelled from the sidebar, after a confirmation.
        run_cell(page, 1, "launched sleeper")
        sleeper = page.locator(".kj-run", has=page.locator(".kj-run-name", has_text="sleeper"))
        sleeper.and_(page.locator("[data-phase='Running']")).wait_for()
        sleeper.locator(".kj-cancel-button").click()
        dialog = page.locator(".jp-Dialog")
        dialog.filter(has_text="Cancel this run?").wait_for()
        save_screenshot(page, "lab-cancel-dialog-light.png")
        dialog.locator("button.jp-mod-warn").click()
        sleeper.and_(page.locator("[data-phase='Cancelled']")).wait_for()

        # Filters: only the cancelled run is left when filtering by that status.
        page.locator("select.kj-filter-status").select_option("Cancelled")
        page.locator(".kj-run").first.and_(page.locator("[data-phase='Cancelled']")).wait_for()
        assert page.locator(".kj-run").count() == 1
        page.locator("select.kj-filter-status").select_option("")

        # The list is refreshed with conditional requests: unchanged lists come back as 304.
        if 304 not in statuses:
            page.wait_for_event("response", lambda r: "/kjupyter/runs" in r.url and r.status == 304, timeout=20000)

        command(page, "apputils:change-theme", {"theme": "JupyterLab Dark"})
        page.wait_for_function("document.body.dataset.jpThemeLight === 'false'")
        page.locator("#jupyterlab-splash").wait_for(state="detached")
        save_screenshot(page, "lab-runs-log-dark.png")
