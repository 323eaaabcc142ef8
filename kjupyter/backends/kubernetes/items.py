"""The items of a worker-pod map: which worker runs which item, and how each item ends.

A map of N items on P worker pods (``objects.worker_map``) has N tasks but only P pods. Each
worker prints a signed ``item`` frame when it starts an item and when the item is done, failed
or retried (:mod:`kjupyter.runner.worker`); its log follower hands them here in log order, so
the lines between two frames are tagged with their item, and each item gets its
``TaskFinished`` from the frame that ended it, without any polling.

A worker pod that ends while an item is in flight (OOMKilled, evicted, preempted, deleted,
its node lost) costs that item one attempt: the Job replaces the worker under the same index
and the new pod redoes it, within the item's ``retries``; past them the item fails with the
pod's own cause, in one sentence ("Item 17 ran out of memory ... (OOMKilled, limit 2Gi)").
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kjupyter import run_events as ev
from kjupyter.backends.base import RunInfo
from kjupyter.backends.kubernetes import diagnosis
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes.state import JobView, PodView, dig, k8s_time
from kjupyter.backends.run_record import failed_items
from kjupyter.inline_frames import END_STATES
from kjupyter.run_events import Phase

if TYPE_CHECKING:
    from kjupyter.backends.kubernetes.run import KubeRun, _Pod


@dataclass
class Items:
    """What the workers of one run are doing (``workers`` 0: one pod per task, nothing to track)."""

    workers: int = 0
    claims: str = ""
    current: dict[str, int] = field(default_factory=dict)  # pod name -> the item it runs
    last: dict[str, int] = field(default_factory=dict)  # pod name -> the last item it ran
    deaths: collections.Counter[int] = field(default_factory=collections.Counter)

    def item_of(self, state: _Pod) -> int:
        """The item a worker's next log line belongs to."""
        return self.current.get(state.name, self.last.get(state.name, state.index))

    def running(self) -> int:
        return len(self.current)

    def on_frame(self, run: KubeRun, state: _Pod, index: int, attempt: int, what: str) -> None:
        """A worker's signed item frame (from its log thread)."""
        with run.lock:
            if run.finished or not 0 <= index < run.count:
                return
            if what == "start":
                self.current[state.name] = index
            else:
                self.last[state.name] = index
            if what in END_STATES:
                self.current.pop(state.name, None)
            settled = index in run.done
            if what == "done" and not settled:
                run._task(index, Phase.SUCCEEDED, 0)
            elif what == "fail" and not settled and attempt <= run.retries:
                # (past its retries: its worker died on it, and the dead pod's settle says why: OOMKilled...)
                run._task(index, Phase.FAILED, 1, "Error", f"item {index} failed")
            elif what == "cancelled" and not settled:  # (a warm worker's run: its process was stopped)
                run._task(index, Phase.CANCELLED, None, "Cancelled", "the run was cancelled")
            elif what == "timeout" and not settled:
                run._task(index, Phase.FAILED, None, "DeadlineExceeded", "the run exceeded its timeout")
        if what == "start" and not settled:
            run.emit(ev.PhaseChanged(run.run_id, Phase.RUNNING, index=index, pod=state.name))
        elif what == "retry" and not settled:
            run.emit(ev.Diagnosis(run.run_id, "Retrying", f"Item {index} failed; retry {attempt + 1} of "
                                  f"{run.retries} (on worker pod {state.name}).", index=index))  # fmt: skip
        run._progress()
        if run.warm is not None:
            run.warm.on_frame(run, state, what)

    def worker_ended(self, run: KubeRun, state: _Pod, pod: dict[str, Any], deleted: bool) -> None:
        """A worker pod ended (its log read to the end): the item it was on, if any, used an attempt."""
        index = self.current.pop(state.name, None)
        if run.warm is not None and run.warm.worker_ended(run, index):
            return
        if index is None or index in run.done or run.stopping is not None or run.marked is not None:
            return
        self.deaths[index] += 1
        code, reason, _ = PodView(pod).exit()
        d = diagnosis.diagnose_pod(run.run_id, pod, [], count=1, log_tail=list(run.tails[index]))
        if d is not None and d.sentence.startswith("The task "):
            reason, why = d.reason, f"Item {index}" + d.sentence[len("The task") :].rstrip(".")
        else:
            how = (
                "was deleted"
                if deleted or dig(pod, "metadata", "deletionTimestamp")
                else f"ended ({reason or f'exit code {code}'})"
            )
            reason, why = reason or "WorkerDied", f"Item {index} was lost: its worker pod {state.name} {how}"
        if self.deaths[index] > run.retries:
            run.task_verdicts[index] = (reason, why)
            run._task(index, Phase.FAILED, code, reason, why + ".")
        else:
            run.emit(ev.Diagnosis(run.run_id, "Retrying", f"{why}; retry {self.deaths[index]} of {run.retries} "
                                  "on its replacement.", index=index))  # fmt: skip


def claims_note(workers: int, count: int, claims: str) -> str:
    """The PhaseChanged message of a worker-pod map: how many pods, and how they share the items."""
    if claims == "chunks":
        return f"{count} item(s) on {workers} pod(s), each a fixed run of consecutive items (items_per_pod)"
    how = ("claimed dynamically through the store" if claims == "dynamic"
           else "shared statically (worker w takes items w, w+P, ...)")  # fmt: skip
    return f"{count} item(s) on at most {workers} worker pod(s), {how}"


def job_info(job: dict[str, Any], cluster: str) -> RunInfo:
    """What ``kjupyter jobs`` and the lab show of a run, from its Job alone (no request per run)."""
    meta, status, view = job["metadata"], job.get("status", {}), JobView(job)
    notes = meta.get("annotations", {})
    return RunInfo(
        run_id=meta["name"], cluster=cluster, phase=view.phase,
        kind=str(meta.get("labels", {}).get(mf.LABEL_KIND, "call")),
        user=str(notes.get(mf.ANNOTATION_USER, "")), function=str(notes.get(mf.ANNOTATION_FUNCTION, "")),
        created=k8s_time(meta.get("creationTimestamp")), finished=view.ended or None,
        total=mf.worker_plan(job)[2], succeeded=int(status.get("succeeded", 0)),
        failed=int(status.get("failed", 0)), running=int(status.get("active", 0)),
        diagnosis=diagnosis.job_summary(meta["name"], job),
    )  # fmt: skip


def with_item_counts(
    info: RunInfo, job: dict[str, Any], read_meta: Callable[[dict[str, Any]], dict[str, Any]]
) -> RunInfo:
    """A worker-pod map counts items, not pods: from its run.json, which its client keeps (one store read).

    The Job of a worker map succeeds when its workers are done, whatever their items did; a
    map with failed items is Failed, as its client recorded (or as the counts show).
    """
    try:
        record = read_meta(job)
    except Exception as exc:  # the store is unreachable: say so, rather than count pods as items
        return replace(info, succeeded=0, failed=0, running=0, diagnosis=f"item counts unavailable: {exc}")
    counts = record.get("counts") or {}
    phase = info.phase
    recorded = Phase(str(record.get("phase", "Pending")))
    if recorded.finished:
        phase = recorded
    elif phase is Phase.SUCCEEDED and int(counts.get("failed", 0)):
        phase = Phase.FAILED
    return replace(
        info, phase=phase, succeeded=int(counts.get("succeeded", 0)), failed=int(counts.get("failed", 0)),
        cancelled=int(counts.get("cancelled", 0)),
        extra={**info.extra, **failed_items(record)},
        running=0 if phase.finished else int(counts.get("running", 0)),
        diagnosis=str(record.get("diagnosis", "")) or info.diagnosis,
    )  # fmt: skip
