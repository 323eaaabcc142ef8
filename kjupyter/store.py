"""The run store: where payloads go in and results come out, through fsspec.

It is the only meeting point between the client and the pods. Layout, under
the profile's ``store`` URL::

    <store>/<user>/<run-id>/run.json          metadata: owner, created, kind, tasks, status
    <store>/<user>/<run-id>/payload.pkl       call envelope, or the map's function envelope
    <store>/<user>/<run-id>/items.pkl         a map's inputs: ONE blob, task i reads its slice
    <store>/<user>/<run-id>/results/<i>.pkl   result or error envelope of task i

Writes are atomic: on local disk a temporary file is renamed into place; on
object stores (S3, GCS, ...) an object only becomes visible once complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
from fsspec.spec import AbstractFileSystem

from kjupyter.errors import StoreError

RUN_JSON = "run.json"
PAYLOAD = "payload.pkl"
ITEMS = "items.pkl"

_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}


def result_name(index: int) -> str:
    return f"results/{index}.pkl"


def default_store_url() -> str:
    base = os.environ.get("KJUPYTER_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "kjupyter"
    )
    return "file://" + os.path.join(base, "runs")


def open_fs(url: str, options: dict[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """``(filesystem, path)`` for a store URL, with a clear error when its fsspec extra is missing."""
    url = os.path.expanduser(url) if url.startswith("~") else url
    if url.startswith("file://~"):
        url = "file://" + os.path.expanduser(url[len("file://") :])
    try:
        fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    except (ImportError, ValueError) as exc:
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        extra = _EXTRAS.get(protocol)
        fix = f"pip install 'kjupyter[{extra}]'" if extra else "install the fsspec implementation for it"
        raise StoreError(f"the store {url!r} cannot be opened: {exc}. To use {protocol}:// URLs, {fix}") from None
    return fs, path.rstrip("/")


@dataclass
class RunDir:
    """One run's folder in the store. Every read and write of a run goes through here."""

    fs: AbstractFileSystem
    path: str
    url: str
    writes: list[str] = field(default_factory=list)  # what this process wrote, for tests and stats

    @property
    def local(self) -> bool:
        return "file" in _protocols(self.fs)

    def _full(self, name: str) -> str:
        return f"{self.path}/{name}"

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.open_write(name) as f:
            f.write(data)

    @contextlib.contextmanager
    def open_write(self, name: str) -> Iterator[IO[bytes]]:
        """A binary file that appears at ``name`` only when the block ends without error."""
        target = self._full(name)
        try:
            if self.local:
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                tmp = f"{target}.tmp-{secrets.token_hex(4)}"
                try:
                    with self.fs.open(tmp, "wb") as f:
                        yield f
                    os.replace(tmp, target)  # atomic on POSIX
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            else:
                with self.fs.open(target, "wb") as f:  # object stores publish on close
                    yield f
        except OSError as exc:
            raise _wrap(exc, self.url, name) from None
        self.writes.append(name)

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[IO[bytes]]:
        try:
            with self.fs.open(self._full(name), "rb") as f:
                yield f
        except (OSError, FileNotFoundError) as exc:
            raise _wrap(exc, self.url, name) from None

    def read_bytes(self, name: str, start: int | None = None, end: int | None = None) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._full(name), start=start, end=end))
        except (OSError, FileNotFoundError) as exc:
            raise _wrap(exc, self.url, name) from None

    def exists(self, name: str) -> bool:
        try:
            return bool(self.fs.exists(self._full(name)))
        except OSError as exc:
            raise _wrap(exc, self.url, name) from None

    def write_json(self, name: str, value: dict[str, Any]) -> None:
        self.write_bytes(name, json.dumps(value, indent=1, sort_keys=True).encode())

    def read_json(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.read_bytes(name))
        return data

    def update_meta(self, **changes: Any) -> dict[str, Any]:
        meta = self.read_json(RUN_JSON) if self.exists(RUN_JSON) else {}
        meta.update(changes)
        self.write_json(RUN_JSON, meta)
        return meta

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path, recursive=True)


class RunStore:
    """The store of one profile: ``<url>/<user>/<run-id>/``."""

    def __init__(self, url: str | None, options: dict[str, Any] | None = None) -> None:
        self.url = (url or default_store_url()).rstrip("/")
        self.options = dict(options or {})
        self.fs, self.root = open_fs(self.url, self.options)

    def run(self, user: str, run_id: str) -> RunDir:
        return RunDir(self.fs, f"{self.root}/{user}/{run_id}", f"{self.url}/{user}/{run_id}")

    def run_ids(self, user: str) -> list[str]:
        """Run ids of ``user``, newest first by name order of creation time in run.json."""
        try:
            entries = self.fs.ls(f"{self.root}/{user}", detail=False)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _wrap(exc, self.url, user) from None
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def runs(self, user: str) -> list[dict[str, Any]]:
        out = []
        for run_id in self.run_ids(user):
            rd = self.run(user, run_id)
            with contextlib.suppress(StoreError, ValueError):
                out.append(rd.read_json(RUN_JSON))
        return sorted(out, key=lambda m: m.get("created", 0), reverse=True)


def open_run_dir(url: str, options: dict[str, Any] | None = None) -> RunDir:
    """The runner's view: a run folder given by its full URL."""
    fs, path = open_fs(url, options)
    return RunDir(fs, path, url)


def _protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def _wrap(exc: BaseException, url: str, name: str) -> StoreError:
    where = f"{url}/{name}"
    if isinstance(exc, FileNotFoundError):
        return StoreError(f"{where} does not exist (the bucket or the run may be missing)")
    if isinstance(exc, PermissionError):
        return StoreError(f"access to {where} was denied (403): check the credentials or service account")
    return StoreError(f"store error at {where}: {type(exc).__name__}: {exc}")


def now() -> float:
    return time.time()
