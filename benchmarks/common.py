"""Shared helpers: repeated timing, result rows, and the report table."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"


@dataclass
class Row:
    """One measured figure, with its alternative and target when there is one."""

    benchmark: str
    metric: str
    kjupyter: float
    unit: str
    alternative: str = ""
    alternative_value: float | None = None
    target: str = ""
    passed: bool | None = None
    note: str = ""  # shown after the kjupyter figure

    @property
    def ratio(self) -> float | None:
        if self.alternative_value in (None, 0):
            return None
        return self.kjupyter / self.alternative_value  # type: ignore[operator]


def median_of(fn: Callable[[], float], repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, "
        f"{platform.platform()}"
    )


def save(name: str, rows: list[Row]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "rows": [asdict(r) for r in rows]}, indent=1))
    return path


def table(rows: list[Row]) -> str:
    lines = ["| metric | kjupyter | alternative | ratio | target | pass |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        alt = f"{r.alternative}: {r.alternative_value:.4g} {r.unit}".rstrip() if r.alternative_value is not None else "-"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        ok = {True: "yes", False: "NO", None: "-"}[r.passed]
        value = f"{r.kjupyter:.4g} {r.unit}".rstrip() + (f" ({r.note})" if r.note else "")
        lines.append(f"| {r.metric} | {value} | {alt} | {ratio} | {r.target or '-'} | {ok} |")
    return "\n".join(lines)


def missed_targets(rows: list[Row]) -> str:
    """The line that closes a run: the rows whose target was missed ("" when none)."""
    missed = [r for r in rows if r.passed is False]
    return "\nMissed targets: " + "; ".join(f"{r.benchmark}: {r.metric}" for r in missed) if missed else ""


def print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n### {title}\n")
    print(table(rows))
