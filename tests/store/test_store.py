"""The run store on S3 (moto) and GCS (emulator), over real HTTP: round trips, atomicity, errors."""

from __future__ import annotations

import http.server
import importlib
import io
import sys
import threading
from collections.abc import Iterator

import fsspec
import pytest

from kjupyter import credentials, run_keys
from kjupyter import payload as pl
from kjupyter import store as st
from kjupyter.errors import SerializationError, StoreError
from tests.servers import ObjectServer


def _run_store(server: ObjectServer, bucket: str) -> st.RunStore:
    return st.RunStore(f"{server.protocol}://{bucket}/kj", server.options)


def test_round_trip(object_store: tuple[ObjectServer, str]) -> None:
    server, bucket = object_store
    store = _run_store(server, bucket)
    run = store.run("alice", "r-1")
    run.write_json(st.RUN_JSON, {"run_id": "r-1", "user": "alice", "created": 1.0})
    key = run_keys.new_key()
    run.write_bytes(st.PAYLOAD, pl.dumps(pl.CALL, (len, ("abc",), {}), key=key))
    with run.open_write(st.result_name(0)) as f:
        pl.write_envelope(f, pl.RESULT, {"answer": 42, "blob": b"x" * 100_000}, key=key, purpose=pl.result_purpose(0))
    with run.open_read(st.result_name(0)) as f:
        assert pl.load_outcome(f, key=key) == {"answer": 42, "blob": b"x" * 100_000}
    with run.open_read(st.PAYLOAD) as f:
        header, (fn, args, _) = pl.read_envelope(f, key=key)
    assert header.kind == pl.CALL and fn(*args) == 3
    assert run.read_bytes(st.RUN_JSON, 0, 1) == b"{"
    assert store.run_ids("alice") == ["r-1"]
    assert store.runs("alice")[0]["run_id"] == "r-1"
    assert store.run_ids("bob") == []
    # the layout is <store>/<user>/<run-id>/...
    fs = server.filesystem()
    assert sorted(fs.find(f"{bucket}/kj")) == sorted(
        f"{bucket}/kj/alice/r-1/{n}" for n in (st.RUN_JSON, st.PAYLOAD, st.result_name(0))
    )
    run.delete()
    assert store.run_ids("alice") == []


def test_runner_reads_by_url(object_store: tuple[ObjectServer, str]) -> None:
    server, bucket = object_store
    run = _run_store(server, bucket).run("u", "r")
    run.write_bytes(st.ITEMS, b"items")
    same = st.open_run_dir(run.url, server.options)
    assert same.read_bytes(st.ITEMS) == b"items"


def test_failed_write_is_never_published(object_store: tuple[ObjectServer, str]) -> None:
    server, bucket = object_store
    run = _run_store(server, bucket).run("u", "r")
    big = b"y" * (st.BLOCK_SIZE + 10)  # more than one part: a multipart upload is started, then aborted
    for data in (b"small", big):
        with pytest.raises(RuntimeError), run.open_write("results/0.pkl") as f:
            f.write(data)
            raise RuntimeError("the pickler failed half-way")
        assert not run.exists("results/0.pkl")
    run.write_bytes("results/0.pkl", big)
    assert run.read_bytes("results/0.pkl") == big


def test_missing_bucket_is_one_sentence_naming_the_url(object_store: tuple[ObjectServer, str]) -> None:
    server, _ = object_store
    run = _run_store(server, "no-such-bucket").run("u", "r")
    for action in (lambda: run.write_bytes(st.PAYLOAD, b"x"), lambda: run.read_json(st.RUN_JSON)):
        with pytest.raises(StoreError) as info:
            action()
        text = str(info.value)
        assert f"{server.protocol}://no-such-bucket/kj/u/r/" in text
        assert "bucket" in text and "does not exist" in text and "\n" not in text
    with pytest.raises(StoreError, match="bucket .*no-such-bucket"):
        _run_store(server, "no-such-bucket").run_ids("u")


def test_missing_object_names_the_url(object_store: tuple[ObjectServer, str]) -> None:
    server, bucket = object_store
    run = _run_store(server, bucket).run("u", "gone")
    expected = rf"{server.protocol}://{bucket}/kj/u/gone/results/3.pkl does not exist"
    with pytest.raises(StoreError, match=expected), run.open_read(st.result_name(3)) as f:
        f.read()


def _conditional(server: ObjectServer) -> None:
    if server.server == "gcp-storage-emulator":
        pytest.skip("gcp-storage-emulator ignores ifGenerationMatch=0 (it overwrites): install fake-gcs-server")


def _refused_by_an_old_library(server: ObjectServer, run: st.RunDir) -> bool:
    """With s3fs/gcsfs older than 2024.12 (the declared floors) there is no conditional create: it is refused, in
    one sentence, never done unconditionally (workers then share items statically). True when that was checked."""
    if st.atomic_create(server.protocol):
        return False
    assert not run.atomic_create
    with pytest.raises(StoreError, match="cannot create claims/0 only if it is absent: .*2024.12 or newer"):
        run.create_exclusive(st.claim_name(0), b"first")
    assert not run.exists(st.claim_name(0))
    return True


def test_create_exclusive_first_wins(object_store: tuple[ObjectServer, str]) -> None:
    """S3 ``If-None-Match: *`` (moto) and GCS ``ifGenerationMatch=0`` (fake-gcs-server) refuse the second create."""
    server, bucket = object_store
    _conditional(server)
    run = _run_store(server, bucket).run("u", "r")
    if _refused_by_an_old_library(server, run):
        return
    assert run.atomic_create
    assert run.create_exclusive(st.claim_name(0), b"first")
    assert not run.create_exclusive(st.claim_name(0), b"second, other data")
    assert run.read_bytes(st.claim_name(0)) == b"first"
    assert run.list_names("claims") == ["0"]


def test_create_exclusive_race_has_one_winner_per_name(object_store: tuple[ObjectServer, str]) -> None:
    """Two clients (as two worker pods) race to create the same 20 names: each name is won exactly once."""
    server, bucket = object_store
    _conditional(server)
    url = f"{server.protocol}://{bucket}/kj/u/race"
    if _refused_by_an_old_library(server, st.open_run_dir(url, server.options)):
        return
    names = [st.claim_name(i) for i in range(20)]
    won: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def claim(who: str) -> None:
        try:
            fs = fsspec.filesystem(server.protocol, skip_instance_cache=True, **server.options)  # a client of its own
            run = st.RunDir(fs, fs._strip_protocol(url), url)
            start.wait()
            won[who] = [n for n in names if run.create_exclusive(n, who.encode())]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(who,)) for who in won]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not set(won["a"]) & set(won["b"]), won
    assert sorted(won["a"] + won["b"], key=names.index) == names
    run = st.open_run_dir(url, server.options)
    for who, mine in won.items():
        assert all(run.read_bytes(n) == who.encode() for n in mine)  # each object holds its winner's data


class _Forbidden(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that answers every request with 403 AccessDenied."""

    def _deny(self) -> None:
        body = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _deny

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def forbidden_endpoint(s3: ObjectServer) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_access_denied_is_one_sentence_naming_the_url(forbidden_endpoint: str) -> None:
    opts = {"client_kwargs": {"endpoint_url": forbidden_endpoint}, "config_kwargs": {"retries": {"max_attempts": 1}}}
    run = st.RunStore("s3://locked/kj", opts).run("u", "r")
    for action in (lambda: run.write_bytes(st.PAYLOAD, b"x"), lambda: run.read_bytes(st.PAYLOAD)):
        with pytest.raises(StoreError) as info:
            action()
        text = str(info.value)
        assert "s3://locked/kj/u/r/payload.pkl" in text and "denied (403)" in text and "\n" not in text


def test_missing_extra_names_the_url_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(importlib.import_module("fsspec.registry")._registry, "s3", raising=False)
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs now fails, as when it is not installed
    with pytest.raises(StoreError) as info:
        st.RunStore("s3://bucket/kj")
    assert str(info.value) == "the store s3://bucket/kj needs s3fs, which is not installed: pip install 'kjupyter[s3]'"


def test_shareable_options_drop_secrets() -> None:
    opts = {
        "key": "AKIA", "secret": "s3cr3t", "token": "t", "anon": False,
        "client_kwargs": {"endpoint_url": "http://x", "aws_secret_access_key": "s", "region_name": "eu"},
    }  # fmt: skip
    assert credentials.shareable_options(opts) == {
        "anon": False, "client_kwargs": {"endpoint_url": "http://x", "region_name": "eu"}
    }  # fmt: skip


def test_block_writer_cuts_big_writes() -> None:
    class Recorder(io.BytesIO):
        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def write(self, data: object) -> int:
            self.sizes.append(len(memoryview(data)))  # type: ignore[arg-type]
            return super().write(data)  # type: ignore[arg-type]

    rec = Recorder()
    writer = st._BlockWriter(rec, ("file://x", "y", None), block=10)  # type: ignore[arg-type]
    writer.write(b"a" * 25)
    assert rec.sizes == [10, 10, 5] and rec.getvalue() == b"a" * 25
    reader = st._BlockReader(io.BytesIO(b"b" * 25), block=10)
    assert reader.read(25) == b"b" * 25


def test_payload_with_a_local_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789abcdef")
    key = run_keys.new_key()
    data = pl.dumps(pl.CALL, (print, ("tok-0123456789abcdef",), {}), key=key)
    with pytest.raises(SerializationError, match=r"\$MY_SERVICE_TOKEN"):
        credentials.check_no_credentials(data, "the call of print")
    credentials.check_no_credentials(pl.dumps(pl.CALL, (print, ("harmless",), {}), key=key), "the call of print")
