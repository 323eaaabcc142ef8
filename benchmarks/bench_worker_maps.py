"""Worker-pod maps (#15) on the fake cluster, side by side with ``items_per_pod=1`` (one pod per item).

Rows: 1,000 items of 10 ms at P=20; 100 items at P=4 where one takes 5 s and the rest 50 ms
(balance); 200 items at P=4 with one worker pod deleted mid-map. Each row: wall time, pods
created, API writes, log reads, and whether every result came back once.

    PYTHONPATH=. python -m benchmarks.bench_worker_maps [--skip-baseline]
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from kubernetes import client

from benchmarks.fakecluster import BIG_NODE, fake_cluster, kube_session
from kjupyter import remote


def work(args: tuple[int, float]) -> int:
    time.sleep(args[1])
    return args[0]


def row(
    name: str, items: list[tuple[int, float]], parallelism: int, per_pod: bool, kill: bool = False
) -> dict[str, Any]:
    with fake_cluster(nodes=[BIG_NODE], job_backoff=0.0) as cluster, kube_session(cluster, lift_limiter=True):
        remote(work).submit((0, 0.0)).result(60)  # watches open
        cluster.clear_requests()
        fn = remote(work, retries=1, items_per_pod=1 if per_pod else None)
        started = time.monotonic()
        future = fn.submit_map(items, parallelism=parallelism)
        if kill:

            def killer() -> None:
                core = client.CoreV1Api(cluster.api_client())
                time.sleep(1.5)
                pods = [p for p in cluster.objects("pods") if p["metadata"]["name"].startswith(future.run_id)
                        and p.get("status", {}).get("phase") == "Running"]  # fmt: skip
                if pods:
                    core.delete_namespaced_pod(pods[0]["metadata"]["name"], "default")

            threading.Thread(target=killer, daemon=True).start()
        results = future.result(900)
        wall = time.monotonic() - started
        future.wait_ended(60)
        pods = [p for p in cluster.objects("pods") if p["metadata"]["name"].startswith(future.run_id)]
        writes = [r for r in cluster.requests() if r.method in ("POST", "PUT", "PATCH", "DELETE")]
        return {
            "row": name, "mode": "items_per_pod=1" if per_pod else "workers", "items": len(items), "P": parallelism,
            "wall_s": round(wall, 2), "pods": len(pods), "api_writes": len(writes),
            "log_reads": len(cluster.requests("get", "pods/log")),
            "all_once": results == [i for i, _ in items],
        }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    cases = [
        ("1000 x 10ms, P=20", [(i, 0.01) for i in range(1000)], 20, False),
        ("100 items, one 5s, P=4", [(i, 5.0 if i == 0 else 0.05) for i in range(100)], 4, False),
        ("200 items, a worker killed, P=4", [(i, 0.05) for i in range(200)], 4, True),
    ]
    for name, items, p, kill in cases:
        for per_pod in (False, True):
            if per_pod and args.skip_baseline:
                continue
            print(row(name, items, p, per_pod, kill), flush=True)


if __name__ == "__main__":
    main()
