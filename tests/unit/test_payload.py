from __future__ import annotations

import contextlib
import io
import socket
import threading

import pytest

from kjupyter import payload as pl
from kjupyter.errors import RemoteError, SerializationError, SpecError, VersionMismatchError


def test_call_envelope_carries_versions_and_round_trips() -> None:
    data = pl.dump_call(divmod, (7, 2), {})
    header, (fn, args, kwargs) = pl.loads(data)
    assert header.kind == "call" and header.python == pl.client_versions()["python"]
    assert header.cloudpickle == pl.client_versions()["cloudpickle"]
    assert fn(*args, **kwargs) == (3, 1)


def test_version_mismatch_names_both_sides_and_the_fix() -> None:
    data = pl.dump_call(divmod, (7, 2), {})
    forged = data.replace(b'"python":"3.11', b'"python":"3.8', 1).replace(b'"cloudpickle":"', b'"cloudpickle":"1.', 1)
    with pytest.raises(VersionMismatchError) as info:
        pl.loads(forged)
    text = str(info.value)
    assert "Python 3.8" in text and pl.client_versions()["python"] in text
    assert "pip install 'cloudpickle==" in text and "image" in text


def test_unpicklable_argument_is_named_with_the_object_inside() -> None:
    sock = socket.socket()
    try:

        def train(cfg: dict[str, object], conn: dict[str, object]) -> None: ...

        with pytest.raises(SerializationError) as info:
            pl.dump_call(train, ({"lr": 0.1}, {"db": {"sock": sock}}), {})
        assert "argument 'conn' (position 1)" in str(info.value)
        assert "conn['db']['sock'] is a socket.socket" in str(info.value)
        with pytest.raises(SerializationError, match="argument 'lock' cannot be pickled"):
            pl.dump_call(train, (), {"lock": threading.Lock()})
    finally:
        sock.close()


def test_unpicklable_map_item_is_named() -> None:
    with pytest.raises(SerializationError, match=r"item 2 of the map cannot be pickled: items\[2\]\[0\] is a _thread.lock"):
        pl.pack_items([1, 2, [threading.Lock()]], io.BytesIO())


def test_items_blob_lets_each_task_read_only_its_slice() -> None:
    items = [{"i": i, "pad": "x" * i} for i in range(50)]
    buf = io.BytesIO()
    assert pl.pack_items(items, buf) == 50
    blob = buf.getvalue()
    assert pl.item_count(blob[:14]) == 50
    for i in (0, 17, 49):
        lo, hi = pl.item_range_request(i)
        start, end = pl.item_bounds(blob[lo:hi])
        assert pl.load_item(blob[start:end]) == items[i]


def test_error_envelope_rebuilds_original_or_remote_error() -> None:
    try:
        raise SpecError("memory", "16GB", '"16Gi"', "bad unit")
    except SpecError as exc:
        data = pl.dump_error(exc)
    with pytest.raises(SpecError) as info:
        pl.load_outcome(io.BytesIO(data))
    assert info.value.field == "memory" and "raise SpecError" in info.value.remote_traceback  # type: ignore[attr-defined]

    class Local(Exception):
        pass

    try:
        raise Local("gone")
    except Local as exc:
        data = pl.dump_error(exc)
    broken = data[: data.index(b"\n", len(pl.MAGIC)) + 1] + b"not a pickle"
    with pytest.raises(RemoteError) as err:
        pl.load_outcome(io.BytesIO(broken))
    assert err.value.remote_type.endswith("Local") and "gone" in str(err.value)


def test_foreign_bytes_are_rejected_clearly() -> None:
    with pytest.raises(SerializationError, match="not a kjupyter payload"):
        pl.loads(b"hello")


class _MemoryChannel:
    """A runner channel in memory: one call payload in, outcomes kept by index."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.outcomes: dict[int, bytes] = {}

    def open_payload(self) -> contextlib.AbstractContextManager[io.BytesIO]:
        return contextlib.nullcontext(io.BytesIO(self.payload))

    def read_item(self, index: int) -> bytes:
        raise AssertionError("a call has no items")

    def write_outcome(self, index: int, write: object) -> None:
        buf = io.BytesIO()
        write(buf)  # type: ignore[operator]
        self.outcomes[index] = buf.getvalue()


def _fail(x: int) -> int:
    raise ValueError(f"bad {x}")


@pytest.mark.parametrize(("fn", "arg", "code"), [(abs, -3, 0), (_fail, 7, 1)])
def test_the_runner_does_not_scan_the_pods_modules_for_what_goes_back(
    fn: object, arg: int, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only what the client sends ships uninstalled modules by value; a pod's scan can cost a second a task."""
    from kjupyter.runner import entry as runner

    data = pl.dump_call(fn, (arg,), {})  # type: ignore[arg-type]
    scans: list[int] = []
    monkeypatch.setattr(pl, "_ship_local_modules_by_value", lambda: scans.append(1))
    channel = _MemoryChannel(data)
    assert runner.run(channel, 0) == code
    assert scans == []
    outcome = pl.read_header(io.BytesIO(channel.outcomes[0]))
    assert outcome.kind == (pl.RESULT if code == 0 else pl.ERROR)
    pl.dump_call(abs, (1,), {})
    assert scans == [1]  # the client side still does
