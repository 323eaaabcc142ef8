"""The motivating workflow on the fake Kubernetes cluster, with the run store in S3 (moto).

Pods get their credentials the way a real cluster gives them: from a Kubernetes
Secret named in the call (``secrets=["aws-creds"]``, mounted as env). Their
store options (the endpoint) arrive in ``KJUPYTER_STORE_OPTIONS``; the step's
own fsspec calls find the endpoint in ``FSSPEC_S3_ENDPOINT_URL``. Afterwards
no credential may appear in a payload, a result, a Job or Pod manifest, or a log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kjupyter import remote
from kjupyter.errors import FileError
from kjupyter.session import Session
from tests.k8s.helpers import kube_session
from tests.servers import FAKE_AWS_ENV, ObjectServer
from tests.store.conftest import _toml_inline
from tests.store.test_workflow import BAD, N_FILES, _csv, _expected, total_of


@pytest.fixture
def cluster_session(tmp_path: Path, make_fake_cluster: Callable[..., Any], s3: ObjectServer,
                    s3_bucket: str) -> Iterator[tuple[Session, Any]]:  # fmt: skip
    cluster = make_fake_cluster()
    cluster.create({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws-creds", "namespace": "default"},
        "type": "Opaque", "stringData": dict(FAKE_AWS_ENV),
    })  # fmt: skip
    extra = f'store = "s3://{s3_bucket}/kj"\nstore_options = {_toml_inline(s3.options)}\n'
    for session in kube_session(tmp_path, cluster.kubeconfig_path, store=False, extra=extra):
        yield session, cluster


@pytest.mark.slow
def test_fan_out_on_the_fake_cluster_with_an_s3_store(cluster_session: tuple[Session, Any], s3: ObjectServer,
                                                      s3_bucket: str) -> None:  # fmt: skip
    _, cluster = cluster_session
    s3.filesystem().pipe({f"{s3_bucket}/raw/part-{i:04d}.csv": _csv(i) for i in range(N_FILES)})
    urls = [f"s3://{s3_bucket}/raw/part-{i:04d}.csv" for i in range(N_FILES)]
    step = remote(total_of).with_options(secrets=["aws-creds"], env={"FSSPEC_S3_ENDPOINT_URL": s3.endpoint})

    results = step.map_files(f"s3://{s3_bucket}/raw/*.csv", chunk_size=25, parallelism=4, return_exceptions=True)
    assert len(results) == N_FILES
    assert [r for i, r in enumerate(results) if i != BAD] == [_expected(i) for i in range(N_FILES) if i != BAD]
    assert isinstance(results[BAD], FileError) and results[BAD].path == urls[BAD]
    with pytest.raises(FileError, match=rf"^{urls[BAD]}: ValueError"):
        step.map_files(urls[BAD - 1 : BAD + 1])  # one file per pod: the bad one fails its pod

    # nothing of the credentials in what was written or sent, except the Secret itself
    fs = s3.filesystem()
    fs.invalidate_cache()
    written = {f"s3://{p}": fs.cat_file(p) for p in fs.find(f"{s3_bucket}/kj")}
    assert any(name.endswith("payload.pkl") for name in written)
    for kind in ("jobs", "pods", "configmaps", "events"):
        for obj in cluster.objects(kind):
            written[f"{kind}/{obj['metadata']['name']}"] = json.dumps(obj).encode()
    for pod in cluster.objects("pods"):
        written[f"log of {pod['metadata']['name']}"] = cluster.logs(pod["metadata"]["name"]).encode()
    assert any(name.startswith("jobs/") for name in written)
    for secret in (FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"], FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"]):
        leaks = [name for name, data in written.items() if secret.encode() in data]
        assert not leaks, f"a credential was written to {leaks}"
