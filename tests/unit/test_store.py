from __future__ import annotations

import os
import threading
from pathlib import Path

import fsspec
import pytest

from kjupyter import store as st
from kjupyter.errors import StoreError


def test_default_store_is_under_the_data_dir(isolated_home: Path) -> None:
    assert st.default_store_url() == "file://" + str(isolated_home / "runs")


def test_layout_and_atomic_writes(tmp_path: Path) -> None:
    store = st.RunStore(f"file://{tmp_path}/runs")
    run = store.run("alice", "train-abc123")
    run.write_json(st.RUN_JSON, {"run_id": "train-abc123", "created": 1.0})
    run.write_bytes(st.result_name(0), b"x" * 10)
    assert (tmp_path / "runs/alice/train-abc123/run.json").exists()
    assert (tmp_path / "runs/alice/train-abc123/results/0.pkl").read_bytes() == b"x" * 10
    assert store.run_ids("alice") == ["train-abc123"] and store.runs("bob") == []
    with pytest.raises(RuntimeError), run.open_write("payload.pkl") as f:
        f.write(b"half")
        raise RuntimeError("writer died")
    assert not run.exists("payload.pkl")  # a failed write leaves nothing, not half a file
    assert not [p for p in os.listdir(run.path) if ".tmp-" in p]


def test_reader_never_sees_half_a_file(tmp_path: Path) -> None:
    run = st.RunStore(f"file://{tmp_path}").run("u", "r")
    run.write_bytes("blob", b"a" * 1_000_000)
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(len(run.read_bytes("blob")))

    reader = threading.Thread(target=read)
    reader.start()
    for n in range(20):
        run.write_bytes("blob", bytes([n % 256]) * (1_000_000 + n * 1000))
    stop.set()
    reader.join()
    assert seen <= {1_000_000 + n * 1000 for n in range(20)} | {1_000_000}


def test_atomic_create_needs_a_library_that_sends_the_condition(monkeypatch: pytest.MonkeyPatch) -> None:
    assert st.atomic_create("file") and st.atomic_create("local")
    assert not st.atomic_create("memory") and not st.atomic_create("az") and not st.atomic_create("http")
    for protocol, library in (("s3", "s3fs"), ("s3a", "s3fs"), ("gs", "gcsfs"), ("gcs", "gcsfs")):
        monkeypatch.setattr(st, "_version", lambda dist, lib=library: (2024, 12) if dist == lib else ())
        assert st.atomic_create(protocol) and st.atomic_create(protocol.upper())
        # before 2024.12 there is no pipe_file(mode="create"); not installed: no atomic create either
        for older in ((2024, 11), (2024, 2), ()):
            monkeypatch.setattr(st, "_version", lambda dist, v=older: v)
            assert not st.atomic_create(protocol)


def test_installed_library_versions_are_read() -> None:
    assert st._version("fsspec") >= (2024, 2)
    assert st._version("no-such-distribution-kjupyter") == ()


def test_create_exclusive_refuses_where_it_cannot_be_atomic() -> None:
    """A store without an atomic create-if-absent says so; it never overwrites and calls that a claim."""
    fs = fsspec.filesystem("memory")
    run = st.RunDir(fs, "/kj-test-no-atomic/u/r", "memory://kj-test-no-atomic/u/r")
    assert not run.atomic_create
    with pytest.raises(StoreError, match="memory://kj-test-no-atomic/u/r cannot create claims/0 only if it is absent"):
        run.create_exclusive(st.claim_name(0), b"0")
    assert not fs.exists("/kj-test-no-atomic/u/r/claims/0")


def test_local_create_exclusive_first_wins(tmp_path: Path) -> None:
    run = st.RunStore(f"file://{tmp_path}").run("u", "r")
    assert run.atomic_create
    assert run.create_exclusive(st.claim_name(3), b"first")
    assert not run.create_exclusive(st.claim_name(3), b"second")
    assert run.read_bytes(st.claim_name(3)) == b"first" and run.list_names("claims") == ["3"]


def test_missing_protocol_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    registry = importlib.import_module("fsspec.registry")  # the module, not fsspec's `registry` mapping

    monkeypatch.setitem(registry.known_implementations, "s3", {"class": "s3fs.S3FileSystem", "err": "Install s3fs to access S3"})
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if the extra were not installed
    with pytest.raises(StoreError) as info:
        st.RunStore("s3://bucket/runs")
    assert "s3://bucket/runs" in str(info.value) and "pip install 'kjupyter[s3]'" in str(info.value)


def test_unknown_protocol_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="nosuch://x.*cannot be opened"):
        st.RunStore("nosuch://x")


def test_missing_file_is_a_store_error(tmp_path: Path) -> None:
    run = st.RunStore(f"file://{tmp_path}").run("u", "r")
    with pytest.raises(StoreError, match="does not exist"):
        run.read_bytes("payload.pkl")
