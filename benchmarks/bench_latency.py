"""Submit latency, time to first log line and log latency: local backend and fake cluster.

    python -m benchmarks.bench_latency [--quick]

On the fake cluster (tests/fakekube) pods run the real `python -m kjupyter.runner`
as host processes; log lines travel runner -> pod log -> followed log stream ->
LogLine event, as on a real cluster. The time to submit a 10,000-item map on the
fake cluster is measured by bench_control_plane.py.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from benchmarks.common import Row, percentile, print_rows, save


def stamp_lines(n: int, gap: float) -> int:
    for _ in range(n):
        print(f"t={time.time():.6f}", flush=True)
        time.sleep(gap)
    return n


def noop() -> None:
    return None


def log_latencies(fn_submit, lines: int) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    from kjupyter.run_events import LogLine

    latencies: list[float] = []
    first: list[float] = []
    started = time.time()
    done = threading.Event()

    def listen(event: object) -> None:
        if isinstance(event, LogLine) and event.text.startswith("t="):
            now = time.time()
            latencies.append(now - float(event.text[2:]))
            if not first:
                first.append(now - started)
            if len(latencies) == lines:
                done.set()

    future = fn_submit()
    future.subscribe(listen)
    future.result(120)
    done.wait(10)
    return latencies, first[0] if first else float("nan")


def run(quick: bool = False) -> list[Row]:
    return local_rows(quick) + fake_cluster_rows(quick)


def fake_cluster_rows(quick: bool = False) -> list[Row]:
    from benchmarks.fakecluster import fake_cluster, kube_session
    from kjupyter import remote

    lines = 10 if quick else 200
    with fake_cluster() as cluster, kube_session(cluster):
        remote(noop).submit().result(120)  # the session's client and watches are up now, as in a notebook
        lat, first = log_latencies(lambda: remote(stamp_lines).submit(lines, 0.01), lines)
        p50, p95 = statistics.median(lat), percentile(lat, 0.95)
        rows = [
            Row("latency", "fake cluster: log latency p50", p50 * 1000, "ms", target="< 200 ms", passed=p50 < 0.2),
            Row("latency", "fake cluster: log latency p95", p95 * 1000, "ms"),
            Row("latency", "fake cluster: submit to first log line", first * 1000, "ms"),
        ]
        submits = []
        for _ in range(2 if quick else 20):
            cluster.clear_requests()
            t = time.perf_counter()
            future = remote(noop).submit()
            submits.append(time.perf_counter() - t)
            created = cluster.requests("create", "jobs", name=None)
            if not any(r.status == 201 for r in created):  # submit() returns once the Job is accepted
                raise AssertionError(f"submit() returned before the Job was accepted: {created}")
            future.result(120)
    med = statistics.median(submits)
    rows.append(Row("latency", "fake cluster: submit() returns, Job accepted (p50)", med * 1000, "ms",
                    target="< 50 ms", passed=med < 0.05))  # fmt: skip
    return rows


def local_rows(quick: bool = False) -> list[Row]:
    import kjupyter.session as session_mod
    from kjupyter import remote

    session_mod.get_session()
    lines = 20 if quick else 200
    lat, first = log_latencies(lambda: remote(stamp_lines).submit(lines, 0.01), lines)
    p50, p95 = statistics.median(lat), percentile(lat, 0.95)
    rows = [
        Row("latency", "local: log latency p50", p50 * 1000, "ms", target="< 200 ms", passed=p50 < 0.2),
        Row("latency", "local: log latency p95", p95 * 1000, "ms"),
        Row("latency", "local: submit to first log line", first * 1000, "ms"),
    ]
    submits = []
    for _ in range(5 if quick else 30):
        t = time.perf_counter()
        future = remote(noop).submit()
        submits.append(time.perf_counter() - t)
        future.result(60)
    med = statistics.median(submits)
    rows.append(Row("latency", "local: submit() returns (p50)", med * 1000, "ms", target="< 50 ms", passed=med < 0.05))
    t = time.perf_counter()
    future = remote(noop).submit_map(range(10_000 if not quick else 1000), parallelism=1)
    submit_map = time.perf_counter() - t
    future.cancel()
    future.wait_ended(30)
    n = 10_000 if not quick else 1000
    rows.append(Row("latency", f"local: submit a {n}-item map", submit_map, "s", target="< 2 s", passed=submit_map < 2))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    rows = run(parser.parse_args().quick)
    save("latency", rows)
    print_rows("Latency (local backend and fake cluster)", rows)
