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


class KubeContract(BackendContract):
    kubeconfig = ""

    def kill_a_worker(self, run_id: str) -> None:
        """Delete one running worker pod of the run, as `kubectl delete pod` would."""
        from kubernetes import client, config

        core = client.CoreV1Api(config.new_client_from_config(self.kubeconfig))
        pods = core.list_namespaced_pod("default", label_selector=f"kjupyter.io/run={run_id}").items
        running = [p for p in pods if p.status.phase == "Running"]
        assert running, "no running worker to kill"
        core.delete_namespaced_pod(running[0].metadata.name, "default")


class TestKubernetesBackendStore(KubeContract):
    timeout = 60.0
    cancel_slack = 1.0

    @pytest.fixture
    def session(self, tmp_path: Path, make_fake_cluster: Callable[..., Any]) -> Iterator[Session]:  # noqa: F811
        cluster = make_fake_cluster()
        self.kubeconfig = cluster.kubeconfig_path
        yield from kube_session(tmp_path, cluster.kubeconfig_path, store=True)


class TestKubernetesBackendInline(KubeContract):
    timeout = 60.0
    cancel_slack = 1.0
    replacement_redoes_its_share = True

    @pytest.fixture
    def session(self, tmp_path: Path, make_fake_cluster: Callable[..., Any]) -> Iterator[Session]:  # noqa: F811
        cluster = make_fake_cluster()
        self.kubeconfig = cluster.kubeconfig_path
        yield from kube_session(tmp_path, cluster.kubeconfig_path, store=False)


@pytest.mark.cluster
class TestKubernetesBackendRealCluster(KubeContract):
    """`pytest -m cluster` with KUBECONFIG pointing at a real cluster (image needs kjupyter; store via env)."""

    timeout = 300.0
    cancel_slack = 30.0
    replacement_redoes_its_share = True  # (store=False below)

    @pytest.fixture
    def session(self, tmp_path: Path) -> Iterator[Session]:
        import os

        from tests.contract.conftest import REAL_KUBECONFIG

        if not REAL_KUBECONFIG:
            pytest.skip(
                "no real cluster: set KUBECONFIG (and KJUPYTER_TEST_IMAGE with kjupyter installed) for -m cluster"
            )
        self.kubeconfig = REAL_KUBECONFIG
        fields = {"image": f'"{os.environ["KJUPYTER_TEST_IMAGE"]}"'} if os.environ.get("KJUPYTER_TEST_IMAGE") else {}
        yield from kube_session(tmp_path, REAL_KUBECONFIG, store=False, **fields)
