"""``@remote(cache=True)`` on the fake cluster: a hit makes no request that creates anything, a change of
code, argument or image misses, a tampered entry is refused, and ``kjupyter gc`` expires entries."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kjupyter import names, remote, retention
from kjupyter import store as st
from kjupyter.errors import ConfigError, KjupyterWarning
from kjupyter.notebook.text_view import summary
from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster
from tests.k8s.helpers import kube_session

CELL = """
FACTOR = 3
def scale(x):
    return x * FACTOR + {delta}
"""


def notebook_function(delta: int = 0) -> Callable[[int], int]:
    """A function as a notebook cell defines it (shipped by value: its code is in the key)."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(CELL.format(delta=delta), "/tmp/ipykernel_7/cell.py", "exec"), ns)
    return ns["scale"]  # type: ignore[no-any-return]


def jobs_created(cluster: FakeCluster) -> int:
    return len(cluster.requests("create", "jobs"))


def writes(cluster: FakeCluster) -> list[Any]:
    return [r for r in cluster.requests() if r.method in ("POST", "PUT", "PATCH", "DELETE")]


def entries(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "store" / names.current_user() / st.CACHE_FOLDER
    return sorted(p for p in folder.iterdir() if ".tmp-" not in p.name) if folder.exists() else []


def test_a_cache_hit_creates_nothing_and_says_so(session: Session, cluster: FakeCluster, tmp_path: Path) -> None:
    f = remote(notebook_function(), cache=True)
    first = f.submit(4)
    assert first.result(60) == 12
    assert jobs_created(cluster) == 1 and len(entries(tmp_path)) == 1
    cluster.clear_requests()
    again = f.submit(4)
    assert again.result(5) == 12
    assert writes(cluster) == []  # no Job, no Secret, no pod: not one POST, PUT, PATCH or DELETE
    assert not [r for r in cluster.requests() if r.resource in ("jobs", "pods", "pods/log")]
    assert again.run_id == first.run_id and again.done()
    text = summary(again)
    assert text.startswith(f"kjupyter: cached: result of run {first.run_id} from ")
    assert text.endswith(", kjupyter gc expires it")
    seen: list[Any] = []
    again.subscribe(seen.append)
    again.wait_ended(5)
    assert [type(e).__name__ for e in seen] == ["Diagnosis", "RunFinished"]
    assert seen[0].reason == "Cached" and first.run_id in seen[0].sentence
    assert f.with_options(cache=False)(4) == 12 and jobs_created(cluster) == 1  # without cache: it runs


def test_a_change_of_code_argument_or_image_misses(session: Session, cluster: FakeCluster, tmp_path: Path) -> None:
    f = remote(notebook_function(), cache=True)
    assert f(2) == 6
    assert f(2) == 6
    assert jobs_created(cluster) == 1
    assert remote(notebook_function(delta=1), cache=True)(2) == 7  # the code changed
    assert jobs_created(cluster) == 2
    assert f(3) == 9  # an argument changed
    assert jobs_created(cluster) == 3
    assert f.with_options(image="python:3.12")(2) == 6  # the image changed
    assert jobs_created(cluster) == 4
    assert f.with_options(timeout="1h", cpu=2)(2) == 6  # neither changes a result: a hit
    assert jobs_created(cluster) == 4
    assert len(entries(tmp_path)) == 4


def test_a_map_is_cached_as_a_whole(session: Session, cluster: FakeCluster) -> None:
    f = remote(notebook_function(), cache=True)
    assert f.map([1, 2, 3], parallelism=2) == [3, 6, 9]
    cluster.clear_requests()
    future = f.submit_map([1, 2, 3])
    assert future.result(5) == [3, 6, 9]
    assert writes(cluster) == []
    assert future.counts == {"total": 3, "succeeded": 3, "failed": 0, "cancelled": 0}
    assert f.map([1, 2, 4]) == [3, 6, 12] and jobs_created(cluster) == 1  # another item: the map runs


def test_a_failed_call_is_not_cached(session: Session, cluster: FakeCluster, tmp_path: Path) -> None:
    f = remote(notebook_function(), cache=True)
    with pytest.raises(TypeError):
        f("x")  # "x" * 3 + 0
    assert entries(tmp_path) == []
    with pytest.raises(TypeError):
        f("x")
    assert jobs_created(cluster) == 2


@pytest.mark.parametrize("tamper", ["result", "entry"])
def test_a_tampered_cache_entry_is_refused_in_one_sentence_and_the_call_runs_anew(
    session: Session, cluster: FakeCluster, tmp_path: Path, tamper: str
) -> None:
    f = remote(notebook_function(), cache=True)
    first = f.submit(5)
    assert first.result(60) == 15
    other = f.submit(6)
    assert other.result(60) == 18
    [entry, entry_6] = sorted(entries(tmp_path), key=lambda p: first.run_id in p.read_bytes().decode("latin-1"))[::-1]
    if tamper == "result":  # someone who can write to the store replaces the result with another pickle
        path = tmp_path / "store" / session.user / first.run_id / "results" / "0.pkl"
        path.write_bytes(path.read_bytes().replace(b"\x0f", b"\x10"))  # 15 -> 16 in the pickle
        expected = "failed authentication: its HMAC does not match the run's key"
    else:  # ... or points the entry of f(5) at the result of f(6), a genuine result of another call
        body = json.loads(entry.read_bytes()[:-32])
        entry.write_bytes(json.dumps({**body, "run_id": other.run_id}).encode() + entry_6.read_bytes()[-32:])
        expected = "failed authentication"
    with pytest.warns(KjupyterWarning) as caught:
        assert f(5) == 15  # not 16, not 18: the tampered entry was refused, and the call ran again
    [warning] = [str(w.message) for w in caught if issubclass(w.category, KjupyterWarning)]
    assert "kjupyter: the cache entry " in warning and expected in warning and "It was not unpickled" in warning
    assert warning.endswith("the call runs anew and replaces it.")
    assert jobs_created(cluster) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cluster.clear_requests()
        assert f(5) == 15  # the new run's entry replaced the tampered one
        assert writes(cluster) == []


def test_gc_expires_cache_entries_with_their_runs(session: Session, cluster: FakeCluster, tmp_path: Path) -> None:
    f = remote(notebook_function(), cache=True)
    assert f(1) == 3 and f(2) == 6
    assert len(entries(tmp_path)) == 2
    store = session.backend(session.config.profile()).store
    assert store is not None
    report = retention.collect_runs(store, session.user, 0, now=time.time() + 10, dry_run=True)
    assert len(report.cache_expired) == 2 and len(entries(tmp_path)) == 2  # a dry run deletes nothing
    report = retention.collect_runs(store, session.user, 0, now=time.time() + 10)
    assert len(report.deleted) == 2 and len(report.cache_expired) == 2
    assert "deleted 2 cache entries of those runs" in report.summary()
    assert entries(tmp_path) == []
    assert f(1) == 3 and jobs_created(cluster) == 3  # expired: it runs again


def test_an_entry_whose_run_is_gone_is_never_served(session: Session, cluster: FakeCluster, tmp_path: Path) -> None:
    f = remote(notebook_function(), cache=True)
    first = f.submit(1)
    assert first.result(60) == 3
    store = session.backend(session.config.profile()).store
    assert store is not None
    store.run(session.user, first.run_id).delete()  # collected by another tool, its entry left behind
    assert f(1) == 3 and jobs_created(cluster) == 2


def test_cache_without_a_store_is_refused_in_one_sentence(tmp_path: Path, cluster: FakeCluster) -> None:
    for _ in kube_session(tmp_path, cluster.kubeconfig_path, store=False):
        with pytest.raises(ConfigError) as info:
            remote(notebook_function(), cache=True)(1)
        assert str(info.value) == (
            "cache=True needs a run store, and cluster 'kube' has none (its results travel in pod logs only): "
            'set `store = "s3://bucket/prefix"` in [clusters.kube], or drop cache=True'
        )
        assert jobs_created(cluster) == 0
