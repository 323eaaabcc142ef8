"""Follow-up runs of one future: OOM retries that grow, ``retry_failed()`` and ``resume=RUN_ID``.

All three rerun some tasks of a run as a NEW run of the same backend, and merge what it
returns into one future, in input order:

- ``retries=Retry(n, grow_memory=g, max_memory=cap)`` on Kubernetes: the first Job runs with
  no retry in place; once it has settled, the tasks that failed are rerun in a new Job
  (``<run>-a2``, then ``-a3``...), those that were OOMKilled with their memory x ``g`` (capped at
  ``cap``), the others with the memory they had, up to ``n`` reruns each. Tasks needing
  different memory go in separate Jobs, smallest first. Each rerun is said in one sentence
  (a :class:`~kjupyter.run_events.Diagnosis` the widget and text views show, and in the
  ``attempts`` of the run's ``run.json``). A task that runs out of memory at the cap fails
  with a sentence that says so. On the local backend (no memory limits) growth is plain
  retries, said once by the run.
- ``MapFuture.retry_failed()``: a new run ``<run>-r1`` of the failed and missing items; the
  others keep the values already in memory.
- ``f.map(items, resume=RUN_ID)`` (:mod:`kjupyter.resume`): the same from the run store, in any
  process of the run's owner: each stored result is authenticated with the run's key before it
  is unpickled (one that does not verify is rerun, never unpickled).

The follow-up's events reach the future through :meth:`Reruns.filter`, which maps its task
indices back to positions of the whole run, holds back the failures it reruns, and counts
progress over all the items.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kjupyter import credentials, run_keys
from kjupyter import payload as pl
from kjupyter import store as st
from kjupyter.backends.base import CALL, MAP, Backend, SubmitRequest
from kjupyter.config import Profile
from kjupyter.errors import KjupyterError, RunFailed, SpecError
from kjupyter.futures import MapFuture, RunFuture
from kjupyter.run_events import Diagnosis, Event, Phase, Progress, RunFinished, TaskFinished
from kjupyter.spec import Resources, RunSpec, format_memory

_MI = 2**20


def first_attempt(spec: RunSpec, profile: Profile) -> RunSpec:
    """The spec of a run's first Job: with growth on Kubernetes, no retry in place (reruns are new Jobs)."""
    if not spec.grow_memory or profile.backend != "kubernetes":
        return spec
    if spec.resources.memory_bytes is None:
        raise SpecError("memory", None, '"4Gi"', f"retries=Retry(..., grow_memory={spec.grow_memory:g}) grows the "
                        f"memory limit of a task that ran out of it, and this run has none (cluster "
                        f"{profile.name!r} sets no default memory): give memory= too")  # fmt: skip
    return dataclasses.replace(spec, retries=0)


def grown(memory: int | None, spec: RunSpec) -> int | None:
    """The next memory of a task that ran out of it (whole MiB, at most the cap); None: it cannot grow."""
    if memory is None or not spec.grow_memory:
        return None
    new = max(memory + 1, math.ceil(memory * spec.grow_memory))
    new = math.ceil(new / _MI) * _MI if memory >= _MI else new
    if spec.max_memory_bytes is not None:
        new = min(new, spec.max_memory_bytes)
    return new if new > memory else None


@dataclass
class Source:
    """What can start some of a run's tasks again as a new run: the function, its inputs, the spec asked for."""

    session: Any  # kjupyter.session.Session (which imports this module)
    fn: Callable[..., Any]
    kind: str  # CALL (values: [(args, kwargs)]) or MAP (values: the items)
    values: Sequence[Any]
    spec: RunSpec  # as the user asked, with their retries and growth
    backend: Backend
    cluster: str
    return_exceptions: bool = False

    @property
    def growth(self) -> bool:
        return bool(self.spec.grow_memory) and self.backend.profile.backend == "kubernetes"

    def part_spec(self, memory: int | None) -> RunSpec:
        resources: Resources = dataclasses.replace(self.spec.resources, memory_bytes=memory)
        return dataclasses.replace(self.spec, resources=resources, retries=0 if self.growth else self.spec.retries)

    def submit(self, future: RunFuture, run_id: str, positions: list[int], memory: int | None) -> None:
        """Start ``positions`` of the run as run ``run_id``; its events go to ``future`` (through its Reruns)."""
        key = run_keys.new_key()
        extra: dict[str, Any] = {"packages": list(self.spec.packages)} if self.spec.packages else {}
        items: bytes | None = None
        if self.kind == CALL:
            args, kwargs = self.values[0]
            data = pl.dump_call(self.fn, args, kwargs, key=key, **extra)
        else:
            blob = io.BytesIO()
            pl.pack_items([self.values[p] for p in positions], blob, key=key)
            items = blob.getvalue()
            credentials.check_no_credentials(items, f"the items of the map of {pl._qualname(self.fn)}")
            data = pl.dump_map_function(self.fn, key=key, **extra)
        credentials.check_no_credentials(data, f"the function {pl._qualname(self.fn)}")
        request = SubmitRequest(run_id=run_id, kind=self.kind, spec=self.part_spec(memory), payload=data,
                                count=len(positions), items=items, user=self.session.user,
                                session=self.session.session_id, function=future.function, run_key=key)  # fmt: skip
        reruns: Reruns = future.reruns
        with reruns.lock:
            reruns.parts[run_id] = positions
            for j, p in enumerate(positions):
                future._where[p] = (run_id, key, j)
            future.live_run_id = run_id
        run_keys.save_key(run_id, key)
        self.backend.submit(request, future.handle)

    def retry(self, old: MapFuture, ok: dict[int, Any]) -> MapFuture:
        """``old.retry_failed()``: rerun what has no value in ``ok`` as run ``<old>-r1`` (``-r2``...)."""
        return start_part(self, old.run_id, ok, list(old.reruns.parts) if old.reruns is not None else [])

    def taken(self, run_id: str) -> bool:
        store = getattr(self.backend, "store", None)
        return isinstance(store, st.RunStore) and store.run(self.session.user, run_id).exists(st.RUN_JSON)

    def record(self, run_id: str, **changes: Any) -> None:
        """Say it in ``run.json`` of ``run_id`` too, where the backend keeps a store (one write)."""
        store = getattr(self.backend, "store", None)
        if isinstance(store, st.RunStore):
            run_dir = store.run(self.session.user, run_id)
            if "parts" in changes and run_dir.exists(st.RUN_JSON):  # (earlier reruns' parts are kept)
                changes["parts"] = {**(run_dir.read_json(st.RUN_JSON).get("parts") or {}), **changes["parts"]}
            run_dir.update_meta(**changes)


class Reruns:
    """One future's follow-up runs: which positions each run does, what is held back, and the total progress."""

    def __init__(self, future: RunFuture, source: Source, *, positions: Iterable[int], settled: Iterable[int] = ()):
        self.future = future
        self.source = source
        self.growth = source.growth
        self.retries = source.spec.retries
        self.memory = {p: source.spec.resources.memory_bytes for p in positions}
        self.attempts = dict.fromkeys(self.memory, 1)
        self.pending: dict[int, int | None] = {}  # position -> the memory of its rerun
        self.final: dict[int, Phase] = dict.fromkeys(settled, Phase.SUCCEEDED)
        self.parts: dict[str, list[int]] = {}  # run id of a part -> the positions of its tasks
        self.notes: list[str] = []
        self.base = future.run_id  # follow-ups are <base>-a2, <base>-a3...
        self.runs = 1
        self.recorded = False  # the run's run.json gets how it ended after all, once it had follow-ups
        self.cancelling = False  # the future is being cancelled: no rerun starts any more
        self.lock = threading.RLock()

    def filter(self, event: Event) -> Event | None:
        """``event`` as the future sees it: translated to positions, replaced, or None (held back)."""
        with self.lock:
            positions = self.parts.get(event.run_id)
        if positions is not None:
            changes: dict[str, Any] = {"run_id": self.future.run_id}
            index = getattr(event, "index", None)
            if isinstance(index, int) and 0 <= index < len(positions):
                changes["index"] = positions[index]
            event = dataclasses.replace(event, **changes)
        if isinstance(event, TaskFinished):
            return self._task(event)
        if isinstance(event, Progress) and self.source.kind == MAP:
            with self.lock:
                ok = sum(1 for ph in self.final.values() if ph is Phase.SUCCEEDED)
                bad = len(self.final) - ok
            total = self.future.total
            return Progress(self.future.run_id, total, ok, bad, event.running, max(0, total - ok - bad - event.running))
        if isinstance(event, RunFinished):
            return self._run_end(event)
        return event

    def _who(self, p: int) -> str:
        return f"Item {p}" if self.source.kind == MAP else "The run"

    def _task(self, event: TaskFinished) -> Event | None:
        p = event.index
        with self.lock:
            used = self.attempts.get(p, 1)
            memory = self.memory.get(p)
            if event.phase is not Phase.FAILED or not self.growth or used > self.retries:
                self.final[p] = event.phase
                if self.growth and event.reason == "OOMKilled" and p not in self.future._verdicts:
                    sentence = (f"{self._who(p)} ran out of memory at {format_memory(memory or 0)} on its last "
                                f"attempt ({used} of {self.retries + 1}): raise memory= or the retries.")  # fmt: skip
                    self.future._verdicts[p] = RunFailed(sentence, run_id=self.future.run_id, reason="OOMKilled")
                    return dataclasses.replace(event, message=sentence)
                return event
            if event.reason == "OOMKilled":
                more = grown(memory, self.source.spec)
                if more is None:  # at the cap: the same memory again would only be killed again
                    cap = format_memory(self.source.spec.max_memory_bytes or memory or 0)
                    sentence = (f"{self._who(p)} ran out of memory at {format_memory(memory or 0)}, the cap "
                                f"max_memory={cap}, so no retry can give it more: raise max_memory= (and memory=), "
                                "or make it use less memory.")  # fmt: skip
                    self.future._verdicts[p] = RunFailed(sentence, run_id=self.future.run_id, reason="OOMKilled")
                    self.final[p] = Phase.FAILED
                    self.notes.append(sentence)
                    self.future.handle(Diagnosis(self.future.run_id, "OOMKilled", sentence,
                                                 "Raise max_memory=.", fatal=True, index=p))  # fmt: skip
                    return dataclasses.replace(event, message=sentence)
                sentence = (f"{self._who(p)} ran out of memory (limit {format_memory(memory or 0)}); retrying it with "
                            f"{format_memory(more)} (attempt {used + 1} of {self.retries + 1}).")  # fmt: skip
            else:
                more = memory
                why = event.reason or (f"exit code {event.exit_code}" if event.exit_code is not None else "failed")
                sentence = f"{self._who(p)} failed ({why}); retrying it (attempt {used + 1} of {self.retries + 1})."
            self.pending[p], self.memory[p], self.attempts[p] = more, more, used + 1
            self.notes.append(sentence)
        self.future.handle(Diagnosis(self.future.run_id, "Retrying", sentence, index=p))
        return None

    def _run_end(self, event: RunFinished) -> Event | None:
        with self.lock:
            if self.cancelling and self.pending and event.phase is not Phase.CANCELLED:
                event = RunFinished(self.future.run_id, Phase.CANCELLED, "Cancelled", "the run was cancelled")
            if event.phase is not Phase.CANCELLED and self.pending:
                memory = min(self.pending.values(), key=lambda m: m or 0)
                positions = sorted(p for p, m in self.pending.items() if m == memory)
                for p in positions:
                    del self.pending[p]
                self.runs += 1
                run_id = f"{self.base}-a{self.runs}"
                start = self.recorded = True
            else:
                start = False
        if start:
            try:
                self.source.submit(self.future, run_id, positions, memory)
                self.source.record(self.future.run_id, phase=Phase.RUNNING.value, attempts=list(self.notes),
                                   parts=dict(self.parts), diagnosis=self.notes[-1] if self.notes else "")  # fmt: skip
                return None
            except KjupyterError as exc:  # the rerun could not start: its items, and those still to rerun, fail
                with self.lock:
                    lost = sorted({*positions, *self.pending})
                    self.pending.clear()
                    for p in lost:
                        self.future._verdicts[p] = exc
                        self.attempts[p] = self.retries + 1  # (no further rerun)
                for p in lost:
                    self.future.handle(TaskFinished(self.future.run_id, p, Phase.FAILED, None, "NotCreated", str(exc)))
        if self.source.kind == MAP and event.phase is not Phase.CANCELLED:
            total = self.future.total
            ok = sum(1 for ph in self.final.values() if ph is Phase.SUCCEEDED)
            failed = total - ok
            event = RunFinished(self.future.run_id, Phase.FAILED if failed else Phase.SUCCEEDED,
                                "Failed" if failed else "Completed",
                                f"{failed} of {total} item(s) failed" if failed else "every item succeeded")  # fmt: skip
        if self.recorded:
            extra = {"counts": {"succeeded": sum(1 for ph in self.final.values() if ph is Phase.SUCCEEDED),
                                "failed": sum(1 for ph in self.final.values() if ph is not Phase.SUCCEEDED),
                                "running": 0, "pending": 0}} if self.future.run_id not in self.parts else {}  # fmt: skip
            try:
                self.source.record(self.future.run_id, phase=event.phase.value, finished=time.time(),
                                   attempts=list(self.notes), parts=dict(self.parts),
                                   diagnosis=self.notes[-1] if self.notes else "", **extra)  # fmt: skip
            except KjupyterError as exc:
                self.future.handle(Diagnosis(self.future.run_id, "RecordFailed",
                                             f"The reruns of this run could not be recorded in its run.json: {exc}"))  # fmt: skip
        return event


def arm(session: Any, future: RunFuture, fn: Callable[..., Any], values: Sequence[Any], spec: RunSpec,
        return_exceptions: bool = False) -> None:  # fmt: skip
    """Give a new future what its reruns need (and, with growth on Kubernetes, its Reruns)."""
    kind = MAP if isinstance(future, MapFuture) else CALL
    source = Source(session, fn, kind, values, spec, future.backend, future.cluster, return_exceptions)
    if kind == CALL and not source.growth:
        return  # (nothing to rerun a call for: its arguments are not kept past the submit)
    future.source = source
    if source.growth:
        future.reruns = Reruns(future, source, positions=range(future.total))


def start_part(source: Source, run_id: str, ok: dict[int, Any], parts: Sequence[str] = ()) -> MapFuture:
    """A future of map ``run_id`` over all of ``source``'s items: ``ok`` as they are, the others rerun as a new
    run ``<run_id>-r1`` (or the first ``-rN`` not taken yet, by an earlier rerun here or in the store)."""
    used = [int(m[1]) for p in parts if (m := re.match(rf"^{re.escape(run_id)}-r(\d+)", p))]
    n = max(used, default=0) + 1
    while source.taken(f"{run_id}-r{n}"):
        n += 1
    part = f"{run_id}-r{n}"
    positions = [i for i in range(len(source.values)) if i not in ok]
    future = MapFuture(run_id, source.backend, cluster=source.cluster, items=source.values,
                       return_exceptions=source.return_exceptions,
                       function=getattr(source.fn, "__qualname__", type(source.fn).__name__))  # fmt: skip
    future.source = source
    for i, value in ok.items():
        future._results[i], future._have[i] = value, True
    future.reruns = reruns = Reruns(future, source, positions=positions, settled=ok)
    reruns.base, reruns.recorded = part, bool(positions)
    if positions:
        note = (f"{len(positions)} of {len(source.values)} item(s) failed or have no result: rerunning them as run "
                f"{part}; the others keep their results.")  # fmt: skip
        reruns.notes.append(note)
        future.handle(Diagnosis(run_id, "Rerun", note))
    if not positions:  # nothing to rerun: no run at all
        future.handle(RunFinished(run_id, Phase.SUCCEEDED, "Completed", "every item had a result: nothing was rerun"))
        return future
    future.detached = False
    with source.session._lock:
        source.session._active[run_id] = future
    future.add_done_callback(lambda f: source.session._forget(run_id))
    try:
        source.submit(future, part, positions, source.spec.resources.memory_bytes)
    except BaseException:
        source.session._forget(run_id)
        run_keys.forget_key(part)
        raise
    return future
