"""JupyterLab in a real browser: how each state of a run reads, in the sidebar and in the notebook.

One ``jupyter lab`` process, one fake Kubernetes cluster and one chromium page serve the whole
module (each test opens its own notebook, with a fresh workspace). The states:

- pending with its diagnosis, timed out while pending, cancelled: rows with their sentence (the
  store's records list them after their Jobs are gone);
- a map with failures: its bar split into done/failed, its failed items with their exception lines;
- a remote exception: the row's sentence is what the run raised;
- a kjupyter output reopened after a kernel restart: its saved summary and log, never
  "Error displaying widget: model not found";
- running.

Each state is saved as a light and a dark screenshot under ``tests/artifacts/lab-states/``, cropped
to the sidebar or the cell. ``bash dev/screenshots.sh`` runs this module and copies the three that
the README shows to ``docs/screenshots/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .browser import (
    ARTIFACTS,
    KERNEL_READY,
    Lab,
    command,
    launched_page,
    notebook,
    require_browser,
    run_cell,
    running_lab,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SHOTS = ARTIFACTS / "lab-states"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# The screenshots the README shows: (state, theme) -> file under docs/screenshots/.
README_SHOTS = {("map-with-failures-sidebar", "light"): "sidebar-map-with-failures.png",
                ("cancelled", "dark"): "sidebar-runs-dark.png",
                ("reopened-after-restart", "light"): "saved-run-after-restart.png"}  # fmt: skip
MODEL_NOT_FOUND = "model not found"


@pytest.fixture
def jp_asyncio_loop() -> None:
    """pytest-jupyter's autouse loop fixture, off for this module: it would close the event loop at the end
    of each test, and here that loop is the module-wide Playwright page's, still running (no jp_* fixture
    is used here)."""
    return None


@pytest.fixture
def jp_server_cleanup() -> None:
    """pytest-jupyter's autouse cleanup of its in-process server, off too: this module starts none."""
    return None


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from tests.fakekube.cluster import FakeCluster

    fake = FakeCluster(nodes=[{"name": "cpu-1", "cpu": "8", "memory": "32Gi"}]).start()
    try:
        yield fake
    finally:
        fake.stop()
    assert not fake.errors, fake.errors


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, cluster: Any) -> Iterator[Lab]:
    require_browser()
    tmp = tmp_path_factory.mktemp("lab-states")
    config = tmp / "xdgconfig" / "kjupyter" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        'default = "local"\n\n[clusters.local]\nbackend = "local"\n\n'
        f'[clusters.fake]\nbackend = "kubernetes"\nkubeconfig = "{cluster.kubeconfig_path}"\n'
        f'image = "python:3.11"\nstore = "file://{tmp / "store"}"\n'
    )
    env = {"KJUPYTER_HOME": str(tmp / "kjhome"), "XDG_CONFIG_HOME": str(tmp / "xdgconfig"),
           "KUBECONFIG": str(cluster.kubeconfig_path), "KJ_TEST_GATES": str(tmp / "gates")}  # fmt: skip
    (tmp / "gates").mkdir()
    with running_lab(tmp / "lab", env) as running:
        yield running


@pytest.fixture(scope="module")
def page(lab: Lab) -> Iterator[Any]:
    with launched_page(1280, 860) as opened:
        yield opened


@pytest.fixture(autouse=True)
def _picture_on_failure(request: pytest.FixtureRequest, page: Any, lab: Lab) -> Iterator[None]:
    problems: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    page.on("console", on_console)
    failed_before = request.session.testsfailed
    yield
    page.remove_listener("console", on_console)
    if request.session.testsfailed > failed_before:  # (this test failed: what the page and the lab said)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"FAILED-{request.node.name}.png"))
        print("\n".join(problems), lab.log.read_text()[-4000:], sep="\n")


def open_notebook(page: Any, lab: Lab, name: str, *cells: str) -> None:
    """A new notebook with ``cells``, its kernel started, opened alone (``reset``: no earlier tabs)."""
    notebook(lab.root / name, *cells)
    lab.start_kernel_for(name)
    page.goto(lab.page_url(f"lab/tree/{name}") + "&reset")
    page.locator(".jp-Notebook").wait_for()
    page.wait_for_function(KERNEL_READY, timeout=60000)


def show_runs(page: Any) -> Any:
    page.locator(".jp-SideBar [data-id='kjupyter-runs']").wait_for()
    command(page, "kjupyter:open-runs")  # (opens the sidebar; a click on its tab would close an open one)
    sidebar = page.locator(".kj-runs")
    sidebar.wait_for()
    return sidebar


def row(page: Any, function: str) -> Any:
    return page.locator(".kj-run", has=page.locator(".kj-run-name", has_text=function))


class SidebarList:
    """The sidebar from its header to its last row (not the empty space below): what a screenshot shows."""

    def __init__(self, page: Any) -> None:
        self.page = page

    def screenshot(self, path: str, animations: str) -> None:
        top = self.page.locator(".kj-runs").bounding_box()
        rows = self.page.locator(".kj-run-list").bounding_box()
        height = rows["y"] + rows["height"] - top["y"] + 6
        self.page.screenshot(path=path, animations=animations,
                             clip={"x": top["x"], "y": top["y"], "width": top["width"], "height": height})  # fmt: skip


class Visible:
    """The part of an element inside the window (a tall cell's rest is not rendered: JupyterLab windows it)."""

    def __init__(self, page: Any, locator: Any) -> None:
        self.page, self.locator = page, locator

    def screenshot(self, path: str, animations: str) -> None:
        box = self.locator.bounding_box()
        view = self.page.viewport_size
        top, bottom = max(box["y"], 0), min(box["y"] + box["height"], view["height"] - 30)  # (not the status bar)
        self.page.screenshot(path=path, animations=animations,
                             clip={"x": box["x"], "y": top, "width": box["width"], "height": bottom - top})  # fmt: skip


def cell_region(page: Any, index: int) -> Visible:
    return Visible(page, page.locator(".jp-Cell").nth(index))


def set_theme(page: Any, dark: bool) -> None:
    command(page, "apputils:change-theme", {"theme": "JupyterLab Dark" if dark else "JupyterLab Light"})
    page.wait_for_function(f"document.body.dataset.jpThemeLight === '{'false' if dark else 'true'}'")
    page.locator("#jupyterlab-splash").wait_for(state="detached")


def shoot(page: Any, state: str, target: Any) -> None:
    """Light and dark screenshots of ``target`` (a locator: the sidebar, a cell) for ``state``."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for theme in ("light", "dark"):
        set_theme(page, theme == "dark")
        page.wait_for_timeout(300)  # (the theme's fonts and colours settle: a picture, not a synchronisation)
        path = SHOTS / f"{state}-{theme}.png"
        target.screenshot(path=str(path), animations="disabled")
        docs_name = README_SHOTS.get((state, theme))
        if docs_name and os.environ.get("KJUPYTER_DOCS_SCREENSHOTS") == "1":
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS / docs_name)
    set_theme(page, False)


def test_pending_timed_out_and_cancelled_runs_are_listed_with_their_sentences(
    page: Any, lab: Lab, cluster: Any
) -> None:
    """Three GPU runs no node can take: one waits (Pending, its diagnosis), one gives up after 3 s (its
    Job deleted; listed from its record), one is cancelled (its Job deleted; listed Cancelled)."""
    setup = (
        "from kjupyter import remote\n\n"
        '@remote(cluster="fake", gpu=1, memory="256Mi", pending_timeout="300s")\n'
        "def wants_gpu():\n    return 1\n\n"
        '@remote(cluster="fake", gpu=1, memory="256Mi", pending_timeout="3s")\n'
        "def gives_up():\n    return 1\n\n"
        '@remote(cluster="fake", gpu=1, memory="256Mi", pending_timeout="300s")\n'
        "def dropped():\n    return 1\n\n"
        "stuck, late, gone = wants_gpu.submit(), gives_up.submit(), dropped.submit()\n"
        'print("submitted", stuck.run_id, late.run_id, gone.run_id)\n'
    )
    open_notebook(page, lab, "pending.ipynb", setup, 'gone.cancel()\nprint("cancel sent")', "stuck.cancel()")
    run_cell(page, 0, "submitted")
    show_runs(page)

    stuck = row(page, "wants_gpu")
    stuck.and_(page.locator("[data-phase='Pending']")).wait_for()
    stuck.locator(".kj-diagnosis", has_text="Insufficient nvidia.com/gpu").wait_for()
    assert stuck.locator(".kj-cancel-button").count() == 1

    late = row(page, "gives_up")
    late.and_(page.locator("[data-phase='Failed']")).wait_for(timeout=60000)
    assert "still pending after 3s" in late.locator(".kj-diagnosis").inner_text()

    gone = row(page, "dropped")
    gone.and_(page.locator("[data-phase='Pending']")).wait_for()
    shoot(page, "pending-with-diagnosis", SidebarList(page))
    run_cell(page, 1, "cancel sent")
    gone.and_(page.locator("[data-phase='Cancelled']")).wait_for()
    assert gone.locator(".kj-cancel-button").count() == 0
    shoot(page, "cancelled", SidebarList(page))

    # The Jobs of the timed-out and the cancelled run are gone; their records keep them listed, with their sentences.
    ids = {f: row(page, f).get_attribute("data-run-id") for f in ("wants_gpu", "gives_up", "dropped")}
    cluster.wait_for(lambda: not any(cluster.get("Job", ids[f]) for f in ("gives_up", "dropped")), timeout=60)
    assert cluster.get("Job", ids["wants_gpu"])
    command(page, "kjupyter:refresh-runs")
    for function, phase in (("wants_gpu", "Pending"), ("gives_up", "Failed"), ("dropped", "Cancelled")):
        row(page, function).and_(page.locator(f"[data-phase='{phase}']")).wait_for()
        assert row(page, function).locator(".kj-diagnosis").inner_text().strip(), function
    run_cell(page, 2, "True")


def test_a_map_with_failures_shows_its_split_bar_and_failed_items(page: Any, lab: Lab) -> None:
    cell = (
        "from kjupyter import remote\n\n"
        "@remote\n"
        "def check(i):\n"
        '    print(f"checking item {i}", flush=True)\n'
        "    if i % 4 == 1:\n"
        '        raise ValueError(f"item {i} is odd")\n'
        "    return i\n\n"
        "results = check.map(range(10), return_exceptions=True)\n"
        'print("raised:", sum(isinstance(r, Exception) for r in results))\n'
    )
    open_notebook(page, lab, "map.ipynb", cell)
    run_cell(page, 0, "raised: 3")
    show_runs(page)
    check = row(page, "check")
    check.and_(page.locator("[data-phase='Failed']")).wait_for()
    assert check.locator(".kj-seg-done").get_attribute("data-count") == "7"
    assert check.locator(".kj-seg-failed").get_attribute("data-count") == "3"
    assert check.locator(".kj-seg-running, .kj-seg-cancelled").count() == 0
    assert check.locator(".kj-diagnosis").inner_text() == "item 1: ValueError: item 1 is odd (+2 more)"
    summary = check.locator(".kj-failures summary")
    assert summary.inner_text() == "3 failed items: 1, 5, 9"
    summary.click()
    check.locator(".kj-failure-list[data-state='loaded']").wait_for()
    assert check.locator(".kj-failure-index").all_inner_texts() == ["item 1", "item 5", "item 9"]
    assert check.locator(".kj-failure-error").all_inner_texts() == [f"ValueError: item {i} is odd" for i in (1, 5, 9)]
    shoot(page, "map-with-failures", cell_region(page, 0))
    shoot(page, "map-with-failures-sidebar", SidebarList(page))


def test_a_remote_exception_reads_as_what_it_raised(page: Any, lab: Lab) -> None:
    cell = (
        "from kjupyter import remote\n\n"
        "@remote\n"
        "def load(name):\n"
        '    print(f"loading {name}", flush=True)\n'
        '    return {"a": 1}[name]\n\n'
        'load("b")\n'
    )
    open_notebook(page, lab, "boom.ipynb", cell)
    run_cell(page, 0, "KeyError")
    show_runs(page)
    load = row(page, "load")
    load.and_(page.locator("[data-phase='Failed']")).wait_for()
    assert load.locator(".kj-diagnosis").inner_text() == "KeyError: 'b'"
    shoot(page, "remote-exception", cell_region(page, 0))


def test_a_saved_run_reads_as_saved_after_a_kernel_restart(page: Any, lab: Lab) -> None:
    """Run, save, restart the kernel, reopen: the output shows the run's saved summary and log lines."""
    cell = (
        "from kjupyter import remote\n\n"
        "@remote\n"
        "def hello(n):\n"
        "    for i in range(n):\n"
        '        print(f"hello line {i}", flush=True)\n'
        "    return n\n\n"
        "hello(5)\n"
    )
    open_notebook(page, lab, "saved.ipynb", cell)
    run_cell(page, 0, "hello line 4")
    output = page.locator(".jp-Cell").nth(0).locator(".jp-OutputArea")
    output.locator(".widget-html, .jupyter-widgets", has_text="hello line 4").first.wait_for()
    command(page, "docmanager:save")
    page.wait_for_function(
        """() => { const p = Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.context);
                   return p && !p.context.model.dirty; }"""
    )
    saved = json.loads((lab.root / "saved.ipynb").read_text())
    bundle = next(o["data"] for o in saved["cells"][0]["outputs"] if "data" in o and "text/html" in o["data"])
    assert "application/vnd.jupyter.widget-view+json" in bundle and "kjupyter-" in "".join(bundle["text/html"])

    # The kernel restarts while the notebook is open: the output keeps the run.
    page.evaluate(
        """async () => { const p = Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.sessionContext);
                         await p.sessionContext.session.kernel.restart(); }"""
    )
    page.wait_for_function(KERNEL_READY, timeout=60000)
    output.filter(has_text="hello line 4").wait_for()
    assert MODEL_NOT_FOUND not in output.inner_text()

    # Reopened from the file (a fresh page; the kernel is new): the saved run, never "model not found".
    page.goto(lab.page_url("lab/tree/saved.ipynb"))
    page.locator(".jp-Notebook").wait_for()
    page.wait_for_function(KERNEL_READY, timeout=60000)
    saved_run = page.locator(".jp-Cell").nth(0).locator(".kj-saved-run")
    saved_run.wait_for()
    text = saved_run.inner_text()
    for i in range(5):
        assert f"hello line {i}" in text, text
    assert "hello" in text.splitlines()[0] and "Succeeded" in text, text  # the summary line, then the log
    page.wait_for_timeout(1500)  # (the widget manager has had its chance to say "model not found")
    assert MODEL_NOT_FOUND not in page.locator(".jp-Notebook").inner_text()
    assert saved_run.is_visible()
    shoot(page, "reopened-after-restart", cell_region(page, 0))


def test_a_running_map_in_the_sidebar_and_the_notebook(page: Any, lab: Lab) -> None:
    gates = Path(lab.env["KJ_TEST_GATES"])
    cell = (
        "import os, pathlib, time\nfrom kjupyter import remote\n\n"
        'GATES = pathlib.Path(os.environ["KJ_TEST_GATES"])\n\n'
        "@remote\n"
        "def step(i):\n"
        '    print(f"step {i} started", flush=True)\n'
        '    while i >= 2 and not (GATES / "go").exists():\n'
        "        time.sleep(0.05)\n"
        "    return i\n\n"
        "step.map(range(6), parallelism=2)\n"
    )
    open_notebook(page, lab, "running.ipynb", cell)
    page.evaluate(
        """() => { const app = window.jupyterapp;
                   const p = Array.from(app.shell.widgets('main')).find(w => w.content?.model?.cells);
                   p.content.activeCellIndex = 0; void app.commands.execute('notebook:run-cell'); }"""
    )
    show_runs(page)
    step = row(page, "step")
    step.and_(page.locator("[data-phase='Running']")).wait_for()
    step.locator(".kj-seg-done[data-count='2']").wait_for()
    step.locator(".kj-seg-running[data-count='2']").wait_for()
    page.locator(".jp-Cell").nth(0).locator(".jp-OutputArea", has_text="step 3 started").wait_for()
    shoot(page, "running", page.locator(".jp-LabShell"))
    (gates / "go").touch()
    step.and_(page.locator("[data-phase='Succeeded']")).wait_for()
    assert step.locator(".kj-seg-done").get_attribute("data-count") == "6"


def test_the_readme_screenshots_are_small() -> None:
    """The README's PNGs stay small (they are in the repository): regenerate with bash dev/screenshots.sh."""
    sizes = {name: (DOCS / name).stat().st_size for name in README_SHOTS.values() if (DOCS / name).exists()}
    assert sorted(sizes) == sorted(README_SHOTS.values()), "run bash dev/screenshots.sh"
    assert all(size < 150_000 for size in sizes.values()), sizes
