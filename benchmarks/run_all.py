"""Run every benchmark and print the tables for BENCHMARKS.md.

    python -m benchmarks.run_all [--quick]
"""

from __future__ import annotations

import argparse
import importlib

from benchmarks.common import Row, machine, print_rows, save

BENCHMARKS = [
    ("bench_control_plane", "Control-plane load (fake cluster)"),
    ("bench_latency", "Latency (local backend)"),
    ("bench_startup", "Start-up"),
    ("bench_store", "Store throughput"),
    ("bench_local_map", "Local map throughput"),
]


def available() -> list[tuple[str, str]]:
    out = []
    for name, title in BENCHMARKS:
        try:
            importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"benchmarks.{name}":
                raise
            continue
        out.append((name, title))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (what the test suite runs)")
    quick = parser.parse_args().quick
    print(f"Machine: {machine()}")
    failed: list[Row] = []
    for name, title in available():
        rows = importlib.import_module(f"benchmarks.{name}").run(quick)
        save(name.removeprefix("bench_"), rows)
        print_rows(title, rows)
        failed += [r for r in rows if r.passed is False]
    if failed:
        print("\nMissed targets: " + "; ".join(f"{r.benchmark}: {r.metric}" for r in failed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
