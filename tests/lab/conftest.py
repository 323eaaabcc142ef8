"""Fixtures of the JupyterLab tier: a Jupyter server with kjupyter's extension, runs to look at."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakekube.plugin import make_fake_cluster  # noqa: F401

from .browser import launched_page, require_browser
from .release import Job, Releases

pytest.importorskip("jupyter_server", reason="the lab tests need `pip install 'kjupyter[lab,test]'`")
pytest.importorskip("pytest_jupyter", reason="the lab tests need pytest-jupyter[server]")

# pytest_plugins is only allowed in the top-level conftest: bring pytest-jupyter's fixtures
# and its async-test hooks into this tier's namespace instead.
from pytest_jupyter.jupyter_server import *  # noqa: F403


@pytest.fixture
def jp_server_config(isolated_home: Any) -> dict[str, Any]:  # type: ignore[no-redef]
    # isolated_home first: the extension must see the test's own KJUPYTER_HOME and configuration.
    return {"ServerApp": {"jpserver_extensions": {"kjupyter.server": True}}}


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (for backends, not for the UI)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def browser_page(tmp_path: Path) -> Any:
    require_browser()
    with launched_page(1400, 860) as page:
        yield page


@pytest.fixture
def finished_run(local_session: Any) -> Iterator[str]:
    """A call run on the local backend that printed two lines and finished."""

    def hello(n: int) -> int:
        print("hello from the run")
        print(f"n is {n}")
        return n * 2

    future = local_session.submit_call(hello, (21,), {}, {})
    assert future.result(timeout=60) == 42
    yield future.run_id


@pytest.fixture(scope="session")
def release_build(release_builds: Releases) -> Job:
    """``python -m build`` of a clean copy (the sdist, then the wheel from the sdist); ``.wait()`` for it."""
    return release_builds.get("release_build")


@pytest.fixture(scope="session")
def binder_post_build(release_builds: Releases) -> Job:
    """binder/postBuild in a clean copy and a fresh venv; ``.wait()`` for it."""
    return release_builds.get("binder_post_build")
