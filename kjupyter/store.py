"""The run store: where payloads go in and results come out, through fsspec.

It is the only meeting point between the client and the pods. Layout, under
the profile's ``store`` URL (any fsspec URL: ``file://``, ``s3://``, ``gs://``, ...)::

    <store>/<user>/<run-id>/run.json          metadata: owner, created, kind, tasks, status
    <store>/<user>/<run-id>/payload.pkl       call envelope, or the map's function envelope
    <store>/<user>/<run-id>/items.pkl         a map's inputs: ONE blob, task i reads its slice
    <store>/<user>/<run-id>/results/<i>.pkl   result or error envelope of task i
    <store>/<user>/<run-id>/claims/<k>        a worker pod's claim on a block of map items (its index)
    <store>/<user>/.cache/<key>               a cached call: the run whose results it reuses (kjupyter.cache)

Writes are atomic: on local disk a temporary file is renamed into place; on
object stores an object only becomes visible once its upload completes, and a
write that fails half-way is aborted, never published.

Large objects are streamed in blocks of :data:`BLOCK_SIZE`: a write of one
huge buffer (pickle hands a 200 MB ``bytes`` over in one call) is cut into
blocks before it reaches the filesystem's upload buffer, and a huge read is
assembled block by block, so neither side holds more than one extra copy.

Every error of fsspec, botocore, gcsfs or aiohttp is turned into one
:class:`~kjupyter.errors.StoreError` sentence that names the URL.
Credentials never go through here: store options are for endpoints and
settings, and :func:`shareable_options` strips anything secret before the
options travel to a runner.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, cast

import fsspec
from fsspec.spec import AbstractFileSystem

from kjupyter.errors import IntegrityError, StoreError
from kjupyter.paths import data_home
from kjupyter.store_errors import missing_extra, protocols, short_error, translated
from kjupyter.store_streams import (
    BLOCK_SIZE,
    READ_BLOCK_SIZE,
    _abandon,
    _BlockReader,
    _BlockWriter,
    _TranslatingReader,
)

RUN_JSON = "run.json"
PAYLOAD = "payload.pkl"
ITEMS = "items.pkl"
CACHE_FOLDER = ".cache"  # <store>/<user>/.cache/: cache entries, not a run


def claim_name(block: int) -> str:
    return f"claims/{block}"


def result_name(index: int) -> str:
    return f"results/{index}.pkl"


# Object stores whose create-if-absent is atomic, and the fsspec library (and its first version) that makes it so:
# ``pipe_file(path, data, mode="create")`` sends the upload (one request for small data, such as a claim) with
# S3's ``If-None-Match: *`` (s3fs) or GCS's ``ifGenerationMatch=0`` (gcsfs), and the store answers 412
# (FileExistsError) if the object exists. Both came in 2024.12.0; older versions reject ``mode=``.
# ``open(path, "xb")`` is no substitute: s3fs before 2025.7.0 PUTs a small file unconditionally, and gcsfs's
# open() always makes a resumable upload, whose precondition fake-gcs-server ignores (so no test could tell).
_ATOMIC_CREATE_SINCE = {
    "s3": ("s3fs", (2024, 12)),
    "s3a": ("s3fs", (2024, 12)),
    "gs": ("gcsfs", (2024, 12)),
    "gcs": ("gcsfs", (2024, 12)),
}


def atomic_create(protocol: str) -> bool:
    """Whether :meth:`RunDir.create_exclusive` is atomic on a store of ``protocol``, with the installed libraries.

    The one answer to "may workers claim items through this store": the client asks it of the run's URL
    (``dynamic`` or ``static`` claims) and each worker again of its own libraries (:attr:`RunDir.atomic_create`).
    """
    protocol = protocol.lower()
    if protocol in ("file", "local"):
        return True  # os.link of a complete temporary file: fails if the name exists
    need = _ATOMIC_CREATE_SINCE.get(protocol)
    return need is not None and _version(need[0]) >= need[1]


@functools.cache
def _version(distribution: str) -> tuple[int, ...]:
    """``(year, month)`` of an installed calendar-versioned library; ``()`` if it is not installed."""
    try:
        found = re.match(r"(\d+)\.(\d+)", importlib.metadata.version(distribution))
    except importlib.metadata.PackageNotFoundError:
        return ()
    return (int(found[1]), int(found[2])) if found else ()


def default_store_url() -> str:
    return "file://" + str(data_home() / "runs")


def open_fs(url: str, options: Mapping[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """``(filesystem, path)`` for a store URL, with a clear error when its fsspec extra is missing."""
    url = os.path.expanduser(url) if url.startswith("~") else url
    if url.startswith("file://~"):
        url = "file://" + os.path.expanduser(url[len("file://") :])
    try:
        fs, path = fsspec.core.url_to_fs(url, **dict(options or {}))
    except ImportError:
        raise missing_extra(url) from None
    except Exception as exc:
        raise StoreError(
            f"the store {url} cannot be opened ({short_error(exc)}); check `store` and `store_options`"
        ) from None
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
        return "file" in protocols(self.fs)

    def _full(self, name: str) -> str:
        return f"{self.path}/{name}"

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.open_write(name) as f:
            f.write(data)

    @contextlib.contextmanager
    def open_write(self, name: str) -> Iterator[IO[bytes]]:
        """A binary file that appears at ``name`` only when the block ends without error."""
        target = self._full(name)
        if self.local:
            with translated(self.url, name, self.fs):
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{target}.tmp-{secrets.token_hex(4)}"
            try:
                with translated(self.url, name, self.fs):
                    f = self.fs.open(tmp, "wb")
                with f:
                    yield f
                with translated(self.url, name, self.fs):
                    os.replace(tmp, target)  # atomic on POSIX
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            with translated(self.url, name, self.fs):
                f = self.fs.open(target, "wb", block_size=BLOCK_SIZE)
            try:
                yield cast(IO[bytes], _BlockWriter(f, (self.url, name, self.fs)))
            except BaseException:
                _abandon(f)
                raise
            with translated(self.url, name, self.fs):
                f.close()  # object stores publish on close, and only then
        self.writes.append(name)

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[IO[bytes]]:
        with translated(self.url, name, self.fs):
            f = self.fs.open(self._full(name), "rb", **({} if self.local else {"block_size": READ_BLOCK_SIZE}))
        with f:
            yield f if self.local else cast(IO[bytes], _TranslatingReader(_BlockReader(f), self.url, name))

    def read_bytes(self, name: str, start: int | None = None, end: int | None = None) -> bytes:
        with translated(self.url, name, self.fs):
            return bytes(self.fs.cat_file(self._full(name), start=start, end=end))

    @property
    def atomic_create(self) -> bool:
        """Whether :meth:`create_exclusive` is atomic here (local link; S3 ``If-None-Match: *``; GCS
        ``ifGenerationMatch=0``), see :func:`atomic_create`."""
        return any(atomic_create(p) for p in protocols(self.fs))

    def create_exclusive(self, name: str, data: bytes) -> bool:
        """Create ``name`` with ``data`` unless it exists (atomically, with its content): True if this call made it.

        A StoreError where the store cannot do it atomically (see :attr:`atomic_create`).
        """
        target = self._full(name)
        if not self.atomic_create:
            raise StoreError(
                f"the store {self.url} cannot create {name} only if it is absent: that needs a local folder, "
                "or S3 or GCS with s3fs or gcsfs 2024.12 or newer"
            )
        with translated(self.url, name, self.fs):
            if self.local:
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                tmp = f"{target}.tmp-{secrets.token_hex(4)}"
                with open(tmp, "wb") as f:
                    f.write(data)
                try:
                    os.link(tmp, target)  # fails if it exists; never shows a half-written claim
                except FileExistsError:
                    return False
                finally:
                    os.unlink(tmp)
                return True
            try:
                self.fs.pipe_file(target, data, mode="create")  # one conditional upload; 412 if it exists
            except FileExistsError:
                return False
        return True

    def list_names(self, folder: str) -> list[str]:
        """The names of the objects in ``folder`` of the run (empty if there is none)."""
        with translated(self.url, folder, self.fs):
            try:
                found = self.fs.ls(self._full(folder), detail=False)
            except FileNotFoundError:
                return []
        return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in found]

    def exists(self, name: str) -> bool:
        with translated(self.url, name, self.fs):
            return bool(self.fs.exists(self._full(name)))

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
        with translated(self.url, "", self.fs), contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path, recursive=True)


class RunStore:
    """The store of one profile: ``<url>/<user>/<run-id>/``."""

    def __init__(self, url: str | None, options: Mapping[str, Any] | None = None) -> None:
        self.url = (url or default_store_url()).rstrip("/")
        self.options = dict(options or {})
        self.fs, self.root = open_fs(self.url, self.options)

    def run(self, user: str, run_id: str) -> RunDir:
        return RunDir(self.fs, f"{self.root}/{user}/{run_id}", f"{self.url}/{user}/{run_id}")

    def own_run_url(self, url: str, user: str, run_id: str) -> str:
        """``url`` if it names a run folder directly under ``<store>/<user>/``; IntegrityError if not.

        A URL read from elsewhere (a Job's annotation, which whoever can edit Jobs can change) is
        only followed inside the user's own prefix.
        """
        prefix = f"{self.url}/{user}/"
        rest = url[len(prefix) :] if url.startswith(prefix) else ""
        if not rest or "/" in rest or rest in (".", ".."):
            raise IntegrityError(
                f"run {run_id} names {url} as its store folder, which is not under your own store prefix {prefix}; "
                "kjupyter reads and writes runs only there. Whoever can edit the run's Job may have changed it."
            )
        return url

    def run_ids(self, user: str) -> list[str]:
        """Run ids of ``user``, in name order."""
        try:
            with translated(self.url, user, self.fs):
                entries = self.fs.ls(f"{self.root}/{user}", detail=False, refresh=True)
        except StoreError:
            if not self.bucket_exists():
                raise
            return []  # nobody has written here yet
        names = (str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)
        return sorted(n for n in names if n != CACHE_FOLDER)

    def runs(self, user: str) -> list[dict[str, Any]]:
        """``run.json`` of each of ``user``'s runs, newest first."""
        out = []
        for run_id in self.run_ids(user):
            rd = self.run(user, run_id)
            with contextlib.suppress(StoreError, ValueError):
                out.append(rd.read_json(RUN_JSON))
        return sorted(out, key=lambda m: m.get("created", 0), reverse=True)

    def bucket_exists(self) -> bool:
        with translated(self.url, ""):
            if "file" in protocols(self.fs):
                return True
            return bool(self.fs.exists(self.root.split("/", 1)[0]))


def open_run_dir(url: str, options: Mapping[str, Any] | None = None) -> RunDir:
    """The runner's view: a run folder given by its full URL."""
    fs, path = open_fs(url, options)
    return RunDir(fs, path, url)


def now() -> float:
    return time.time()
