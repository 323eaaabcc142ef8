"""Fake-cluster fixtures for the Kubernetes backend tests: a fake cluster with one CPU node, and a session
whose default profile runs on it with a ``file://`` store (a test file that needs other nodes or options
defines its own ``cluster`` or ``session``)."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster
from tests.fakekube.plugin import fake_cluster, make_fake_cluster  # noqa: F401
from tests.k8s.helpers import kube_session


@pytest.fixture
def cluster(make_fake_cluster: Callable[..., FakeCluster]) -> FakeCluster:  # noqa: F811
    return make_fake_cluster(nodes=[{"name": "cpu-1", "cpu": "8", "memory": "32Gi"}])


@pytest.fixture
def session(tmp_path: Path, cluster: FakeCluster) -> Iterator[Session]:
    yield from kube_session(tmp_path, cluster.kubeconfig_path, store=True)
