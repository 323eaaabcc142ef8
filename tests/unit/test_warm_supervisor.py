"""The warm worker's pieces without a cluster: tickets, wrapped keys, idle polling, the gated log filter."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kjupyter import run_keys
from kjupyter import store as st
from kjupyter.backends.kubernetes import warm
from kjupyter.config import load_config
from kjupyter.errors import ConfigError, SpecError
from kjupyter.inline_frames import LineFilter, Outcomes, item_line
from kjupyter.runner import warm as sup
from kjupyter.spec import RunSpec


def test_a_run_key_travels_wrapped_and_only_the_pod_key_unwraps_it() -> None:
    pod_key, key = run_keys.new_key(), run_keys.new_key()
    wrapped = sup.wrap_key(pod_key, "run-a", key)
    assert bytes.fromhex(wrapped) != key
    assert sup.unwrap_key(pod_key, "run-a", wrapped) == key
    assert sup.unwrap_key(run_keys.new_key(), "run-a", wrapped) != key  # another pod's key
    assert sup.unwrap_key(pod_key, "run-b", wrapped) != key  # the pad is the run's own
    assert sup.wrap_key(pod_key, "run-b", key) != wrapped


def test_tickets_are_signed_for_their_number() -> None:
    pod_key = run_keys.new_key()
    data = sup.ticket_bytes(pod_key, 3, {"run_id": "r", "run_url": "file:///x", "key": "00"})
    assert sup.read_ticket(data, pod_key, 3) == {"run_id": "r", "run_url": "file:///x", "key": "00", "seq": 3}
    assert sup.read_ticket(data, pod_key, 4) is None  # replayed as another number
    assert sup.read_ticket(data, run_keys.new_key(), 3) is None  # not this pod's client
    forged = data.replace(b"file:///x", b"file:///y")
    assert sup.read_ticket(forged, pod_key, 3) is None


def test_an_idle_worker_backs_off_to_one_store_request_a_second_and_ignores_forged_tickets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = st.RunStore(f"file://{tmp_path}").run("me", "first")
    pod_key = run_keys.new_key()
    run_dir.write_bytes(sup.ticket_name(1), sup.ticket_bytes(run_keys.new_key(), 1, {"run_id": "evil"}))
    worker = sup.Supervisor(run_dir.url, {}, pod_key, window=3.0, timeout=None, retries=0)
    started = time.monotonic()
    assert worker._next_ticket(1, time.monotonic() + 3.0) is None
    assert 3.0 <= time.monotonic() - started < 4.5
    # 50, 100, 200, 400, 800 ms, then 1 s: 6 polls in the first 2.55 s, then one a second.
    assert 6 <= worker.polls <= 8
    assert capsys.readouterr().err.count("is not signed by this worker's client") == 1  # said once


def test_a_ticket_names_the_run_and_carries_its_key(tmp_path: Path) -> None:
    run_dir = st.RunStore(f"file://{tmp_path}").run("me", "first")
    pod_key, key = run_keys.new_key(), run_keys.new_key()
    ticket = {"run_id": "second", "run_url": "file:///runs/second", "timeout": 5, "retries": 1,
              "key": sup.wrap_key(pod_key, "second", key)}  # fmt: skip
    run_dir.write_bytes(sup.ticket_name(1), sup.ticket_bytes(pod_key, 1, ticket))
    got = sup.Supervisor(run_dir.url, {}, pod_key, window=3.0, timeout=None, retries=0)._next_ticket(1, 0)
    assert got == sup.Ticket(1, "second", "file:///runs/second", 5, 1, key)


def frame(state: str, key: bytes) -> str:
    return item_line(0, 0, state, key)


def test_the_gated_filter_keeps_only_the_lines_of_its_own_run() -> None:
    mine, other = run_keys.new_key(), run_keys.new_key()
    out: list[str] = []
    items: list[tuple[int, int, str]] = []
    f = LineFilter(out.append, Outcomes(mine), on_item=lambda *a: items.append(a))
    f.gated = f.until_end = True
    log = ["earlier run's line", frame("start", other), "its output", frame("done", other),
           "a forged " + frame("start", run_keys.new_key()), frame("start", mine), "mine 1", "mine 2",
           frame("done", mine), "the next run's line", frame("start", other)]  # fmt: skip
    for line in log:
        f.feed(line)
    assert out == ["mine 1", "mine 2"]
    assert items == [(0, 0, "start"), (0, 0, "done")]


def test_a_first_run_keeps_its_lines_from_the_start_until_its_end() -> None:
    key = run_keys.new_key()
    out: list[str] = []
    f = LineFilter(out.append, Outcomes(key))
    f.until_end = True
    for line in ["[kjupyter] supervisor line", frame("start", key), "mine", frame("timeout", key), "later"]:
        f.feed(line)
    assert out == ["[kjupyter] supervisor line", "mine"]


def test_keep_warm_values(tmp_path: Path) -> None:
    assert RunSpec.build(keep_warm="2m").keep_warm == 120
    assert RunSpec.build(keep_warm=0).keep_warm == 0
    assert RunSpec.build().keep_warm is None
    with pytest.raises(SpecError, match="at most a day"):
        RunSpec.build(keep_warm="2d")
    with pytest.raises(SpecError, match="keep_warm"):
        RunSpec.build(keep_warm="soon")
    path = tmp_path / "k.toml"
    path.write_text('[clusters.gpu]\nbackend = "kubernetes"\nkeep_warm = "90s"\nmax_warm = 1\n')
    profile = load_config(files=[path]).profile("gpu")
    assert profile.defaults.keep_warm == 90 and profile.max_warm == 1
    path.write_text('[clusters.gpu]\nbackend = "kubernetes"\nmax_warm = -1\n')
    with pytest.raises(ConfigError, match="max_warm = -1 must be a whole number >= 0"):
        load_config(files=[path])


def test_the_default_window_is_for_notebook_kernels_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert warm.window(None) == 0.0  # a script sends no second run
    assert warm.window(30.0) == 30.0
    monkeypatch.setattr(warm, "in_kernel", lambda: True)
    assert warm.window(None) == warm.DEFAULT_KEEP_WARM_S
    assert warm.window(0.0) == 0.0
