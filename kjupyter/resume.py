"""``f.map(items, resume=RUN_ID)``: rerun the failed and missing items of a finished map from the run store.

The run must be yours (``<store>/<you>/<run>``), of the same function and number of items, finished
or cancelled, and its key must be on this machine. Each stored result, of the run and of its
earlier reruns (``parts`` in its ``run.json``), is authenticated with its run's key before it is
unpickled: an error, a missing result or one that does not verify is rerun, never unpickled.
The rerun itself is :func:`kjupyter.reruns.start_part`: one new run over the other items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kjupyter import payload as pl
from kjupyter import run_keys
from kjupyter import store as st
from kjupyter.backends.base import MAP, Backend
from kjupyter.errors import BackendError, IntegrityError
from kjupyter.futures import MapFuture
from kjupyter.reruns import Source, start_part
from kjupyter.run_events import Phase


def resume(session: Any, fn: Callable[..., Any], items: Iterable[Any], options: dict[str, Any], run_id: str,
           return_exceptions: bool = False) -> MapFuture:  # fmt: skip
    """``f.map(items, resume=RUN_ID)``: rerun the failed and missing items of map ``run_id`` from its store."""
    profile = session.profile_for(options)
    spec = session.spec_for(profile, options)
    backend: Backend = session.backend(profile)
    values = list(items)
    store = getattr(backend, "store", None)
    if not isinstance(store, st.RunStore):
        raise BackendError(f"run {run_id} cannot be resumed: cluster {profile.name!r} has no store, so the results "
                           "of its items were not kept (they travelled in pod logs); configure store = "
                           f"\"s3://bucket/prefix\" in [clusters.{profile.name}] for maps you may want to resume")  # fmt: skip
    run_dir = store.run(session.user, run_id)
    if not run_dir.exists(st.RUN_JSON):
        owner = _owner(store, run_id)
        if owner is not None:
            raise IntegrityError(f"run {run_id} belongs to user {owner!r}, not to you ({session.user!r}): kjupyter "
                                 "resumes only your own runs, whose results are signed with a key that only their "
                                 "owner holds; run the map yourself instead")  # fmt: skip
        raise BackendError(f"no run {run_id!r} of yours in the store of cluster {profile.name!r} ({store.url}); "
                           "`kjupyter jobs` lists your runs")  # fmt: skip
    meta = run_dir.read_json(st.RUN_JSON)
    name = getattr(fn, "__qualname__", type(fn).__name__)
    if meta.get("kind") != MAP:
        raise BackendError(f"run {run_id} is a single call, not a map: resume= reruns the failed items of a map")
    if str(meta.get("function", "")) != name:
        raise BackendError(f"run {run_id} mapped {meta.get('function')!r}, not {name!r}: resume= reruns a map with "
                           "the same function (its stored results are that function's)")  # fmt: skip
    if int(meta.get("count", -1)) != len(values):
        raise BackendError(f"run {run_id} mapped {meta.get('count')} item(s), and {len(values)} were given: resume= "
                           "needs the same items, in the same order")  # fmt: skip
    if not Phase(str(meta.get("phase", "Pending"))).finished:
        raise BackendError(f"run {run_id} is still {meta.get('phase', 'Pending')}: resume= reruns a finished or "
                           f"cancelled map; wait for it, or `kjupyter cancel {run_id}` first")  # fmt: skip
    key = run_keys.load_key(run_id) or backend.run_key(run_id)
    if not key:
        raise IntegrityError(f"the stored results of run {run_id} cannot be authenticated from this machine (its key "
                             f"is not in {run_keys.keys_dir()}), so none of them will be unpickled; resume it from "
                             "the machine that started it")  # fmt: skip
    ok: dict[int, Any] = {}
    _stored(run_dir, run_id, key, list(range(len(values))), ok)
    for part, positions in sorted((meta.get("parts") or {}).items()):  # what earlier reruns of it made
        part_key = run_keys.load_key(part) or backend.run_key(part)
        if part_key and isinstance(positions, list) and all(isinstance(p, int) for p in positions):
            _stored(store.run(session.user, part), part, part_key, positions, ok)
    source = Source(session, fn, MAP, values, spec, backend, profile.name, return_exceptions)
    return start_part(source, run_id, ok)


def _stored(run_dir: st.RunDir, run_id: str, key: bytes, positions: list[int], ok: dict[int, Any]) -> None:
    """Put in ``ok`` the value of each item of ``positions`` (task j of run ``run_id`` is item ``positions[j]``)
    that has a verified, successful result there."""
    for j, i in enumerate(positions):
        if i in ok or not run_dir.exists(st.result_name(j)):
            continue
        with run_dir.open_read(st.result_name(j)) as f:
            try:  # verified with the run's key before anything is unpickled; an error envelope raises
                ok[i] = pl.load_outcome(f, key=key, index=j, where=f"run {run_id} task {j}")
            except Exception:  # a failed item's error, or a result that does not verify: the item is rerun
                continue


def _owner(store: st.RunStore, run_id: str) -> str | None:
    """The user under whose prefix run ``run_id`` is, if any (one listing of the store's root)."""
    try:
        users = [str(p).rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(store.root, detail=False)]
    except Exception:  # (no listing right: the caller says the run is not found)
        return None
    for user in users:
        if store.run(user, run_id).exists(st.RUN_JSON):
            return user
    return None
