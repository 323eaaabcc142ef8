"""Worker-pod maps on the fake cluster, side by side with ``items_per_pod=1`` (a pod per item).

Rows, each in one run beside its baseline:

- 1,000 items of 10 ms at P=20: wall time, pods created, log reads, API writes;
- 10,000 items of 1 ms at P=50: runs to completion (no baseline: 10,000 pods would take
  the better part of an hour here);
- 100 items at P=4, one of 5 s and the rest 50 ms (balance: items are claimed dynamically);
- 200 items at P=4 with one worker pod deleted mid-map: every result once, the lost
  items' retries counted.

The pods run ``python -m kjupyter.runner`` as real processes, so "one pod start" is
measured here too (a one-item call on the same cluster, its watches already open).

    PYTHONPATH=. python -m benchmarks.bench_worker_maps [--quick] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.common import Row, print_rows, save
from benchmarks.fakecluster import BIG_NODE, Census, Counts, fake_cluster, kube_session
from benchmarks.fastpods import Zygote


def work(args: tuple[int, float]) -> int:
    time.sleep(args[1])
    return args[0]


@dataclass
class Measured:
    wall: float
    counts: Counts
    all_once: bool
    lost_retries: int
    pod_start: float  # a one-item call, submit to result, on the same cluster (watches open)
    map_overhead: float  # a map of P empty items at parallelism P: a map's fixed cost (pods start and end)


def measure(items: list[tuple[int, float]], parallelism: int, *, per_pod: bool, kill: bool = False,
            zygote: Zygote | None = None) -> Measured:  # fmt: skip
    from kubernetes import client

    from kjupyter import remote
    from kjupyter.run_events import Diagnosis

    options = zygote.options() if zygote is not None else {}
    with (
        fake_cluster(nodes=[dict(BIG_NODE)], job_backoff=0.0, **options) as cluster,
        kube_session(cluster, lift_limiter=True),
    ):
        remote(work).submit((0, 0.0)).result(120)  # the session's watches open, then one pod start alone:
        t1 = time.monotonic()
        remote(work).submit((0, 0.0)).result(120)
        pod_start = time.monotonic() - t1
        t2 = time.monotonic()
        remote(work).submit_map([(i, 0.0) for i in range(parallelism)], parallelism=parallelism).result(120)
        map_overhead = time.monotonic() - t2
        fn = remote(retries=1, items_per_pod=1 if per_pod else None)(work)
        census = Census(cluster).start()
        started = time.monotonic()
        future = fn.submit_map(items, parallelism=parallelism)
        lost: list[Any] = []
        future.subscribe(lambda e: lost.append(e) if isinstance(e, Diagnosis) and e.reason == "Retrying" else None)
        if kill:

            def killer() -> None:
                core = client.CoreV1Api(cluster.api_client())
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    running = [p for p in cluster.objects("pods") if p["metadata"]["name"].startswith(future.run_id)
                               and p.get("status", {}).get("phase") == "Running"]  # fmt: skip
                    if running and time.monotonic() - started > 1.0:
                        core.delete_namespaced_pod(running[0]["metadata"]["name"], "default")
                        return
                    time.sleep(0.05)

            threading.Thread(target=killer, daemon=True).start()
        results = future.result(3600)
        wall = time.monotonic() - started
        future.wait_ended(60)
        counts = census.stop(wall)
        return Measured(wall, counts, results == [i for i, _ in items], len(lost), pod_start, map_overhead)


def _of(measured: Measured | None, value: Callable[[Measured], float]) -> float | None:
    return None if measured is None else value(measured)


def run(quick: bool = False, skip_baseline: bool = False) -> list[Row]:
    n, big = (20, 200) if quick else (1000, 10_000)
    cases = [
        ("short", f"{n} items of 10 ms, P=20", [(i, 0.01) for i in range(n)], 20, False),
        ("large", f"{big} items of 1 ms, P=50", [(i, 0.001) for i in range(big)], 50, False),
        ("balance", "100 items, one of 5 s and 99 of 50 ms, P=4",
         [(i, (1.0 if quick else 5.0) if i == 0 else 0.05) for i in range(40 if quick else 100)], 4, False),
        ("killed", "200 items of 50 ms, P=4, a worker pod deleted mid-map",
         [(i, 0.05) for i in range(40 if quick else 200)], 4, True),
    ]  # fmt: skip
    rows: list[Row] = []
    with Zygote() as zygote:  # pods fork from a warm runner, as pods on many nodes start side by side
        for key, label, items, p, kill in cases:
            rows += case_rows(key, label, items, p, kill, zygote, skip_baseline or (quick and key != "short"))
    return rows


def case_rows(key: str, label: str, items: list[tuple[int, float]], p: int, kill: bool, zygote: Zygote,
              skip_baseline: bool) -> list[Row]:  # fmt: skip
    rows: list[Row] = []
    new = measure(items, p, per_pod=False, kill=kill, zygote=zygote)
    skip = skip_baseline or key == "large"
    old = None if skip else measure(items, p, per_pod=True, kill=kill, zygote=zygote)
    base = "items_per_pod=1"
    t = items[1][1]
    if key == "short":
        bound = 2 * (new.pod_start + len(items) * t / p)
        rows.append(Row("worker_maps", f"{label}: wall time", new.wall, "s", base, _of(old, lambda m: m.wall),
                        f"<= 2 x (pod start {new.pod_start:.2f} s + N*t/P) = {bound:.1f} s, and >= 5x faster",
                        new.wall <= bound and (old is None or old.wall >= 5 * new.wall)))  # fmt: skip
        rows.append(Row("worker_maps", f"{label}: pods created", new.counts.pods_created, "pods", base,
                        _of(old, lambda m: m.counts.pods_created), f"<= {p}", new.counts.pods_created <= p))  # fmt: skip
        rows.append(Row("worker_maps", f"{label}: log reads", new.counts.log_reads, "requests", base,
                        _of(old, lambda m: m.counts.log_reads), "<= 25", new.counts.log_reads <= 25))  # fmt: skip
        rows.append(Row("worker_maps", f"{label}: API writes", new.counts.writes, "requests", base,
                        _of(old, lambda m: m.counts.writes), "constant in N (3)", new.counts.writes == 3))  # fmt: skip
    elif key == "large":
        rows.append(Row("worker_maps", f"{label}: wall time", new.wall, "s", target="runs to completion",
                        passed=new.all_once,
                        note=f"{new.counts.pods_created} pods, {new.counts.writes} writes, "
                             f"{new.counts.reads} reads ({new.counts.log_reads} log), "
                             f"{new.counts.watches} watch requests"))  # fmt: skip
    elif key == "balance":
        slow = items[0][1]
        overhead = new.map_overhead
        rows.append(Row("worker_maps", f"{label}: wall time", new.wall, "s", base, _of(old, lambda m: m.wall),
                        f"<= {slow:g} s + 2 x overhead (a map of {p} empty items: {overhead:.2f} s)",
                        new.wall <= slow + 2 * overhead))  # fmt: skip
    else:
        rows.append(Row("worker_maps", f"{label}: every result once", float(new.all_once), "bool", base,
                        _of(old, lambda m: float(m.all_once)), "all results, none twice", new.all_once,
                        note=f"{new.wall:.1f} s; {new.lost_retries} lost item(s) retried; "
                             f"{new.counts.pods_created} pods"))  # fmt: skip
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    out = run(args.quick, args.skip_baseline)
    save("worker_maps", out)
    print_rows("Worker-pod maps", out)
