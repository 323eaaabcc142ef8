"""Fixtures for store tests: moto's S3 and a GCS emulator (one server each per test session).

Each test gets its own empty bucket, the fake AWS credentials in its
environment, and (through ``s3_profile_session``) a kjupyter session whose
default profile runs on the local backend with its store in that bucket.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kjupyter import session as session_mod
from kjupyter.config import load_config
from tests.servers import ObjectServer, gcs_server, s3_server
from tests.sessions import installed_session

_bucket_numbers = itertools.count()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[ObjectServer]:
    with s3_server() as srv:
        yield srv


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[ObjectServer]:
    with gcs_server() as srv:
        yield srv


@pytest.fixture
def s3(s3_endpoint: ObjectServer, monkeypatch: pytest.MonkeyPatch) -> ObjectServer:
    """The S3 server, with the fake credentials in the environment."""
    for key, value in s3_endpoint.env.items():
        monkeypatch.setenv(key, value)
    return s3_endpoint


@pytest.fixture
def gcs(gcs_endpoint: ObjectServer, monkeypatch: pytest.MonkeyPatch) -> ObjectServer:
    for key, value in gcs_endpoint.env.items():
        monkeypatch.setenv(key, value)
    return gcs_endpoint


def new_bucket(server: ObjectServer) -> str:
    name = f"kjt-{next(_bucket_numbers)}"
    server.filesystem().mkdir(name)
    return name


@pytest.fixture
def s3_bucket(s3: ObjectServer) -> str:
    return new_bucket(s3)


@pytest.fixture(params=["s3", "gs"])
def object_store(request: pytest.FixtureRequest) -> tuple[ObjectServer, str]:
    """Both object stores in turn: ``(server, bucket)``."""
    server: ObjectServer = request.getfixturevalue("s3" if request.param == "s3" else "gcs")
    return server, new_bucket(server)


def write_profile(path: Path, name: str, store: str, options: dict[str, object]) -> Path:
    path.write_text(
        f'default = "{name}"\n[clusters.{name}]\nbackend = "local"\nstore = "{store}"\n'
        f"store_options = {_toml_inline(options)}\n"
    )
    return path


def _toml_inline(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_inline(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


@pytest.fixture
def s3_profile_session(
    s3: ObjectServer, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[session_mod.Session]:
    """A process-wide session whose default profile ("s3") is the local backend with its store in S3."""
    config = write_profile(tmp_path / "kjupyter.toml", "s3", f"s3://{s3_bucket}/kj", s3.options)
    monkeypatch.setenv("KJUPYTER_CONFIG", str(config))
    with installed_session(load_config()) as sess:
        yield sess
