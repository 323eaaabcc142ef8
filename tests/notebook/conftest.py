"""Notebook tests: kernels import this checkout's kjupyter; the fake cluster's fixtures for the Kubernetes variants."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakekube.plugin import make_fake_cluster  # noqa: F401

REPO_ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture(autouse=True)
def kernels_import_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels start in a temporary folder: put this checkout first on their path (not an installed copy)."""
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != REPO_ROOT]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([REPO_ROOT, *rest]))
