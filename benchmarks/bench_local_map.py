"""Local backend map throughput against ProcessPoolExecutor and joblib, same machine, same run.

    python -m benchmarks.bench_local_map [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time

from benchmarks.common import Row, print_rows, save, timed


def busy(seconds: float) -> float:
    """Sleep-free work would compete for the 2 cores with the launcher; sleeping measures overhead."""
    time.sleep(seconds)
    return seconds


def run(quick: bool = False) -> list[Row]:
    import joblib  # type: ignore[import-untyped]

    import kjupyter.session as session_mod
    from kjupyter import remote
    from kjupyter.session import Session, _session_lock

    tasks = 20 if quick else 200
    rows = []
    with _session_lock:
        session_mod._session = session_mod._session or Session()
    fn = remote(busy)
    # The session's first map starts the local fork server (kjupyter/backends/local/forks.py), as a
    # kernel's first run does; ProcessPoolExecutor forks from this process, which has it all imported.
    first = timed(lambda: fn.submit_map([0.0, 0.0], parallelism=2).result())
    later = timed(lambda: fn.submit_map([0.0, 0.0], parallelism=2).result())
    rows.append(Row("local-map", "a map of 2 empty tasks: the session's first (starts the fork server)", first, "s",
                    "the next one", later))  # fmt: skip
    for duration in (0.02, 0.2):
        items = [duration] * tasks
        kj = timed(lambda: fn.submit_map(items, parallelism=2).result())  # noqa: B023
        with concurrent.futures.ProcessPoolExecutor(2) as pool:
            ppe = timed(lambda: list(pool.map(busy, items)))  # noqa: B023
        jl = timed(lambda: joblib.Parallel(n_jobs=2)(joblib.delayed(busy)(d) for d in items))  # noqa: B023
        limit = 1.5 if duration == 0.2 else 1.15
        target, ok = f"within {limit}x of ProcessPoolExecutor", kj / ppe <= limit
        rows.append(Row("local-map", f"{tasks} tasks of {duration * 1000:.0f} ms, parallelism 2", kj, "s",
                        "ProcessPoolExecutor", ppe, target, ok))  # fmt: skip
        rows.append(Row("local-map", f"{tasks} tasks of {duration * 1000:.0f} ms vs joblib", kj, "s", "joblib (loky)", jl))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    rows = run(parser.parse_args().quick)
    save("local_map", rows)
    print_rows("Local map throughput", rows)
