"""Fixtures for the fakekube self-tests. Every test is guarded by a timeout."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakekube.cluster import FakeCluster
from tests.fakekube.plugin import fake_cluster, make_fake_cluster, pytest_configure  # noqa: F401

DEFAULT_TIMEOUT = 30


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "fakekube_tests" in str(item.fspath) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))


@pytest.fixture
def k8s(request: pytest.FixtureRequest) -> Any:
    """Typed API objects on the `fake_cluster`: k8s.core, k8s.batch, k8s.authz, k8s.raw, k8s.cluster."""
    from kubernetes import client  # type: ignore[import-untyped]

    the_cluster: FakeCluster = request.getfixturevalue("fake_cluster")
    api_client = the_cluster.api_client()

    class Apis:
        core = client.CoreV1Api(api_client)
        batch = client.BatchV1Api(api_client)
        authz = client.AuthorizationV1Api(api_client)
        raw = api_client
        cluster = the_cluster

    return Apis
