"""Time from a fault to the right verdict, on the fake cluster (the README's reliability table).

    python -m benchmarks.bench_faults [--quick]

Each scenario starts a fresh fake cluster with one fault (tests/fakekube), runs a call
through the public API (``remote(f).submit(...)``) and measures, on this process's clock,
how long until the run ends the right way: the value comes back (the fault must not turn
a finished run into a failure), or the exception carries the right sentence. The
"before" column is what the issue that asked for this hardening measured with the
previous code under the same faults (a verdict that was wrong, or came at the 10-minute
pending timeout); it is quoted, not re-run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import Row, print_rows, save
from benchmarks.fakecluster import fake_cluster, kube_session

NODE = {"name": "node-1", "cpu": "8", "memory": "32Gi"}


def lines(n: int) -> int:
    for i in range(n):
        print(f"line {i}", flush=True)
        time.sleep(0.05)
    return n


def _run(setup: Callable[[Any], None], call: Callable[[], Any], check: Callable[[Any], bool],
         **cluster_options: Any) -> tuple[float, str]:  # fmt: skip
    from kjupyter import remote  # noqa: F401  (the session below is what remote() uses)

    with fake_cluster(nodes=[NODE], **cluster_options) as cluster, kube_session(cluster):
        setup(cluster)
        started = time.perf_counter()
        try:
            outcome: Any = call()
        except Exception as exc:
            outcome = exc
        took = time.perf_counter() - started
        ok = check(outcome)
        text = str(outcome).splitlines()[0][:110] if isinstance(outcome, Exception) else f"value {outcome!r}"
        return took, ("" if ok else "WRONG: ") + text


def scenarios() -> list[tuple[str, str, Callable[[Any], None], Callable[[], Any], Callable[[Any], bool]]]:
    from kjupyter import remote
    from kjupyter.errors import BackendError, RunFailed

    def value(expected: Any) -> Callable[[Any], bool]:
        return lambda outcome: outcome == expected

    def error(cls: type, words: str) -> Callable[[Any], bool]:
        return lambda outcome: isinstance(outcome, cls) and words in str(outcome)

    def call(fn: Callable[..., Any], *args: Any, **options: Any) -> Callable[[], Any]:
        return lambda: remote(fn, **options).submit(*args).result(120)

    return [
        ("silent pod watch", "reported pending, then deleted at the 10 min pending timeout",
         lambda c: c.silence_watches(count=None, resource="pods"), call(lines, 10), value(10)),
        ("silent job watch", "(not measured)",
         lambda c: c.silence_watches(count=None, resource="jobs"), call(lines, 10), value(10)),
        ("log ends early (rotation)", "last lines lost; inline result lost",
         lambda c: c.end_logs_early(count=None, after_lines=3), call(lines, 10), value(10)),
        ("silent log stream", "(not measured)",
         lambda c: c.silence_logs(count=None, after_lines=3), call(lines, 10), value(10)),
        ("image pull fails twice, then works", "deleted as failed within 2 s",
         lambda c: c.flaky_image("python:3.11", failures=2), call(lines, 3), value(3)),
        ("ResourceQuota refuses the pods", "wrong sentence at the 10 min pending timeout",
         lambda c: c.quota(hard={"pods": "0"}, name="team-quota"), call(lines, 3), error(RunFailed, "team-quota")),
        ("admission webhook denies the pods", "wrong sentence at the 10 min pending timeout",
         lambda c: c.deny_pod_creation(reason="webhook", message="no GPUs today", webhook="policy.example.com"),
         call(lines, 3), error(RunFailed, "policy.example.com")),
        ("pods/log forbidden", "silent; hundreds of refused requests",
         lambda c: c.deny("get", "pods/log"), call(lines, 3), value(3)),
        ("watches forbidden", "reported pending, then deleted",
         lambda c: c.deny("watch", "pods"), call(lines, 3), error(BackendError, "may not watch pods")),
        ("kubeconfig token rotated", "every request 401 from then on",
         lambda c: c.rotate_token(), call(lines, 3), value(3)),
        ("out of memory", "(sentence only)",
         lambda c: None, call(hog, memory="128Mi"), error(RunFailed, "128Mi")),
    ]  # fmt: skip


def capacity_scenario() -> tuple[float, str]:
    """NotTriggerScaleUp: the autoscaler's only node group cannot fit the pod."""
    from kjupyter import remote
    from kjupyter.errors import RunFailed
    from tests.fakekube import Autoscaler, NodeGroup, NodeSpec

    group = NodeGroup("cpu-pool", NodeSpec("cpu", cpu="4", memory="16Gi"), max_size=1)
    return _run(lambda c: None, lambda: remote(lines, cpu=64).submit(3).result(120),
                lambda outcome: isinstance(outcome, RunFailed) and "autoscaler cannot add" in str(outcome),
                autoscaler=Autoscaler([group]))  # fmt: skip


def hog() -> int:
    """Touch 400 MB: more than a 128Mi limit allows."""
    block = bytearray(400 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(5)
    return len(block)


def run(quick: bool = False) -> list[Row]:
    rows = []
    chosen = scenarios()[:3] if quick else scenarios()
    measured = [(name, before, _run(setup, call, check)) for name, before, setup, call, check in chosen]
    if not quick:
        measured.append(("autoscaler cannot add a node (NotTriggerScaleUp)", "waited the 10 min pending timeout",
                         capacity_scenario()))  # fmt: skip
    for name, before, (took, said) in measured:
        rows.append(Row("faults", name, round(took, 2), "s", alternative=f"before: {before}", note=said,
                        passed=not said.startswith("WRONG")))  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = run(args.quick)
    save("faults", rows)
    print_rows("Faults of real clusters: time to the right verdict (fake cluster)", rows)
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
