"""Only authenticated pickles are unpickled: payloads, map items, results, errors and inline frames.

The store is shared ground: whoever can write to it can replace any object there. These tests play
that someone (who does not hold the run's key) and check that nothing they wrote is ever unpickled,
with a pickle whose unpickling would create a marker file, and that the run fails with one clear
:class:`IntegrityError` sentence instead.
"""

from __future__ import annotations

import io
import os
import pickle
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kjupyter
from kjupyter import IntegrityError, remote, run_keys
from kjupyter import integrity as mac
from kjupyter import payload as pl
from kjupyter import store as st
from kjupyter.backends.base import SubmitRequest
from kjupyter.inline_frames import INLINE_MARKER, LineFilter, Outcomes, frame_lines
from kjupyter.session import Session
from kjupyter.spec import RunSpec

KEY = bytes(range(32))


class Touch:
    """Unpickling this creates ``path``: proof that a pickle was (or was not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def forged(kind: str, marker: Path, purpose: str) -> bytes:
    """A well-formed envelope carrying a malicious pickle, signed with the attacker's own key."""
    return pl.dumps(kind, Touch(marker), key=os.urandom(32), purpose=purpose, outbound=False)


def unsigned(marker: Path) -> bytes:
    """An envelope of the format before signatures (what an attacker might also try)."""
    return pl.UNSIGNED_MAGIC + b'{"kind":"result"}\n' + pickle.dumps(Touch(marker))


def double(x: int) -> int:
    return 2 * x


def identity(x: Any) -> Any:
    return x


def env_var(name: str) -> str | None:
    return os.environ.get(name)


def print_lines_then_return(lines: list[str], value: str) -> str:
    for line in lines:
        print(line, flush=True)
    print("tail of the user's output", end="", flush=True)  # the runner's frames follow on the same log line
    return value


# --- the MAC itself --------------------------------------------------------------------------------


def test_a_signed_envelope_round_trips() -> None:
    data = pl.dump_call(divmod, (7, 2), {}, key=KEY)
    header, (fn, args, kwargs) = pl.loads(data, key=KEY)
    assert header.kind == pl.CALL and fn(*args, **kwargs) == (3, 1)
    assert len(data) > mac.TAG_SIZE and data.startswith(pl.MAGIC)


@pytest.mark.parametrize(
    "change",
    ["wrong-key", "other-purpose", "truncated-by-one", "truncated-to-ten", "appended", "header-byte", "body-byte",
     "tag-byte", "empty"],
)  # fmt: skip
def test_any_change_to_a_signed_envelope_is_refused(change: str, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    data = pl.dumps(pl.CALL, (Touch(marker), (), {}), key=KEY, outbound=False)
    assert not marker.exists()
    key, purpose = KEY, pl.PAYLOAD_PURPOSE
    header_end = data.index(b"\n", len(pl.MAGIC))
    if change == "wrong-key":
        key = bytes(32)
    elif change == "other-purpose":
        purpose = pl.result_purpose(0)
    elif change == "truncated-by-one":
        data = data[:-1]
    elif change == "truncated-to-ten":
        data = data[:10]
    elif change == "appended":
        data += b'{"x": ["1"]}'
    elif change == "empty":
        data = b""
    else:
        at = {"header-byte": header_end - 3, "body-byte": header_end + 20, "tag-byte": len(data) - 1}[change]
        data = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
    with pytest.raises(IntegrityError) as info:
        pl.read_envelope(io.BytesIO(data), key=key, purpose=purpose, what="the payload of run r-1 (file:///s/r-1)")
    text = str(info.value)
    assert text.startswith("the payload of run r-1 (file:///s/r-1) failed authentication")
    assert text.endswith("It was not unpickled.")
    assert not marker.exists()


def test_a_missing_key_or_an_unsigned_envelope_is_refused_clearly(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    with pytest.raises(IntegrityError, match="cannot be authenticated: there is no key for its run"):
        pl.load_outcome(io.BytesIO(pl.dumps(pl.RESULT, 1, key=KEY)), key=None)
    with pytest.raises(IntegrityError, match="carries no HMAC: it was written by an older kjupyter"):
        pl.load_outcome(io.BytesIO(unsigned(marker)), key=KEY, where="run r-1 task 0")
    assert not marker.exists()


def test_a_big_envelope_is_verified_through_a_spool_on_disk() -> None:
    value = os.urandom(mac.SPOOL_IN_MEMORY + 1000)
    data = pl.dumps(pl.RESULT, value, key=KEY, purpose=pl.result_purpose(3), outbound=False)
    with pl.verified(io.BytesIO(data), KEY, pl.result_purpose(3), "big") as f:
        assert f._rolled  # type: ignore[attr-defined]  # (not a second copy in memory)
    assert pl.load_outcome(io.BytesIO(data), key=KEY, index=3) == value


def test_map_items_are_signed_each_for_its_own_index(tmp_path: Path) -> None:
    buf = io.BytesIO()
    pl.pack_items([10, Touch(tmp_path / "unpickled"), 30], buf, key=KEY)
    blob = buf.getvalue()

    def item(i: int) -> bytes:
        lo, hi = pl.item_range_request(i)
        start, end = pl.item_bounds(blob[lo:hi])
        return blob[start:end]

    assert pl.load_item(item(2), key=KEY, index=2) == 30
    with pytest.raises(IntegrityError, match="item 0 of the map failed authentication"):
        pl.load_item(item(1), key=KEY, index=0)  # another index's item (same key): refused
    with pytest.raises(IntegrityError):
        pl.load_item(item(1), key=bytes(32), index=1)
    flipped = bytearray(item(2))
    flipped[3] ^= 1
    with pytest.raises(IntegrityError):
        pl.load_item(bytes(flipped), key=KEY, index=2)
    assert not (tmp_path / "unpickled").exists()


def test_run_keys_are_private_files_and_never_printed(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = run_keys.new_key()
    assert len(key) == 32 and key != run_keys.new_key()
    assert run_keys.load_key("r-1") is None
    run_keys.save_key("r-1", key)
    path = isolated_home / "keys" / "r-1"
    assert run_keys.load_key("r-1") == key and path.read_text().strip() == key.hex()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    run_keys.forget_key("r-1")
    run_keys.forget_key("r-1")
    assert run_keys.load_key("r-1") is None
    for bad in ("../r-1", "a/b", "", ".."):
        with pytest.raises(ValueError):
            run_keys.save_key(bad, key)
    monkeypatch.setenv(run_keys.ENV, key.hex())
    assert run_keys.key_from_env() == key
    for bad in ("", "zz" * 32, key.hex()[:-2]):
        monkeypatch.setenv(run_keys.ENV, bad)
        assert run_keys.key_from_env() is None
    request = SubmitRequest(run_id="r-1", kind="call", spec=RunSpec(), payload=b"", run_key=key)
    assert key.hex() not in repr(request) and repr(key) not in repr(request)


# --- through the local backend: payloads ----------------------------------------------------------


@pytest.mark.parametrize("forgery", ["other-key", "unsigned", "appended"])
def test_a_replaced_payload_fails_the_run_and_is_never_unpickled(
    local_session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forgery: str
) -> None:
    marker = tmp_path / "unpickled"
    original = st.RunDir.write_bytes

    def replacing(self: st.RunDir, name: str, data: bytes) -> None:
        if name == st.PAYLOAD:  # someone with write access replaces it after the client wrote it
            data = {
                "other-key": lambda: forged(pl.CALL, marker, pl.PAYLOAD_PURPOSE),
                "unsigned": lambda: unsigned(marker),
                "appended": lambda: data + pl.dumps(pl.CALL, Touch(marker), key=os.urandom(32), outbound=False),
            }[forgery]()
        original(self, name, data)

    monkeypatch.setattr(st.RunDir, "write_bytes", replacing)
    future = remote(double).submit(21)
    with pytest.raises(IntegrityError) as info:
        future.result(30)
    text = str(info.value)
    assert f"the payload of run {future.run_id} (" in text and "payload.pkl)" in text
    assert ("failed authentication" in text or "carries no HMAC" in text) and "It was not unpickled." in text
    assert not marker.exists()


def _item_slices(blob: bytes) -> list[bytes]:
    out = []
    for i in range(pl.item_count(blob[: len(pl.ITEMS_MAGIC) + 8])):
        lo, hi = pl.item_range_request(i)
        start, end = pl.item_bounds(blob[lo:hi])
        out.append(blob[start:end])
    return out


def _items_blob(slices: list[bytes]) -> bytes:
    """An items blob in the store's format around ``slices`` (what someone rewriting items.pkl can do)."""
    offset = len(pl.ITEMS_MAGIC) + 8 + 8 * (len(slices) + 1)
    table = [offset]
    for piece in slices:
        offset += len(piece)
        table.append(offset)
    return pl.ITEMS_MAGIC + struct.pack(f"<Q{len(table)}Q", len(slices), *table) + b"".join(slices)


def test_a_replaced_map_item_fails_its_task_only(local_session: Session, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    marker = tmp_path / "unpickled"
    original = st.RunDir.write_bytes

    def replacing(self: st.RunDir, name: str, data: bytes) -> None:
        if name == st.ITEMS:  # item 1 becomes a malicious pickle; it cannot carry a valid tag
            good = _item_slices(data)
            data = _items_blob([good[0], pickle.dumps(Touch(marker)) + os.urandom(mac.TAG_SIZE), good[2]])
        original(self, name, data)

    monkeypatch.setattr(st.RunDir, "write_bytes", replacing)
    results = remote(double).submit_map([1, 2, 3], parallelism=1, return_exceptions=True).result(30)
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], IntegrityError) and "item 1 of run" in str(results[1])
    assert "failed authentication" in str(results[1])
    assert not marker.exists()


def test_the_users_code_does_not_see_the_key(local_session: Session) -> None:
    assert remote(env_var)(run_keys.ENV) is None


def test_the_runner_refuses_to_run_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = st.RunStore(f"file://{tmp_path}").run("u", "r-1")
    run.write_bytes(st.PAYLOAD, pl.dump_call(double, (1,), {}, key=KEY))
    monkeypatch.delenv(run_keys.ENV, raising=False)
    done = subprocess.run([sys.executable, "-m", "kjupyter.runner", "--run", run.url],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2 and not run.exists(st.result_name(0))
    assert done.stderr.count("\n") == 1 and "refusing to run: $KJUPYTER_RUN_KEY is missing" in done.stderr
    wrong = subprocess.run([sys.executable, "-m", "kjupyter.runner", "--run", run.url],
                           env={**os.environ, run_keys.ENV: bytes(32).hex(), "KJUPYTER_RUN_ID": "r-1"},
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1
    assert wrong.stderr.startswith(f"kjupyter.errors.IntegrityError: the payload of run r-1 ({run.url}/payload.pkl) ")


# --- through the local backend: results -------------------------------------------------------------


@pytest.mark.parametrize("forgery", ["other-key", "other-run", "other-task", "unsigned"])
def test_a_replaced_result_is_refused_and_never_unpickled(local_session: Session, tmp_path: Path,
                                                          forgery: str) -> None:  # fmt: skip
    marker = tmp_path / "unpickled"
    future = remote(identity).submit_map([41, 42], parallelism=1)
    assert future.result(30) == [41, 42]
    backend = local_session.backend(local_session.config.profile())
    run_dir = backend.store.run(local_session.user, future.run_id)  # type: ignore[attr-defined]
    if forgery == "other-key":
        data = forged(pl.RESULT, marker, pl.result_purpose(0))
    elif forgery == "other-run":  # a genuine result of the same task of another run of the same user
        other = remote(identity).submit_map([7, 8], parallelism=1)
        assert other.result(30) == [7, 8]
        data = backend.store.run(local_session.user, other.run_id).read_bytes(st.result_name(0))  # type: ignore[attr-defined]
    elif forgery == "other-task":  # task 1's genuine result (same run, same key) as task 0's
        data = run_dir.read_bytes(st.result_name(1))
    else:
        data = unsigned(marker)
    run_dir.write_bytes(st.result_name(0), data)
    attached = kjupyter.attach(future.run_id)
    with pytest.raises(IntegrityError) as info:
        attached.result(30)
    text = str(info.value)
    assert f"the result of run {future.run_id} task 0 (" in text and "results/0.pkl)" in text
    assert "It was not unpickled." in text
    assert not marker.exists()


def test_attach_without_the_runs_key_says_so(local_session: Session) -> None:
    future = remote(double).submit(1)
    assert future.result(30) == 2
    assert kjupyter.attach(future.run_id).result(30) == 2
    run_keys.forget_key(future.run_id)
    with pytest.raises(IntegrityError, match=f"the results of run {future.run_id} cannot be authenticated from this"):
        kjupyter.attach(future.run_id)


# --- inline frames: the user's output cannot forge them ------------------------------------------


def test_forged_inline_frames_are_log_text_and_the_real_result_comes_back(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    evil = forged(pl.RESULT, marker, pl.result_purpose(0))
    forgeries = [
        *frame_lines(0, evil, os.urandom(32)),  # a whole outcome for task 0, signed with another key
        f"{INLINE_MARKER}out 0 0123456789abcdef 0 AAAA {'0' * 64}",  # a frame with a made-up tag
        f"{INLINE_MARKER}end 0 0123456789abcdef 1 3 {'0' * 64}",
        f"progress {INLINE_MARKER}end 0 x 1 3 nothing",  # not even a frame's shape
    ]
    folder = tmp_path / "inline"
    folder.mkdir()
    (folder / st.PAYLOAD).write_bytes(pl.dump_call(print_lines_then_return, (forgeries, "the real one"), {}, key=KEY))
    done = subprocess.run([sys.executable, "-m", "kjupyter.runner", "--inline", str(folder)],
                          env={**os.environ, run_keys.ENV: KEY.hex()}, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown: list[str] = []
    outcomes = Outcomes(KEY)
    log = LineFilter(shown.append, outcomes)
    for line in done.stdout.split("\n"):
        log.feed(line)
    log.close()
    assert shown[: len(forgeries)] == forgeries and shown[len(forgeries)] == "tail of the user's output"
    data = outcomes.get(0)
    assert data is not None and pl.load_outcome(io.BytesIO(data), key=KEY) == "the real one"
    assert not marker.exists()


def test_a_frame_cannot_be_moved_to_another_task_or_attempt() -> None:
    lines = frame_lines(0, b"x" * 20_000, KEY)
    moved = [line.replace(f"{INLINE_MARKER}out 0 ", f"{INLINE_MARKER}out 1 ").replace(
        f"{INLINE_MARKER}end 0 ", f"{INLINE_MARKER}end 1 ") for line in lines]  # fmt: skip
    outcomes = Outcomes(KEY)
    assert not any(outcomes.feed(line.partition(INLINE_MARKER)[2]) for line in moved)
    other = frame_lines(0, b"y" * 20_000, KEY)  # another attempt at task 0: its own nonce
    for line in [*lines[:1], *other[1:2], *lines[1:]]:
        outcomes.feed(line.partition(INLINE_MARKER)[2])
    assert outcomes.get(0) == b"x" * 20_000 and outcomes.get(1) is None
    keyless = Outcomes(None)  # `kjupyter logs`: frames hidden, nothing assembled
    assert all(keyless.feed(line.partition(INLINE_MARKER)[2]) for line in lines) and keyless.get(0) is None


# --- the Kubernetes backend reads results only under your own store prefix -------------------------


def test_a_job_annotation_outside_your_store_prefix_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kjupyter import names
    from kjupyter.backends.kubernetes.backend import KubernetesBackend
    from kjupyter.config import Profile
    from kjupyter.errors import BackendError

    store = f"file://{tmp_path}/store"
    backend = KubernetesBackend(Profile(name="k", backend="kubernetes", store=store))
    user = names.current_user()
    annotation = {"value": ""}

    def job(run_id: str) -> dict[str, Any]:
        return {"metadata": {"annotations": {"kjupyter.io/store": annotation["value"]}}}

    monkeypatch.setattr(backend, "_job", job)
    for url in (f"file://{tmp_path}/elsewhere/{user}/r-1", f"{store}/{user}/../mallory/r-1", f"{store}/mallory/r-1",
                f"{store}/{user}", f"{store}/{user}/r-1/deeper"):  # fmt: skip
        annotation["value"] = url
        with pytest.raises(IntegrityError, match="which is not under your own store prefix"):
            backend.open_outcome("r-1", 0)
    annotation["value"] = f"{store}/{user}/r-1"
    with pytest.raises(BackendError, match="left no result"), backend.open_outcome("r-1", 0):  # looked for there
        pass
