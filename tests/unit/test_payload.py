from __future__ import annotations

import contextlib
import io
import socket
import threading

import pytest

from kjupyter import integrity as mac
from kjupyter import payload as pl
from kjupyter.errors import RemoteError, SerializationError, SpecError, VersionMismatchError

KEY = bytes(range(32))


def test_call_envelope_carries_versions_and_round_trips() -> None:
    data = pl.dump_call(divmod, (7, 2), {}, key=KEY)
    header, (fn, args, kwargs) = pl.loads(data, key=KEY)
    assert header.kind == "call" and header.python == pl.client_versions()["python"]
    assert header.cloudpickle == pl.client_versions()["cloudpickle"]
    assert fn(*args, **kwargs) == (3, 1)


def test_version_mismatch_names_both_sides_and_the_fix() -> None:
    real = pl.client_versions()
    with pytest.MonkeyPatch.context() as mp:  # (an old client's envelope, signed by it: only versions differ)
        mp.setattr(pl, "client_versions", lambda: {**real, "python": "3.8.10", "cloudpickle": "1.6.0"})
        data = pl.dump_call(divmod, (7, 2), {}, key=KEY)
    with pytest.raises(VersionMismatchError) as info:
        pl.loads(data, key=KEY)
    text = str(info.value)
    assert "Python 3.8" in text and pl.client_versions()["python"] in text
    assert "pip install 'cloudpickle==" in text and "image" in text


def test_unpicklable_argument_is_named_with_the_object_inside() -> None:
    sock = socket.socket()
    try:

        def train(cfg: dict[str, object], conn: dict[str, object]) -> None: ...

        with pytest.raises(SerializationError) as info:
            pl.dump_call(train, ({"lr": 0.1}, {"db": {"sock": sock}}), {}, key=KEY)
        assert "argument 'conn' (position 1)" in str(info.value)
        assert "conn['db']['sock'] is a socket.socket" in str(info.value)
        with pytest.raises(SerializationError, match="argument 'lock' cannot be pickled"):
            pl.dump_call(train, (), {"lock": threading.Lock()}, key=KEY)
    finally:
        sock.close()


def test_unpicklable_map_item_is_named() -> None:
    with pytest.raises(SerializationError, match=r"item 2 of the map cannot be pickled: items\[2\]\[0\] is a _thread.lock"):
        pl.pack_items([1, 2, [threading.Lock()]], io.BytesIO(), key=KEY)


def test_items_blob_lets_each_task_read_only_its_slice() -> None:
    items = [{"i": i, "pad": "x" * i} for i in range(50)]
    buf = io.BytesIO()
    assert pl.pack_items(items, buf, key=KEY) == 50
    blob = buf.getvalue()
    assert pl.item_count(blob[:14]) == 50
    for i in (0, 17, 49):
        lo, hi = pl.item_range_request(i)
        start, end = pl.item_bounds(blob[lo:hi])
        assert pl.load_item(blob[start:end], key=KEY, index=i) == items[i]


def test_error_envelope_rebuilds_original_or_remote_error() -> None:
    try:
        raise SpecError("memory", "16GB", '"16Gi"', "bad unit")
    except SpecError as exc:
        data = pl.dump_error(exc, key=KEY, purpose=pl.result_purpose(0))
    with pytest.raises(SpecError) as info:
        pl.load_outcome(io.BytesIO(data), key=KEY)
    assert info.value.field == "memory" and "raise SpecError" in info.value.remote_traceback  # type: ignore[attr-defined]

    class Local(Exception):
        pass

    try:
        raise Local("gone")
    except Local as exc:
        data = pl.dump_error(exc, key=KEY, purpose=pl.result_purpose(0))
    head = data[: data.index(b"\n", len(pl.MAGIC)) + 1] + b"not a pickle"  # (signed: the runner wrote it so)
    broken = head + mac.tag(KEY, pl.result_purpose(0), head)
    with pytest.raises(RemoteError) as err:
        pl.load_outcome(io.BytesIO(broken), key=KEY)
    assert err.value.remote_type.endswith("Local") and "gone" in str(err.value)


def test_foreign_bytes_are_rejected_clearly() -> None:
    with pytest.raises(SerializationError, match="shorter than its HMAC"):
        pl.loads(b"hello", key=KEY)
    foreign = b"hello, this is no envelope at all" * 3
    with pytest.raises(SerializationError, match="not a kjupyter payload"):
        pl.loads(foreign + mac.tag(KEY, pl.PAYLOAD_PURPOSE, foreign), key=KEY)


class _MemoryChannel:
    """A runner channel in memory: one call payload in, outcomes kept by index."""

    where = "memory"

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

    data = pl.dump_call(fn, (arg,), {}, key=KEY)  # type: ignore[arg-type]
    scans: list[int] = []
    monkeypatch.setattr(pl, "_ship_local_modules_by_value", lambda: scans.append(1))
    channel = _MemoryChannel(data)
    assert runner.run(channel, 0, KEY) == code
    assert scans == []
    with pl.verified(io.BytesIO(channel.outcomes[0]), KEY, pl.result_purpose(0), "the outcome") as f:
        outcome = pl.read_header(f)
    assert outcome.kind == (pl.RESULT if code == 0 else pl.ERROR)
    pl.dump_call(abs, (1,), {}, key=KEY)
    assert scans == [1]  # the client side still does
