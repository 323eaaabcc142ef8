"""Shared fixtures: every test runs with its own kjupyter home, config dir and working dir."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kjupyter import session as session_mod
from kjupyter.config import load_config
from tests.lab.release import JOBS, Releases
from tests.sessions import installed_session

# The fake Kubernetes API server's fixtures and marker, for every test folder.
pytest_plugins = ["tests.fakekube.plugin"]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads the user's real config or writes to the user's data dir."""
    home = tmp_path / "kjhome"
    monkeypatch.setenv("KJUPYTER_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdgconfig"))
    for var in ("KJUPYTER_CONFIG", "KJUPYTER_CLUSTER", "KJUPYTER_STORE", "KJUPYTER_NAMESPACE", "KJUPYTER_LAB_CLUSTER_FILE",
                "KJUPYTER_IMAGE", "KJUPYTER_CONTEXT", "KUBECONFIG"):  # fmt: skip
        if var != "KUBECONFIG" or os.environ.get("KJUPYTER_TEST_KEEP_KUBECONFIG") != "1":
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("kjupyter.config.SYSTEM_CONFIG", tmp_path / "etc" / "config.toml")
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return home


@pytest.fixture
def local_session(isolated_home: Path) -> Iterator[session_mod.Session]:
    """The process-wide session, on the built-in local profile, replaced for this test."""
    with installed_session(load_config()) as sess:
        yield sess


@pytest.fixture(scope="session", autouse=True)
def release_builds(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    """The release builds (tests/lab/release.py) that selected tests use start with the session, in the
    background at the lowest priority: they take ~1 min of CPU, mostly while earlier tests wait."""
    releases = Releases(tmp_path_factory)
    for name in JOBS:
        if any(name in item.fixturenames for item in request.session.items):
            releases.start(name)
    yield releases
    releases.stop()
