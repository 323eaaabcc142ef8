"""@remote end to end on the local backend: the pieces around the backend contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from kjupyter import ConfigError, SerializationError, VersionMismatchError, remote, run_keys
from kjupyter import payload as pl
from kjupyter import store as st
from kjupyter.cli import main as cli_main
from kjupyter.session import Session


def double(x: int) -> int:
    return 2 * x


def wait_for_file(path: str) -> str:
    print("waiting", flush=True)
    while not os.path.exists(path):
        time.sleep(0.01)
    return "released"


@pytest.fixture
def write_counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts every store write this process makes, by file name."""
    counts: Counter[str] = Counter()
    original = st.RunDir.open_write

    def counting(self: st.RunDir, name: str):  # type: ignore[no-untyped-def]
        counts[name.split("/")[0]] += 1
        return original(self, name)

    monkeypatch.setattr(st.RunDir, "open_write", counting)
    yield counts


@pytest.mark.parametrize("n", [10, 1000])
def test_map_inputs_take_constant_store_writes(local_session: Session, write_counter: Counter[str], n: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # run.json also gets the task counts at most once a second while a run goes (time-throttled, so their
    # number depends on how long the run takes: tests/unit/test_k8s_records.py counts them on a fake clock).
    # With the interval longer than the run, what is left must not depend on n.
    monkeypatch.setattr("kjupyter.backends.run_record.PROGRESS_INTERVAL_S", 3600.0)
    results = remote(double).map(range(n), parallelism=2)
    assert results == [2 * i for i in range(n)]
    # payload + items once each, run.json at submit, start and end: the same for 10 or 1,000 items.
    assert write_counter == Counter({"run.json": 3, "payload.pkl": 1, "items.pkl": 1})


def test_call_options_local_and_with_options(local_session: Session) -> None:
    fn = remote(double, memory="1Gi")
    assert fn.local(4) == 8 and fn(5) == 10
    assert fn.with_options(timeout=30).options == {"memory": "1Gi", "timeout": 30}
    assert fn.__name__ == "double" and fn.__doc__ == double.__doc__


def test_bad_input_fails_before_anything_runs(local_session: Session) -> None:
    with pytest.raises(ValueError, match="invalid memory='16GB'"):
        remote(double, memory="16GB")
    with pytest.raises(ConfigError, match="unknown cluster 'gpu-cluster'; the known clusters are: local"):
        remote(double, cluster="gpu-cluster")(1)
    with pytest.raises(SerializationError, match="argument 'x' \\(position 0\\) cannot be pickled"):
        remote(double).submit(threading.Lock())
    assert local_session.backend(local_session.config.profile()).list_runs() == []


def test_version_mismatch_is_refused_by_the_runner(local_session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pl.client_versions()
    monkeypatch.setattr(pl, "client_versions", lambda: {**real, "cloudpickle": "1.6.0"})
    future = remote(double).submit(1)
    monkeypatch.setattr(pl, "client_versions", lambda: real)
    with pytest.raises(VersionMismatchError) as info:
        future.result(30)
    assert "cloudpickle 1.6.0" in str(info.value) and f"cloudpickle {real['cloudpickle']}" in str(info.value)


def test_runner_takes_its_index_from_job_completion_index(tmp_path: Path) -> None:
    import io

    run = st.RunStore(f"file://{tmp_path}").run("u", "r1")
    key = run_keys.new_key()
    run.write_bytes(st.PAYLOAD, pl.dump_map_function(double, key=key))
    blob = io.BytesIO()
    pl.pack_items([10, 20, 30], blob, key=key)
    run.write_bytes(st.ITEMS, blob.getvalue())
    env = {**os.environ, "JOB_COMPLETION_INDEX": "2", run_keys.ENV: key.hex()}
    done = subprocess.run(
        [sys.executable, "-m", "kjupyter.runner", "--run", run.url],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with run.open_read(st.result_name(2)) as f:
        assert pl.load_outcome(f, key=key, index=2) == 60
    bad = subprocess.run([sys.executable, "-m", "kjupyter.runner", "--run", run.url, "--index", "7"],
                         env={**os.environ, run_keys.ENV: key.hex()}, capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 2 and "task index 7 is out of range: the map has 3 items" in bad.stderr


def test_runner_does_not_import_kubernetes_or_jupyter() -> None:
    code = "import sys, kjupyter.runner; print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes','IPython','ipywidgets','jupyter_server')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_lists_follows_and_cancels_a_run_of_another_process(local_session: Session, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    marker = tmp_path / "release"
    future = remote(wait_for_file).submit(str(marker))
    seen = threading.Event()
    future.subscribe(lambda e: seen.set() if getattr(e, "text", "") == "waiting" else None)
    assert seen.wait(30)
    assert cli_main(["jobs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["run_id"] == future.run_id and rows[0]["phase"] == "Running"
    assert cli_main(["logs", future.run_id]) == 0
    assert capsys.readouterr().out.splitlines() == ["waiting"]
    # Cancel from a separate process, as the Jupyter server or a terminal would.
    done = subprocess.run(
        [sys.executable, "-m", "kjupyter.cli", "cancel", future.run_id], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "cancelled" in done.stdout, done.stderr
    assert future.wait_ended(10)
    assert future.cancelled() or future.exception(5) is not None
    assert cli_main(["cancel", future.run_id]) == 0
    assert "already finished" in capsys.readouterr().out
    assert cli_main(["logs", "no-such-run"]) == 1
    assert "no run 'no-such-run'" in capsys.readouterr().err


def pid_of(x: int) -> tuple[int, int]:
    return x, os.getpid()


def test_local_workers_are_reused_unless_items_per_pod_says_otherwise(local_session: Session) -> None:
    """The same worker loop as a pod's: P processes take items until none are left; items_per_pod=k
    gives every k items a fresh process (no state carried further)."""
    reused = remote(pid_of).map(range(12), parallelism=2)
    assert [x for x, _ in reused] == list(range(12)) and len({pid for _, pid in reused}) <= 2
    fresh = remote(pid_of, items_per_pod=3).map(range(12), parallelism=2)
    per_pid = Counter(pid for _, pid in fresh)
    assert [x for x, _ in fresh] == list(range(12))
    assert max(per_pid.values()) == 3 and len(per_pid) >= 4, per_pid  # (the two workers share the queue)


def parent_and_draw(_: int) -> tuple[int, float]:
    import random

    return os.getppid(), random.random()


def test_local_workers_fork_from_a_warm_server_that_ends_with_its_backend(local_session: Session,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from kjupyter.backends.local.backend import LocalBackend
    from kjupyter.backends.local.forks import FORK_ENV, Spawner

    backend = local_session.backend(local_session.config.profile())
    assert isinstance(backend, LocalBackend)
    drawn = remote(parent_and_draw, items_per_pod=1).map(range(4), parallelism=2)
    server = backend._spawner.server
    assert server is not None and {ppid for ppid, _ in drawn} == {server.proc.pid}
    assert len({x for _, x in drawn}) == 4  # each forked worker reseeds random: no two draw alike
    backend.close()
    assert server.proc.poll() is not None  # the fork server went with its backend (and its socket)
    monkeypatch.setenv(FORK_ENV, "0")  # no fork server: workers are new interpreters, children of this process
    backend._spawner = Spawner()
    assert {ppid for ppid, _ in remote(parent_and_draw).map(range(2), parallelism=2)} == {os.getpid()}


def what_a_worker_sees(_: int) -> tuple[int, str | None, str, str | None]:
    import sys

    import fsspec.config

    return (os.getppid(), fsspec.config.conf.get("s3", {}).get("endpoint_url"), sys.path[0] == os.getcwd() and "cwd",
            os.environ.get("PYTHONPATH"))  # fmt: skip


def test_a_forked_worker_sees_the_run_as_a_new_interpreter_would(local_session: Session, tmp_path: Path) -> None:
    """fsspec's FSSPEC_* configuration and sys.path[0] follow the run; PYTHON* variables need a new interpreter."""
    from kjupyter.backends.local.backend import LocalBackend

    backend = local_session.backend(local_session.config.profile())
    assert isinstance(backend, LocalBackend)
    fn = remote(what_a_worker_sees, env={"FSSPEC_S3_ENDPOINT_URL": "http://127.0.0.1:9"})
    [(ppid, endpoint, first, _)] = fn.map([0])
    server = backend._spawner.server
    assert server is not None and ppid == server.proc.pid  # forked
    assert endpoint == "http://127.0.0.1:9" and first == "cwd"
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    [(ppid, _, _, seen)] = remote(what_a_worker_sees, env={"PYTHONPATH": path}).map([0])
    assert ppid == os.getpid() and seen == path  # a new interpreter, started with the run's PYTHONPATH


def sleep_long(_: int) -> None:
    time.sleep(120)


def test_a_cancel_that_comes_while_the_worker_starts_still_stops_the_run(local_session: Session) -> None:
    """Cancelled before its worker was registered, a task must not run anyway (it used to sleep on)."""
    fn = remote(sleep_long)
    for _ in range(8):
        future = fn.submit(0)
        assert future.cancel()
        assert future.wait_ended(15), f"{future.run_id} did not end after its cancel"
