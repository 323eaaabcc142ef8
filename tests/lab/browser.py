"""A real ``jupyter lab`` process with kjupyter's extensions, for the browser tests.

The lab extension is taken from ``kjupyter/labextension`` (built by
``npm run build`` in ``labextension/``) through ``JUPYTER_PATH``, and the server
extension is enabled in a private config dir, so the tests do not depend on how
kjupyter was installed. Every Jupyter directory is private to the test.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import stop_process

REPO = Path(__file__).resolve().parents[2]
BUILT = REPO / "kjupyter" / "labextension"
CHROMIUM = os.environ.get("KJUPYTER_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    env: dict[str, str]
    log: Path

    def page_url(self, path: str = "lab") -> str:
        return f"{self.url}{path}?token={self.token}"

    def start_kernel_for(self, notebook_path: str) -> None:
        """Start the notebook's session and kernel through the REST API, before the page opens it.

        JupyterLab then connects to that kernel instead of asking which one to start.
        """
        body = json.dumps({"path": notebook_path, "type": "notebook", "name": notebook_path,
                           "kernel": {"name": "python3"}}).encode()  # fmt: skip
        request = urllib.request.Request(f"{self.url}api/sessions", data=body, method="POST",
                                         headers={"Authorization": f"token {self.token}",
                                                  "Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201, response.status


def require_browser() -> None:
    """Skip loudly when the browser or the built extension is missing; fail when the rest is.

    With chromium and the built extension present (or in CI, where ``dev/install-lab.sh``
    installs both), the browser tests must run: anything else missing is a failure.
    """
    must_run = bool(os.environ.get("CI")) or (Path(CHROMIUM).exists() and (BUILT / "package.json").exists())
    hint = "bash dev/install-lab.sh"
    problems = []
    if not Path(CHROMIUM).exists():
        problems.append(f"no browser at {CHROMIUM}: apt-get install -y chromium (or set KJUPYTER_CHROMIUM)")
    if not (BUILT / "package.json").exists():
        problems.append("the lab extension is not built: cd labextension && npm ci && npm run build")
    for module, package in (("playwright.sync_api", "playwright (never `playwright install`)"),
                            ("jupyterlab", "jupyterlab")):  # fmt: skip
        try:
            importlib.import_module(module)
        except ImportError:
            problems.append(f"no {module}: pip install {package}")
    if problems:
        message = "; ".join(problems) + f" ({hint} installs all of it)"
        if must_run:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_lab(tmp: Path, extra_env: dict[str, str]) -> Iterator[Lab]:
    jpath = tmp / "jupyter-path"
    (jpath / "labextensions").mkdir(parents=True)
    (jpath / "labextensions" / "kjupyter").symlink_to(BUILT)
    config = tmp / "jupyter-config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"kjupyter.server": True}}})
    )
    settings = tmp / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    root = tmp / "notebooks"
    root.mkdir()
    token, port = secrets.token_hex(16), _free_port()
    env = dict(os.environ)
    env.update(extra_env)
    # The server and its kernels import kjupyter from this checkout, however kjupyter was installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update({
        "JUPYTER_PATH": str(jpath), "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_DATA_DIR": str(tmp / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"), "JUPYTERLAB_SETTINGS_DIR": str(tmp / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-workspaces"), "JUPYTER_PLATFORM_DIRS": "1",
    })  # fmt: skip
    log = tmp / "jupyter-lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--expose-app-in-browser",
           "--LabApp.news_url=", "--ServerApp.allow_root=True"]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:  # a readiness probe of a separate process, not UI synchronisation
            if proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"jupyter lab did not answer in 60 s:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.2)
        yield Lab(url, token, root, env, log)
    finally:
        stop_process(proc, 15)


def notebook(path: Path, *cells: str) -> None:
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
                     "source": src} for i, src in enumerate(cells)],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}  # fmt: skip
    path.write_text(json.dumps(nb))


def save_screenshot(page: object, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / name
    page.screenshot(path=str(target))  # type: ignore[attr-defined]
    return target


KERNEL_READY = """() => {
    const app = window.jupyterapp;
    const panel = app && Array.from(app.shell.widgets('main')).find(w => w.sessionContext);
    const kernel = panel?.sessionContext?.session?.kernel;
    return kernel?.connectionStatus === 'connected' && kernel?.status === 'idle';
}"""


def run_cell(page: Any, index: int, expect: str | re.Pattern[str]) -> None:
    """Select cell ``index`` of the open notebook, run it, and wait for its output."""
    page.evaluate(
        """(i) => {
            const app = window.jupyterapp;
            const panel = Array.from(app.shell.widgets('main')).find(w => w.content?.model?.cells);
            app.shell.activateById(panel.id);
            panel.content.activeCellIndex = i;
            void app.commands.execute('notebook:run-cell');
        }""",
        index,
    )
    # (.first: the text may be in more than one output, say a widget's and the error the cell raised)
    page.locator(".jp-Cell").nth(index).locator(".jp-OutputArea-output", has_text=expect).first.wait_for(timeout=30000)


def command(page: Any, name: str, args: dict[str, Any] | None = None) -> None:
    page.evaluate("([n, a]) => window.jupyterapp.commands.execute(n, a)", [name, args or {}])


@contextlib.contextmanager
def launched_page(width: int, height: int) -> Iterator[Any]:
    """A Playwright page in Debian's chromium (headless), closed with its browser at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.set_default_timeout(30000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
