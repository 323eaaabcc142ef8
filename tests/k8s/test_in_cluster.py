"""From a notebook that runs in a pod of the cluster (JupyterHub): no kubeconfig, the pod's service account.

The kernel finds the API server from KUBERNETES_SERVICE_HOST/PORT, talks TLS to
it with the service account's CA and token, takes the namespace from the
service account's namespace file, the notebook's image as the pods' image and
the hub user as the user label.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kjupyter import remote
from kjupyter.config import load_config
from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster
from tests.k8s.tls_front import self_signed_certificate, tls_front
from tests.sessions import installed_session

NOTEBOOK_IMAGE = "quay.io/hub/notebook:2026.11"


@pytest.fixture
def in_a_hub_pod(
    tmp_path: Path, make_fake_cluster: Callable[..., FakeCluster], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeCluster]:
    cluster = make_fake_cluster(namespaces=["jhub-alice"])
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    cert, key = self_signed_certificate(tmp_path)
    shutil.copy(cert, sa_dir / "ca.crt")
    (sa_dir / "token").write_text(cluster.token)
    (sa_dir / "namespace").write_text("jhub-alice")
    home = tmp_path / "home"  # no ~/.kube/config, as in a hub pod
    home.mkdir()
    with tls_front(cluster.port, cert, key) as port:
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.delenv("KUBECONFIG", raising=False)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))
        monkeypatch.setenv("KJUPYTER_SA_DIR", str(sa_dir))
        monkeypatch.setenv("JUPYTERHUB_USER", "alice")
        monkeypatch.setenv("JUPYTER_IMAGE_SPEC", NOTEBOOK_IMAGE)
        yield cluster


@pytest.fixture
def hub_session(in_a_hub_pod: FakeCluster, tmp_path: Path) -> Iterator[Session]:
    path = tmp_path / "kjupyter.toml"  # what a hub admin writes: no context, no namespace, no image
    path.write_text(f'default = "hub"\n[clusters.hub]\nbackend = "kubernetes"\nstore = "file://{tmp_path / "store"}"\n')
    with installed_session(load_config(files=[path])) as sess:
        yield sess


def triple(x: int) -> int:
    return 3 * x


def test_a_hub_notebook_runs_with_the_pods_service_account(hub_session: Session, in_a_hub_pod: FakeCluster) -> None:
    assert remote(triple)(14) == 42
    (job,) = in_a_hub_pod.objects("jobs", namespace="jhub-alice")
    assert job["metadata"]["labels"]["kjupyter.io/user"] == "alice"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == NOTEBOOK_IMAGE
    assert in_a_hub_pod.objects("jobs", namespace="default") == []
    assert in_a_hub_pod.requests("create", "jobs", namespace="jhub-alice")  # through TLS, with the SA's token
