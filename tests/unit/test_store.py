from __future__ import annotations

import os
import threading
from pathlib import Path

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
