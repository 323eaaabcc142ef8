"""Rerun only what failed, on the local backend: ``retry_failed()``, ``resume=RUN_ID`` and their bad input;
``Retry(grow_memory=...)`` there (no memory limits: plain retries, said once)."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from kjupyter import IntegrityError, KjupyterError, Retry, remote
from kjupyter import store as st
from kjupyter.futures import MapFuture
from kjupyter.run_events import Diagnosis
from kjupyter.session import Session


def flaky(item: tuple[int, str]) -> int:
    """Fails for items 2 and 5 until ``<folder>/fixed`` exists; each call leaves a file ``<i>-<uuid>``."""
    i, folder = item
    Path(folder, f"{i}-{uuid.uuid4().hex}").touch()
    if i in (2, 5) and not os.path.exists(os.path.join(folder, "fixed")):
        raise ValueError(f"item {i} is broken")
    return i * 10


def other(item: tuple[int, str]) -> int:
    return 0


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "calls").mkdir()
    return tmp_path / "calls"


def calls(folder: Path) -> dict[int, int]:
    out: dict[int, int] = {}
    for p in folder.iterdir():
        if p.name != "fixed":
            i = int(p.name.split("-")[0])
            out[i] = out.get(i, 0) + 1
    return out


def run_dir(session: Session, run_id: str) -> st.RunDir:
    return st.RunStore(session.backend(session.default_profile()).profile.store).run(session.user, run_id)


def test_retry_failed_reruns_exactly_the_failed_items(local_session: Session, folder: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr("kjupyter.backends.run_record.PROGRESS_INTERVAL_S", 3600.0)  # (no throttled count writes)
    items = [(i, str(folder)) for i in range(8)]
    first = remote(flaky).submit_map(items, parallelism=2, return_exceptions=True)
    results = first.result(60)
    assert [i for i, r in enumerate(results) if isinstance(r, ValueError)] == [2, 5]
    (folder / "fixed").touch()
    written: Counter[str] = Counter()  # "<run folder>/<file or folder>" -> writes by this process
    original = st.RunDir.open_write

    def counting(rd: st.RunDir, name: str):  # type: ignore[no-untyped-def]
        written[f"{rd.path.rsplit('/', 1)[-1]}/{name.split('/')[0]}"] += 1
        return original(rd, name)

    monkeypatch.setattr(st.RunDir, "open_write", counting)
    again = first.retry_failed()
    events: list[object] = []
    again.subscribe(events.append)
    assert again.result(60) == [i * 10 for i in range(8)]
    assert again.run_id == first.run_id and again.live_run_id == f"{first.run_id}-r1"
    assert again.wait_ended(10)
    part = f"{first.run_id}-r1"
    # This process wrote: the rerun's payload, its 2 items, its run.json at submit, start and end; and once
    # the map's own run.json, to say how it ended after the rerun.
    assert written == Counter({f"{part}/payload.pkl": 1, f"{part}/items.pkl": 1, f"{part}/run.json": 3,
                               f"{first.run_id}/run.json": 1})  # fmt: skip
    assert calls(folder) == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1, 5: 2, 6: 1, 7: 1}  # only 2 and 5 ran again
    rerun = run_dir(local_session, f"{first.run_id}-r1")
    assert rerun.read_json(st.RUN_JSON)["count"] == 2
    assert sorted(rerun.list_names("results")) == ["0.pkl", "1.pkl"]  # the rerun wrote two results, no more
    notes = [e.sentence for e in events if isinstance(e, Diagnosis) and e.reason == "Rerun"]
    assert notes == [f"2 of 8 item(s) failed or have no result: rerunning them as run {first.run_id}-r1; "
                     "the others keep their results."]  # fmt: skip
    record = run_dir(local_session, first.run_id).read_json(st.RUN_JSON)
    assert record["phase"] == "Succeeded" and record["counts"]["succeeded"] == 8
    assert again.retry_failed().result(10) == [i * 10 for i in range(8)]  # nothing failed: no run at all
    assert calls(folder)[2] == 2


def test_resume_reruns_failed_items_from_the_store(
    local_session: Session, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = [(i, str(folder)) for i in range(6)]
    first = remote(flaky).submit_map(items, parallelism=3, return_exceptions=True)
    first.result(60)
    (folder / "fixed").touch()
    capsys.readouterr()
    assert remote(flaky).map(items, resume=first.run_id) == [i * 10 for i in range(6)]
    said = capsys.readouterr().err.splitlines()  # (the text view of a run outside a notebook)
    assert said[0] == (f"kjupyter: 2 of 6 item(s) failed or have no result: rerunning them as run {first.run_id}-r1; "
                       "the others keep their results.")  # fmt: skip
    assert calls(folder) == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1, 5: 2}
    # A second resume finds every result stored: it runs nothing (and names no run it does not make).
    assert remote(flaky).map(items, resume=first.run_id) == [i * 10 for i in range(6)]
    assert calls(folder)[2] == 2


def test_resume_and_retry_failed_refuse_bad_input_in_one_sentence(local_session: Session, folder: Path) -> None:
    items = [(i, str(folder)) for i in range(4)]
    first = remote(flaky).submit_map(items, return_exceptions=True)
    with pytest.raises(KjupyterError, match="still running: retry_failed"):
        first.retry_failed()
    first.result(60)
    with pytest.raises(KjupyterError, match=r"mapped '.*flaky', not '.*other': resume= reruns a map with the same"):
        remote(other).map(items, resume=first.run_id)
    with pytest.raises(KjupyterError, match="mapped 4 item.s., and 3 were given: resume= needs the same items"):
        remote(flaky).map(items[:3], resume=first.run_id)
    with pytest.raises(KjupyterError, match="no run 'nope-000000' of yours"):
        remote(flaky).map(items, resume="nope-000000")
    attached = local_session.attach(first.run_id)
    assert isinstance(attached, MapFuture) and isinstance(attached.exception(30), ValueError)
    with pytest.raises(KjupyterError, match=rf"map {first.run_id} was not started by this process, so its function "
                                            rf"and items are not here; rerun its failed items with "
                                            rf"f.map\(items, resume='{first.run_id}'\)"):  # fmt: skip
        attached.retry_failed()
    owner = local_session.user
    local_session.user = "somebody-else"
    with pytest.raises(IntegrityError, match=f"run {first.run_id} belongs to user '{owner}', not to you"):
        remote(flaky).map(items, resume=first.run_id)


def fails_once(folder: str) -> str:
    marker = os.path.join(folder, "once")
    if not os.path.exists(marker):
        Path(marker).touch()
        raise RuntimeError("first attempt fails")
    return "ok"


def test_grow_memory_on_the_local_backend_is_plain_retries_said_once(local_session: Session, tmp_path: Path) -> None:
    future = remote(fails_once, memory="100Mi", retries=Retry(1, grow_memory=2.0)).submit(str(tmp_path))
    events: list[object] = []
    future.subscribe(events.append)
    assert future.result(60) == "ok"
    said = [e for e in events if isinstance(e, Diagnosis) and e.reason == "NoMemoryLimit"]
    assert [e.sentence for e in said] == ["The local backend sets no memory limits, so grow_memory= does nothing "
                                          "here: retries=1 apply as plain retries."]  # fmt: skip
    assert future.reruns is None and future.live_run_id == future.run_id  # retried in place: no second run


def blocks_from_2(item: tuple[int, str]) -> int:
    i, folder = item
    Path(folder, f"{i}-{uuid.uuid4().hex}").touch()
    while i >= 2 and not os.path.exists(os.path.join(folder, "fixed")):
        time.sleep(0.05)
    return i


def test_retry_failed_of_a_cancelled_map_reruns_what_did_not_finish(local_session: Session, folder: Path) -> None:
    items = [(i, str(folder)) for i in range(6)]
    first = remote(blocks_from_2).submit_map(items, parallelism=2)
    deadline = time.monotonic() + 30
    while first.counts["succeeded"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.cancel()  # (every task reports, cancelled or not: the future holds a list with RunCancelled in it)
    assert first.wait_ended(30) and first.phase.value == "Cancelled"
    (folder / "fixed").touch()
    again = first.retry_failed()
    assert again.result(60) == list(range(6))
    counted = calls(folder)
    assert counted[0] == counted[1] == 1 and set(counted) == set(range(6))  # 0 and 1 kept their results
    rerun = run_dir(local_session, f"{first.run_id}-r1").read_json(st.RUN_JSON)
    assert rerun["count"] == 4 and rerun["phase"] == "Succeeded"
