"""Each benchmark runs once in quick mode, so none of them can rot.

Timings are not asserted here (they belong in BENCHMARKS.md); that every
benchmark runs and reports its rows is, and so are the request counts of the
control-plane benchmark, which do not depend on timing.
"""

from __future__ import annotations

import importlib
import math

import pytest

from benchmarks import run_all
from kjupyter.session import Session

GENERIC = [name for name, _ in run_all.available() if name != "bench_control_plane"]


def check_rows(name: str, rows: list) -> None:  # type: ignore[type-arg]
    assert rows, f"{name} reported nothing"
    for row in rows:
        assert row.metric and (row.unit or row.benchmark == "control_plane")
        assert isinstance(row.kjupyter, float | int) and (math.isfinite(row.kjupyter) or row.passed is False)


@pytest.mark.parametrize("name", GENERIC)
def test_benchmark_runs_in_quick_mode(name: str, local_session: Session) -> None:
    check_rows(name, importlib.import_module(f"benchmarks.{name}").run(True))


@pytest.mark.timeout(180)
def test_control_plane_counts_in_quick_mode(local_session: Session) -> None:
    from benchmarks import bench_control_plane as cp

    results = cp.measure(cp.QUICK_SIZES, cp.QUICK_PARALLELISM)
    for n, (kj, alt, _) in results.items():
        # kjupyter: three writes (the Job, suspended; its Secret with the run's key; the Job resumed), two
        # watches (pods, jobs) open at once, whatever N; the jobs are listed twice: the watch's first list,
        # and the session's one look for runs of a dead kernel to reap
        assert kj.writes == 3 and kj.created_by_client == 2 and kj.jobs_created == 1, kj.by_kind
        assert kj.by_kind.get("POST create secrets") == 1 and kj.by_kind.get("PATCH patch jobs") == 1, kj.by_kind
        assert kj.watches == 2 and kj.max_open_watches == 2, kj.by_kind
        assert kj.pods_created == min(n, cp.QUICK_PARALLELISM), kj  # worker pods: at most P, whatever N
        assert kj.by_kind.get("GET list pods") == 1 and kj.by_kind.get("GET list jobs") == 2, kj.by_kind
        # the one-Job-per-item pattern: a Job per item, a GET and a LIST per poll, no watch
        assert alt.writes == n and alt.created_by_client == n and alt.jobs_created == n and alt.pods_created == n
        assert alt.watches == 0 and alt.by_kind["GET get jobs"] == alt.by_kind["GET list pods"] >= n, alt.by_kind
    rows = cp.rows_for(results, cp.QUICK_PARALLELISM)
    check_rows("bench_control_plane", rows)
    verdicts = {r.metric: r.passed for r in rows if r.passed is not None}
    assert verdicts and all(verdicts.values()), verdicts
    assert cp.projected_polls(0.4) == 1 and cp.projected_polls(1.0) == 2 and cp.projected_polls(60) == 7
