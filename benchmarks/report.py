"""Print the BENCHMARKS.md tables from the figures saved in benchmarks/results/*.json.

    python -m benchmarks.report

Each benchmark saves its rows when it runs (``python -m benchmarks.<name>`` or
``run_all``); this only formats what was measured, with the machine it ran on.
"""

from __future__ import annotations

import json

from benchmarks.common import RESULTS_DIR, Row, missed_targets, table
from benchmarks.run_all import BENCHMARKS


def main() -> int:
    shown: list[Row] = []
    for name, title in BENCHMARKS:
        path = RESULTS_DIR / f"{name.removeprefix('bench_')}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        rows = [Row(**r) for r in data["rows"]]
        print(f"\n### {title}\n\n`python -m benchmarks.{name}` on {data['machine']}\n")
        print(table(rows))
        shown += rows
    if summary := missed_targets(shown):
        print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
