"""The backend contract on the Kubernetes backend, against the fake cluster (store and inline routes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kjupyter.session import Session
from tests.contract.backend_contract import BackendContract
from tests.fakekube.plugin import fake_cluster, make_fake_cluster  # noqa: F401
from tests.k8s.helpers import kube_session


class TestKubernetesBackendStore(BackendContract):
    timeout = 60.0
    cancel_slack = 1.0

    @pytest.fixture
    def session(self, tmp_path: Path, make_fake_cluster: Callable[..., Any]) -> Iterator[Session]:  # noqa: F811
        cluster = make_fake_cluster()
        yield from kube_session(tmp_path, cluster.kubeconfig_path, store=True)


class TestKubernetesBackendInline(BackendContract):
    timeout = 60.0
    cancel_slack = 1.0

    @pytest.fixture
    def session(self, tmp_path: Path, make_fake_cluster: Callable[..., Any]) -> Iterator[Session]:  # noqa: F811
        cluster = make_fake_cluster()
        yield from kube_session(tmp_path, cluster.kubeconfig_path, store=False)


@pytest.mark.cluster
class TestKubernetesBackendRealCluster(BackendContract):
    """`pytest -m cluster` with KUBECONFIG pointing at a real cluster (image needs kjupyter; store via env)."""

    timeout = 300.0
    cancel_slack = 30.0

    @pytest.fixture
    def session(self, tmp_path: Path) -> Iterator[Session]:
        import os

        from tests.contract.conftest import REAL_KUBECONFIG

        if not REAL_KUBECONFIG:
            pytest.skip(
                "no real cluster: set KUBECONFIG (and KJUPYTER_TEST_IMAGE with kjupyter installed) for -m cluster"
            )
        fields = {"image": f'"{os.environ["KJUPYTER_TEST_IMAGE"]}"'} if os.environ.get("KJUPYTER_TEST_IMAGE") else {}
        yield from kube_session(tmp_path, REAL_KUBECONFIG, store=False, **fields)
