"""``kjupyter gc``: deletes only the caller's finished runs older than the bound (local disk and S3)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kjupyter import remote, retention, run_keys
from kjupyter import store as st
from kjupyter.backends.local.backend import state_root
from kjupyter.cli import main as cli_main
from kjupyter.session import Session
from tests.servers import ObjectServer

DAY = 86400.0


def _seed(store: st.RunStore, user: str, run_id: str, phase: str, age_days: float, **extra: object) -> None:
    created = time.time() - age_days * DAY
    store.run(user, run_id).write_json(
        st.RUN_JSON, {"run_id": run_id, "user": user, "created": created, "phase": phase, **extra}
    )
    store.run(user, run_id).write_bytes(st.PAYLOAD, b"payload")


def _populate(store: st.RunStore) -> None:
    _seed(store, "me", "old-ok", "Succeeded", 10, finished=time.time() - 9 * DAY)
    _seed(store, "me", "old-failed", "Failed", 8)
    _seed(store, "me", "old-cancelled", "Cancelled", 30)
    _seed(store, "me", "recent", "Succeeded", 1)
    _seed(store, "me", "long-run-just-ended", "Succeeded", 20, finished=time.time() - 3600)
    _seed(store, "me", "old-running", "Running", 10)  # its client may still be alive
    _seed(store, "me", "foreign", "Succeeded", 10)
    store.run("me", "foreign").update_meta(user="someone-else")  # sits under my prefix, but is not mine
    _seed(store, "bob", "bobs-old", "Succeeded", 10)
    store.run("me", "no-metadata").write_bytes(st.PAYLOAD, b"half-written")
    _seed(store, "me", "old-done-unrecorded", "Running", 9, count=2)  # its client died, but both tasks ended
    for i in range(2):
        store.run("me", "old-done-unrecorded").write_bytes(st.result_name(i), b"result")


def test_collect_on_local_disk(tmp_path: Path) -> None:
    store = st.RunStore(f"file://{tmp_path}/runs")
    _populate(store)
    dry = retention.collect_runs(store, "me", 7 * DAY, dry_run=True)
    assert sorted(dry.deleted) == ["old-cancelled", "old-done-unrecorded", "old-failed", "old-ok"]
    assert len(store.run_ids("me")) == 9  # a dry run deletes nothing
    report = retention.collect_runs(store, "me", 7 * DAY)
    assert sorted(report.deleted) == ["old-cancelled", "old-done-unrecorded", "old-failed", "old-ok"]
    assert sorted(store.run_ids("me")) == ["foreign", "long-run-just-ended", "no-metadata", "old-running", "recent"]
    assert "no-metadata" in report.skipped
    assert store.run_ids("bob") == ["bobs-old"]
    assert report.summary() == "deleted 4 run(s), kept 4, skipped 1 without readable metadata"
    unfinished = retention.collect_runs(store, "me", 7 * DAY, include_unfinished=True)
    assert unfinished.deleted == ["old-running"]


def test_collect_on_s3(s3: ObjectServer, s3_bucket: str) -> None:
    store = st.RunStore(f"s3://{s3_bucket}/kj", s3.options)
    _populate(store)
    report = retention.collect_runs(store, "me", 7 * DAY)
    assert sorted(report.deleted) == ["old-cancelled", "old-done-unrecorded", "old-failed", "old-ok"]
    fs = s3.filesystem()
    fs.invalidate_cache()
    left = {p.split("/")[3] for p in fs.find(f"{s3_bucket}/kj/me")}
    assert left == {"foreign", "long-run-just-ended", "no-metadata", "old-running", "recent"}
    assert fs.find(f"{s3_bucket}/kj/bob")


def test_cli_gc_keeps_runs_inside_the_bound(s3_profile_session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    assert remote(len)([1, 2, 3]) == 3  # a real finished run, seconds old
    profile = s3_profile_session.config.profile()
    store = st.RunStore(profile.store, profile.store_options)
    user = s3_profile_session.user
    _seed(store, user, "ancient", "Succeeded", 40)
    _seed(store, "another-user", "ancient", "Succeeded", 40)
    capsys.readouterr()
    assert cli_main(["gc", "--older-than", "30d", "--dry-run"]) == 0
    assert "would delete s3://" in capsys.readouterr().out
    assert cli_main(["gc", "--older-than", "30d"]) == 0
    out = capsys.readouterr().out
    assert f"deleted {profile.store}/{user}/ancient" in out and "deleted 1 run(s), kept 1" in out
    assert len(store.run_ids(user)) == 1 and store.run_ids("another-user") == ["ancient"]
    (real_run,) = store.run_ids(user)
    assert (state_root() / real_run).is_dir()  # the local backend's logs and pids
    assert run_keys.load_key(real_run) is not None
    time.sleep(1.1)
    assert cli_main(["gc", "--older-than", "1s"]) == 0
    assert store.run_ids(user) == [] and store.run_ids("another-user") == ["ancient"]
    assert not (state_root() / real_run).exists()  # the logs went with the run
    assert run_keys.load_key(real_run) is None  # and so did its key
    assert cli_main(["gc", "--older-than", "soon"]) == 1
    assert "--older-than" in capsys.readouterr().err
