"""Run every benchmark and print the tables for BENCHMARKS.md.

    python -m benchmarks.run_all [--quick] [--reuse] [--only bench_latency,bench_startup]

``--reuse``: the control-plane benchmark takes the map sizes it measured before
from benchmarks/results/control_plane_raw_p50.json (a 10,000-item map runs for
tens of minutes on 2 cores) and measures only the missing ones.
"""

from __future__ import annotations

import argparse
import importlib

from benchmarks.common import Row, machine, missed_targets, print_rows, save

BENCHMARKS = [
    ("bench_control_plane", "Control-plane load (fake cluster)"),
    ("bench_latency", "Latency (local backend and fake cluster)"),
    ("bench_startup", "Start-up"),
    ("bench_store", "Store throughput"),
    ("bench_local_map", "Local map throughput"),
    ("bench_worker_maps", "Worker-pod maps (fake cluster)"),
    ("bench_warm", "Warm workers (fake cluster)"),
    ("bench_failover", "GPU fallbacks (two fake clusters)"),
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
    parser.add_argument("--reuse", action="store_true", help="control plane: reuse sizes measured before")
    parser.add_argument("--only", help="comma-separated benchmark modules to run")
    args = parser.parse_args()
    quick = args.quick
    print(f"Machine: {machine()}")
    measured: list[Row] = []
    for name, title in available():
        if args.only and name not in args.only.split(","):
            continue
        module = importlib.import_module(f"benchmarks.{name}")
        rows = module.run(quick, reuse=True) if args.reuse and name == "bench_control_plane" else module.run(quick)
        save(name.removeprefix("bench_"), rows)
        print_rows(title, rows)
        measured += rows
    if summary := missed_targets(measured):
        print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
