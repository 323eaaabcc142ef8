"""Retention of the run store: which runs ``kjupyter gc --older-than 7d`` deletes, and deleting them.

Only the caller's own prefix (``<store>/<user>/``) is ever looked at, and a run
is deleted only when its ``run.json`` says it has finished (succeeded, failed
or cancelled) and it finished (or, lacking that, was created) before the
bound; a run whose every task left a result counts as finished even if no
end was recorded. A run without a readable ``run.json`` is left alone: it may
be one being written right now. ``include_unfinished`` also removes runs that never
recorded an end but were created before the bound (their client died).

Cache entries (``<store>/<user>/.cache/<key>``, :mod:`kjupyter.cache`) go with their runs: an entry
whose run was deleted, or is no longer in the store, is removed in the same pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kjupyter import integrity
from kjupyter.errors import StoreError
from kjupyter.store import CACHE_FOLDER, RUN_JSON, RunDir, RunStore

FINISHED = frozenset({"Succeeded", "Failed", "Cancelled"})
DEFAULT_OLDER_THAN = 7 * 86400.0


@dataclass
class GcReport:
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> why it was not considered
    cache_expired: list[str] = field(default_factory=list)  # keys of the cache entries removed with their runs

    def summary(self, dry_run: bool = False) -> str:
        verb = "would delete" if dry_run else "deleted"
        text = f"{verb} {len(self.deleted)} run(s), kept {len(self.kept)}"
        text += f", skipped {len(self.skipped)} without readable metadata" if self.skipped else ""
        return text + (f"; {verb} {len(self.cache_expired)} cache entries of those runs" if self.cache_expired else "")


def is_collectable(meta: dict[str, Any], user: str, bound: float, *, include_unfinished: bool = False) -> bool:
    """Whether the run described by ``meta`` (its run.json) may be deleted by ``user`` at ``bound``."""
    if str(meta.get("user", "")) != user:
        return False  # never another user's run, even if it sits under our prefix
    created = _number(meta.get("created"))
    if created is None:
        return False
    if str(meta.get("phase", "")) in FINISHED:
        return (_number(meta.get("finished")) or created) < bound
    return include_unfinished and created < bound


def collect_runs(
    store: RunStore,
    user: str,
    older_than: float = DEFAULT_OLDER_THAN,
    *,
    dry_run: bool = False,
    include_unfinished: bool = False,
    now: float | None = None,
) -> GcReport:
    """Delete ``user``'s finished runs that ended more than ``older_than`` seconds ago."""
    bound = (time.time() if now is None else now) - older_than
    report = GcReport()
    for run_id in store.run_ids(user):
        run_dir = store.run(user, run_id)
        try:
            meta = run_dir.read_json(RUN_JSON)
        except (StoreError, ValueError) as exc:
            report.skipped[run_id] = str(exc)
            continue
        if str(meta.get("phase", "")) not in FINISHED and _all_results_written(run_dir, meta):
            meta = {**meta, "phase": "Succeeded"}  # every task left an outcome: nothing can still write here
        if str(meta.get("run_id", run_id)) != run_id or not is_collectable(
            meta, user, bound, include_unfinished=include_unfinished
        ):
            report.kept.append(run_id)
            continue
        if not dry_run:
            run_dir.delete()
        report.deleted.append(run_id)
    report.cache_expired = expire_cache(store, user, report.deleted, dry_run=dry_run)
    return report


def expire_cache(store: RunStore, user: str, gone: Iterable[str] = (), *, dry_run: bool = False) -> list[str]:
    """Remove the cache entries whose run is in ``gone`` or no longer in the store; their keys."""
    folder = store.run(user, CACHE_FOLDER)
    gone = set(gone)
    names = [n for n in folder.list_names("") if ".tmp-" not in n]  # (not an entry being written)
    if not names:
        return []
    found = folder.fs.cat([f"{folder.path}/{n}" for n in names], on_error="return")
    expired = []
    for path, data in found.items():
        name = str(path).rstrip("/").rsplit("/", 1)[-1]
        try:
            run_id = str(json.loads(bytes(data)[: -integrity.TAG_SIZE]).get("run_id", ""))
            alive = run_id not in gone and bool(run_id) and store.run(user, run_id).exists(RUN_JSON)
        except Exception:
            alive = False  # not an entry this kjupyter can read: nothing will ever serve it
        if not alive:
            expired.append(name)
            if not dry_run:
                folder.fs.rm_file(str(path))
    return sorted(expired)


def _all_results_written(run_dir: RunDir, meta: dict[str, Any]) -> bool:
    """Whether each of the run's tasks left a result or error envelope (its phase may never have been recorded)."""
    count = _number(meta.get("count"))
    if not count:
        return False
    try:
        found = run_dir.fs.ls(f"{run_dir.path}/results", detail=False)
    except (OSError, ValueError):
        return False
    names = {str(p).rstrip("/").rsplit("/", 1)[-1] for p in found}
    return all(f"{i}.pkl" in names for i in range(int(count)))


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
