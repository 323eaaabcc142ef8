"""Globbing, chunking and per-file errors of ``map_files``; ``whoami`` on GCS and local disk."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kjupyter import fanout as files
from kjupyter import remote, whoami
from kjupyter.errors import StoreError
from kjupyter.session import Session
from tests.servers import ObjectServer


def read_int(url: str) -> int:
    import fsspec

    with fsspec.open(url, "rt") as f:
        return int(f.read())


def test_expand_sorts_files_and_skips_folders(object_store: tuple[ObjectServer, str]) -> None:
    server, bucket = object_store
    fs = server.filesystem()
    fs.pipe({f"{bucket}/raw/b.csv": b"1", f"{bucket}/raw/a.csv": b"2", f"{bucket}/raw/sub/c.csv": b"3",
             f"{bucket}/raw/notes.txt": b"x"})  # fmt: skip
    p = server.protocol
    assert files.expand(f"{p}://{bucket}/raw/*.csv", server.options) == [f"{p}://{bucket}/raw/a.csv",
                                                                       f"{p}://{bucket}/raw/b.csv"]  # fmt: skip
    assert files.expand(f"{p}://{bucket}/raw/**/*.csv", server.options)[-1] == f"{p}://{bucket}/raw/sub/c.csv"
    assert files.expand(f"{p}://{bucket}/raw/none-*.csv", server.options) == []


def test_expand_names_a_missing_bucket(s3: ObjectServer) -> None:
    with pytest.raises(StoreError, match=r"s3://no-bucket-here"):
        files.expand("s3://no-bucket-here/raw/*.csv", s3.options)


def test_per_file_names_the_url_of_a_lost_item() -> None:
    urls = [f"file:///d/{i}" for i in range(3)]
    boom = RuntimeError("pod killed")
    out = files.per_file(urls, [1, boom, 3])
    assert out[0] == 1 and out[2] == 3
    assert isinstance(out[1], files.FileError) and out[1].path == urls[1] and out[1].error is boom


def test_file_step_reports_the_path() -> None:
    def step(url: str) -> int:
        if url.endswith("bad"):
            raise KeyError("no column 'value'")
        return len(url)

    single = files.FileStep(step)
    assert single("ok") == 2
    with pytest.raises(files.FileError) as info:
        single("s3://b/bad")
    assert str(info.value) == "s3://b/bad: KeyError: \"no column 'value'\""
    again = pickle.loads(pickle.dumps(info.value))
    assert again.path == "s3://b/bad" and isinstance(again.error, KeyError) and "Traceback" in again.remote_traceback


def test_map_files_on_the_local_store(local_session: Session, tmp_path: Path) -> None:
    for i in range(6):
        (tmp_path / f"n{i}.txt").write_text("oops" if i == 4 else str(i))
    step = remote(read_int)
    for chunk_size in (None, 4):  # worker processes that take files until none are left; or 4 per process
        out = step.map_files(f"file://{tmp_path}/n*.txt", chunk_size=chunk_size, return_exceptions=True)
        assert out[:4] == [0, 1, 2, 3] and out[5] == 5
        assert isinstance(out[4], files.FileError) and out[4].path == f"file://{tmp_path}/n4.txt"
    with pytest.raises(ValueError, match="chunk_size must be"):
        step.map_files(f"file://{tmp_path}/n*.txt", chunk_size=0)
    with pytest.raises(files.FileError, match=r"n4\.txt: ValueError"):
        step.map_files(f"file://{tmp_path}/n*.txt")
    assert step.map_files(f"file://{tmp_path}/none-*.txt") == []


def test_whoami_on_gcs_and_local_disk(gcs: ObjectServer, tmp_path: Path) -> None:
    bucket_id = whoami("gs://some-bucket", gcs.options)
    assert (bucket_id.protocol, bucket_id.method, bucket_id.principal) == ("gs", "anon", "anonymous")
    local = whoami(f"file://{tmp_path}")
    assert local.method == "uid" and "uid" in local.principal


def test_whoami_names_the_irsa_role(s3: ObjectServer, s3_bucket: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A pod with IRSA has no keys, only a projected token and a role: whoami says it assumed that role."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    token = tmp_path / "token"
    token.write_text("a-projected-service-account-token")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/kjupyter-pods")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", s3.endpoint)  # moto answers AssumeRoleWithWebIdentity
    identity = whoami(f"s3://{s3_bucket}", {**s3.options, "skip_instance_cache": True})  # not the keyed one
    assert identity.method == "assume-role-with-web-identity"
    assert identity.principal.startswith("arn:aws:sts::123456789012:assumed-role/kjupyter-pods/")


def test_whoami_names_the_workload_identity_account(gcs: ObjectServer, tmp_path: Path) -> None:
    """On GKE with Workload Identity a pod has no key file; the metadata server says which account it is."""
    account = "kjupyter-pods@kj-project.iam.gserviceaccount.com"
    with fake_gce_metadata(account, "kj-project") as host:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCE_", "CLOUDSDK_"))}
        env.update(gcs.env, GCE_METADATA_HOST=host, GCE_METADATA_IP=host, CLOUDSDK_CONFIG=str(tmp_path / "gcloud"))
        options = {"endpoint_url": gcs.options["endpoint_url"]}  # no token: google_default, as in a pod
        code = f"from kjupyter import whoami; print(whoami('gs://any-bucket', {options!r}))"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"calls act as {account} (credentials from google_default); project kj-project" in out.stdout, out.stderr


@contextlib.contextmanager
def fake_gce_metadata(account: str, project: str) -> Iterator[str]:
    """The few GCE metadata endpoints google-auth reads, as GKE's metadata server serves them."""
    answers = {
        "/": "",
        "/computeMetadata/v1/project/project-id": project,
        "/computeMetadata/v1/universe/universe-domain": "googleapis.com",
        "/computeMetadata/v1/instance/service-accounts/default/": json.dumps(
            {"email": account, "aliases": ["default"], "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
        ),
        "/computeMetadata/v1/instance/service-accounts/default/token": json.dumps(
            {"access_token": "not-a-real-token", "expires_in": 3600, "token_type": "Bearer"}
        ),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answers.get(self.path.split("?")[0])
            if body is None or self.headers.get("Metadata-Flavor") != "Google":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Type", "application/json" if body.startswith("{") else "text/plain")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
