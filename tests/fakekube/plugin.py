"""pytest fixtures: `fake_cluster` (function-scoped) and the factory `make_fake_cluster`.

Use from a conftest with `pytest_plugins = ["tests.fakekube.plugin"]` (root conftest only) or by importing
`fake_cluster, make_fake_cluster, pytest_configure` from this module.

    @pytest.mark.fake_cluster(nodes=[{"name": "gpu-1", "gpu": 2}], images_missing=("*private*",))
    def test_x(fake_cluster): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .cluster import FakeCluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fake_cluster(**options): FakeCluster options for the fake_cluster fixture")


@pytest.fixture
def make_fake_cluster() -> Iterator[Callable[..., FakeCluster]]:
    """Factory: make_fake_cluster(**options) -> a started FakeCluster, stopped at teardown."""
    clusters: list[FakeCluster] = []

    def make(**options: Any) -> FakeCluster:
        cluster = FakeCluster(**options).start()
        clusters.append(cluster)
        return cluster

    yield make
    problems: list[str] = []
    for cluster in clusters:
        cluster.stop()
        problems += cluster.errors
    if problems:
        pytest.fail("fakekube internal errors:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def fake_cluster(request: pytest.FixtureRequest, make_fake_cluster: Callable[..., FakeCluster]) -> FakeCluster:
    """A started fake cluster (3 nodes of 4 cpu / 16Gi unless a `fake_cluster` marker or param says otherwise)."""
    options: dict[str, Any] = {}
    marker = request.node.get_closest_marker("fake_cluster")
    if marker is not None:
        options.update(marker.kwargs)
    if getattr(request, "param", None):
        options.update(request.param)
    return make_fake_cluster(**options)
