"""Each benchmark runs once in quick mode, so none of them can rot.

Timings are not asserted here (they belong in BENCHMARKS.md); that every
benchmark runs and reports its rows is.
"""

from __future__ import annotations

import math

import pytest

from benchmarks import run_all
from kjupyter.session import Session


@pytest.mark.parametrize("name", [name for name, _ in run_all.available()])
def test_benchmark_runs_in_quick_mode(name: str, local_session: Session) -> None:
    import importlib

    rows = importlib.import_module(f"benchmarks.{name}").run(True)
    assert rows, f"{name} reported nothing"
    for row in rows:
        assert row.metric and row.unit
        assert isinstance(row.kjupyter, float | int) and (math.isfinite(row.kjupyter) or row.passed is False)
