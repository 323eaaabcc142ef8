"""Control-plane load of a map on the fake cluster, beside the one-Job-per-item pattern.

    python -m benchmarks.bench_control_plane [--quick] [--sizes 10,100,1000,10000] [--parallelism 50] [--reuse]

Each size's raw counts are saved to results/control_plane_raw_p<P>.json as soon
as it is measured; ``--reuse`` builds the table from sizes found there and
measures only the missing ones (a 10,000-item run takes a long while on 2 cores).

For each size N, on a fresh fake cluster each time (tests/fakekube, counted
from its request log and its store):

- kjupyter: a real ``remote(f).map(range(N), parallelism=P)`` through a
  kubernetes-backend profile, to completion, results checked. Pods run the real
  ``python -m kjupyter.runner`` (handed to a warm zygote, see fastpods.py).
- the alternative, written here with the same official ``kubernetes`` client:
  one Job per item (at most P in flight, a new one as one finishes), status by a
  GET of each Job and a LIST of its pods, polled on a backoff from 0.5 s
  doubling to 30 s, on the real clock. Its pods run no process (the fake's
  container without a command exits at once), so its Jobs finish sooner than
  kjupyter's and it polls less than it would on a real cluster: its read counts
  are a lower bound. ``projected_polls`` gives the count for longer tasks.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, Row, machine, print_rows, save
from benchmarks.fakecluster import BIG_NODE, Census, Counts, fake_cluster, kube_session
from benchmarks.fastpods import Zygote
from kjupyter.backends.kubernetes.watch import WATCH_SECONDS

SIZES = (10, 100, 1000, 10_000)
QUICK_SIZES = (3, 12)
PARALLELISM, QUICK_PARALLELISM = 50, 4
BACKOFF_START, BACKOFF_MAX = 0.5, 30.0
MAX_WRITES = 10
ALT_MEASURED_MAX = 1000  # above this, the one-Job-per-item counts are projected from the largest measured size


def double(x: int) -> int:
    return 2 * x


def cluster_options(zygote: Zygote | None) -> dict[str, Any]:
    """One big node (the scheduler is not what is measured), no schema validation, a slow OOM check."""
    options: dict[str, Any] = {
        "nodes": [dict(BIG_NODE)],
        "validate": False,
        "oom_interval": 5.0,
        "watch_history": 100_000,
    }
    if zygote is not None:
        options.update(zygote.options())
    return options


def kjupyter_map(zygote: Zygote, n: int, parallelism: int, budget: float | None = None) -> tuple[Counts, float]:
    """(counts, seconds to submit) of a map of n items run to completion.

    ``budget``: stop after that many seconds (the map is then cancelled, its
    DELETE counted); ``Counts.completed`` says how many items had finished.
    """
    from kjupyter import remote
    from kjupyter.run_events import TaskFinished

    with fake_cluster(**cluster_options(zygote)) as cluster, kube_session(cluster, lift_limiter=True):
        census = Census(cluster).start()
        start = time.perf_counter()
        future = remote(double).submit_map(range(n), parallelism=parallelism)
        submitted = time.perf_counter() - start
        finished: list[int] = []
        future.subscribe(lambda e: finished.append(1) if isinstance(e, TaskFinished) else None)
        if budget is None or future.wait_ended(budget):
            results = future.result(timeout=3600)
            if results != [2 * i for i in range(n)]:
                raise AssertionError(f"the map of {n} items returned wrong results")
        else:
            done = len(finished)
            future.cancel()
            future.wait_ended(60)
            census.completed = done
        counts = census.stop(time.perf_counter() - start)
    return counts, submitted


def job_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "one-job-per-item"}},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 3600,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "task", "image": "python:3.11"}]}},
        },
    }


def _finished(job: dict[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in job.get("status", {}).get("conditions") or []
    )


def one_job_per_item(n: int, parallelism: int) -> Counts:
    """The pattern of launchers that make one Job per item and poll each with backoff."""
    from kubernetes import client  # type: ignore[import-untyped]

    with fake_cluster(**cluster_options(None)) as cluster:
        api = cluster.api_client()
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        census = Census(cluster).start()
        start = time.perf_counter()
        todo = list(range(n))
        due: list[tuple[float, str, float]] = []  # (when, job name, next backoff)
        while todo or due:
            while todo and len(due) < parallelism:
                name = f"item-{todo.pop(0)}"
                batch.create_namespaced_job("default", job_manifest(name), _preload_content=False)
                heapq.heappush(due, (time.monotonic() + BACKOFF_START, name, BACKOFF_START * 2))
            when, name, backoff = heapq.heappop(due)
            time.sleep(max(0.0, when - time.monotonic()))
            job = json.loads(batch.read_namespaced_job(name, "default", _preload_content=False).data)
            pods = core.list_namespaced_pod("default", label_selector=f"job-name={name}", _preload_content=False)
            pods.data  # noqa: B018  (the launcher reads the pods to report their state)
            if not _finished(job):
                heapq.heappush(due, (time.monotonic() + backoff, name, min(backoff * 2, BACKOFF_MAX)))
        return census.stop(time.perf_counter() - start)


def projected_polls(task_seconds: float) -> int:
    """Polls of one Job that takes ``task_seconds``: one at 0.5 s, 1.5 s, 3.5 s, ... until it is seen done."""
    t, backoff, polls = 0.0, BACKOFF_START, 0
    while True:
        t += backoff
        polls += 1
        if t >= task_seconds:
            return polls
        backoff = min(backoff * 2, BACKOFF_MAX)


def raw_path(parallelism: int) -> Path:
    return RESULTS_DIR / f"control_plane_raw_p{parallelism}.json"


def load_raw(parallelism: int) -> dict[int, tuple[Counts, Counts, float]]:
    """Counts measured earlier (each size is saved as soon as it is measured)."""
    path = raw_path(parallelism)
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {int(n): (Counts(**v["kjupyter"]), Counts(**v["alternative"]), v["submit_s"]) for n, v in data.items()}


def _save_raw(parallelism: int, n: int, result: tuple[Counts, Counts, float]) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = raw_path(parallelism)
    data = json.loads(path.read_text()) if path.exists() else {}
    k, a, submitted = result
    data[str(n)] = {"kjupyter": asdict(k), "alternative": asdict(a), "submit_s": submitted, "machine": machine()}
    path.write_text(json.dumps(data, indent=1))


def measure(
    sizes: tuple[int, ...], parallelism: int, *, reuse: bool = False, keep: bool = False, budget: float | None = None
) -> dict[int, tuple[Counts, Counts, float]]:
    """Run both patterns for each size; ``reuse``: take sizes already in the raw file; ``keep``: save each size."""
    earlier = load_raw(parallelism) if reuse else {}
    out = {n: earlier[n] for n in sizes if n in earlier}
    with Zygote() as zygote:
        for n in sizes:
            if n in out:
                continue
            k, submitted = kjupyter_map(zygote, n, parallelism, budget if n > ALT_MEASURED_MAX else None)
            a = one_job_per_item(n, parallelism) if n <= ALT_MEASURED_MAX else Counts(projected_from=0)
            out[n] = (k, a, submitted)
            if keep:
                _save_raw(parallelism, n, out[n])
            print(
                f"  N={n}: kjupyter {k.seconds:.1f}s {k.by_kind}; one-Job-per-item {a.seconds:.1f}s {a.by_kind}",
                flush=True,
            )
    return out


def project(results: dict[int, tuple[Counts, Counts, float]]) -> None:
    """Fill in the one-Job-per-item counts of sizes not measured, scaled from the largest measured size.

    With at most P Jobs in flight, each Job of that pattern costs the same requests whatever N is
    (a create, then a GET and a LIST per poll), so its counts are linear in N.
    """
    measured = [n for n, (_, a, _) in results.items() if a.projected_from is None]
    if not measured:
        return
    base = max(measured)
    b = results[base][1]
    for n, (k, a, submitted) in list(results.items()):
        if a.projected_from is not None:
            f = n / base
            scaled = Counts(
                writes=round(b.writes * f),
                reads=round(b.reads * f),
                log_reads=round(b.log_reads * f),
                watches=b.watches,
                max_open_watches=b.max_open_watches,
                created_by_client=round(b.created_by_client * f),
                jobs_created=round(b.jobs_created * f),
                pods_created=round(b.pods_created * f),
                seconds=b.seconds * f,
                projected_from=base,
                by_kind={key: round(v * f) for key, v in b.by_kind.items()},
            )
            results[n] = (k, scaled, submitted)


def rows_for(results: dict[int, tuple[Counts, Counts, float]], parallelism: int) -> list[Row]:
    rows: list[Row] = []
    project(results)
    for n, (k, a, _) in results.items():
        alt = "one Job per item" + (f" (projected from N={a.projected_from})" if a.projected_from else "")
        rows += [
            Row("control_plane", f"N={n}: write requests", k.writes, "", alt, a.writes),
            Row(
                "control_plane",
                f"N={n}: read requests (status: lists, gets, events)",
                k.status_reads,
                "",
                alt,
                a.status_reads,
            ),
            Row("control_plane", f"N={n}: read requests (pod logs)", k.log_reads, "", alt, a.log_reads),
            Row(
                "control_plane",
                f"N={n}: watch connections opened (max open at once)",
                k.watches,
                "",
                alt,
                a.watches,
                note=f"max open at once: {k.max_open_watches}",
            ),
            Row(
                "control_plane",
                f"N={n}: objects created by the client",
                k.created_by_client,
                "",
                alt,
                a.created_by_client,
            ),
            Row(
                "control_plane",
                f"N={n}: Jobs + Pods in the cluster",
                k.jobs_created + k.pods_created,
                "",
                alt,
                a.jobs_created + a.pods_created,
            ),
            Row("control_plane", f"N={n}: wall time to completion (P={parallelism})", k.seconds, "s", alt, a.seconds)
            if k.completed is None
            else Row(
                "control_plane",
                f"N={n}: ran {k.seconds:.0f} s (P={parallelism}), {k.completed} items done, then cancelled",
                k.completed,
                "items",
            ),
        ]
    largest = max(results)
    k = results[largest][0]
    rows.append(
        Row(
            "control_plane",
            f"N={largest}: write requests, target",
            k.writes,
            "",
            target=f"<= {MAX_WRITES}",
            passed=k.writes <= MAX_WRITES,
        )
    )
    counts = [r[0] for r in results.values()]
    # open at once: the same at every N; opened: 2, plus a resume of each every WATCH_SECONDS of run time
    flat_watch = len({c.max_open_watches for c in counts}) == 1 and all(
        c.watches <= c.max_open_watches * (1 + math.ceil(c.seconds / WATCH_SECONDS)) for c in counts
    )
    rows.append(
        Row(
            "control_plane",
            f"watch connections open at once, N={min(results)} to {largest}",
            k.max_open_watches,
            "",
            target="constant in N",
            passed=flat_watch,
            note="opened: " + ", ".join(f"{c.watches} in {c.seconds:.0f} s" for c in counts),
        )
    )
    # A budgeted run ends with a cancel: its PATCH (the cancelled-by mark) and DELETE are not the map's cost.
    cancel = ("DELETE delete jobs", "PATCH patch jobs")
    creating = [c.writes - sum(c.by_kind.get(k, 0) for k in cancel) for c in counts]
    flat_writes = len(set(creating)) == 1 and len({c.created_by_client for c in counts}) == 1
    rows.append(
        Row(
            "control_plane",
            f"writes and created objects, N={min(results)} to {largest}",
            k.writes,
            "",
            target="flat in N",
            passed=flat_writes,
            note="writes/objects: " + ", ".join(f"{c.writes}/{c.created_by_client}" for c in counts),
        )
    )
    full = max(n for n, (c, _, _) in results.items() if c.completed is None)  # the largest map run to the end
    k, a = results[full][0], results[full][1]
    rows.append(
        Row(
            "control_plane",
            f"N={full}: read requests per item (status + logs)",
            k.reads / full,
            "",
            "one Job per item",
            a.reads / full,
        )
    )
    for task in (60.0, 600.0):
        polls = projected_polls(task)
        rows.append(
            Row(
                "control_plane",
                f"N={full}: status reads per item if every task took {task:.0f} s (projected)",
                k.status_reads / full,
                "",
                f"one Job per item, {polls} polls x 2 requests",
                2 * polls,
            )
        )
    return rows


def run(
    quick: bool = False,
    sizes: tuple[int, ...] | None = None,
    parallelism: int | None = None,
    reuse: bool = False,
    budget: float | None = None,
) -> list[Row]:
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    parallelism = parallelism or (QUICK_PARALLELISM if quick else PARALLELISM)
    results = measure(sizes, parallelism, reuse=reuse, keep=not quick, budget=budget)
    rows = rows_for(results, parallelism)
    largest = max(results)
    _, _, submitted = results[largest]
    rows.append(
        Row(
            "control_plane",
            f"fake cluster: submit a {largest}-item map",
            submitted,
            "s",
            target="< 2 s" if largest >= 10_000 else "",
            passed=submitted < 2 if largest >= 10_000 else None,
        )
    )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", help="comma-separated map sizes (default 10,100,1000,10000)")
    parser.add_argument("--parallelism", type=int)
    parser.add_argument("--reuse", action="store_true", help="take sizes measured earlier from results/*_raw_*.json")
    parser.add_argument(
        "--budget", type=float, help="seconds a map larger than 1,000 items may run before it is cancelled"
    )
    args = parser.parse_args()
    chosen = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None
    rows = run(args.quick, chosen, args.parallelism, args.reuse, args.budget)
    save("control_plane", rows)
    print_rows("Control-plane load (fake cluster)", rows)
