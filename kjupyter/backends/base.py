"""The contract every backend fulfils: local processes, Kubernetes, and test fakes.

A backend receives a :class:`SubmitRequest` (the run's spec and its already
serialised payload), starts it, and reports what happens as typed events
(:mod:`kjupyter.run_events`) to the sink it was given. Outcomes (result or error
envelopes) are read back through :meth:`Backend.open_outcome`, so callers never
need to know where a backend keeps them.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from kjupyter.config import Profile
from kjupyter.errors import BackendError
from kjupyter.run_events import EventSink, Phase
from kjupyter.spec import RunSpec

CALL, MAP = "call", "map"


@dataclass(frozen=True)
class SubmitRequest:
    """A run ready to start: nothing left to serialise.

    ``payload`` is a call envelope (``kind="call"``, one task) or a map's
    function envelope (``kind="map"``); ``items`` is the packed items blob of
    a map, with ``count`` items (one task each). Both are signed with
    ``run_key``, the run's secret, which the backend hands to the run's runners
    (``$KJUPYTER_RUN_KEY``, hex) and nobody else.
    """

    run_id: str
    kind: str
    spec: RunSpec
    payload: bytes
    count: int = 1
    items: bytes | None = None
    user: str = ""
    session: str = ""
    function: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    run_key: bytes = field(default=b"", repr=False)  # never in a repr, a log or an error message
    moves: tuple[dict[str, Any], ...] = ()  # where a GPU fallback list moved the run from, and why (run.json)

    @property
    def parallelism(self) -> int:
        return min(self.count, self.spec.parallelism or self.count)


@dataclass(frozen=True)
class RunInfo:
    """One line of ``kjupyter jobs``: what a backend knows of a run, from any session."""

    run_id: str
    cluster: str
    phase: Phase
    kind: str = CALL
    user: str = ""
    function: str = ""
    created: float = 0.0
    finished: float | None = None
    total: int = 1
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    diagnosis: str = ""
    warm: str = ""  # a run handed to a warm worker: "warm worker POD, started 0.05s after submit"
    cancelled: int = 0  # a map's items that were cancelled (never counted as failed)
    extra: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, float] = field(default_factory=dict)  # resource-seconds (kjupyter.usage), once recorded

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "cluster": self.cluster, "phase": self.phase.value,
            "kind": self.kind, "user": self.user, "function": self.function,
            "created": self.created, "finished": self.finished, "total": self.total,
            "succeeded": self.succeeded, "failed": self.failed, "cancelled": self.cancelled, "running": self.running,
            "diagnosis": self.diagnosis, "warm": self.warm, "usage": dict(self.usage),
        }  # fmt: skip


class RunList(list[RunInfo]):
    """What :meth:`Backend.list_runs` answers: the runs, and ``problems``, one sentence for each source of
    runs that could not be read (a store that cannot be listed), so a partial listing never passes for a whole one."""

    def __init__(self, runs: Iterable[RunInfo] = (), problems: Iterable[str] = ()) -> None:
        super().__init__(runs)
        self.problems = list(problems)


@dataclass(frozen=True)
class GpuCount:
    """GPUs of one type on a cluster right now: on how many nodes, allocatable, and free (not requested)."""

    gpu_type: str
    nodes: int
    allocatable: int
    free: int | None  # None: the pods holding them could not be listed


@dataclass(frozen=True)
class GpuReport:
    """One profile's line of ``kjupyter gpus``: its configured GPU types and, where nodes can be listed, counts."""

    cluster: str
    configured: tuple[str, ...]
    counts: tuple[GpuCount, ...] | None = None  # None: not counted (see ``note``)
    note: str = ""

    def free(self, gpu_type: str) -> int | None:
        found = [c.free for c in self.counts or () if c.gpu_type == gpu_type]
        return found[0] if found else (0 if self.counts is not None else None)


@dataclass(frozen=True)
class Check:
    """One line of ``kjupyter doctor``."""

    name: str
    ok: bool
    detail: str


class Backend(abc.ABC):
    """Starts runs, reports their events, cancels them, and finds them again later."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    @abc.abstractmethod
    def submit(self, request: SubmitRequest, sink: EventSink) -> None:
        """Start the run and return at once; events go to ``sink`` from background threads.

        Guarantees: every task ends with one ``TaskFinished``, and the run with
        exactly one ``RunFinished`` after all of them, even when cancelled.
        """

    @abc.abstractmethod
    def attach(self, run_id: str, sink: EventSink) -> None:
        """Follow a run started earlier (possibly by another process); same event guarantees."""

    @abc.abstractmethod
    def cancel(self, run_id: str) -> bool:
        """Stop the run and everything it started. Returns False if it had already finished."""

    @abc.abstractmethod
    def open_outcome(self, run_id: str, index: int) -> contextlib.AbstractContextManager[IO[bytes]]:
        """The result or error envelope of task ``index``; raises BackendError if there is none."""

    @abc.abstractmethod
    def list_runs(self, user: str | None = None) -> list[RunInfo]:
        """Runs of ``user`` (default: the current user), newest first.

        A source of runs that could not be read is said in :attr:`RunList.problems`, never silently left out.
        """

    @abc.abstractmethod
    def logs(self, run_id: str, index: int | None = None, *, follow: bool = False) -> Iterator[str]:
        """Log lines of a run's task (``index`` None: every task, in order)."""

    @abc.abstractmethod
    def render(self, spec: RunSpec, *, count: int = 1, kind: str = CALL, run_id: str = "render-000000",
               user: str = "", session: str = "", function: str = "") -> list[dict[str, Any]]:  # fmt: skip
        """What a run with ``spec`` would send or start, as plain data (``kjupyter render``)."""

    @abc.abstractmethod
    def doctor(self) -> list[Check]:
        """Can kjupyter work here? One :class:`Check` per thing checked (``kjupyter doctor``)."""

    def has_run(self, run_id: str) -> bool:
        """Whether ``run_id`` is a run of this cluster (``kjupyter logs RUN`` looks for it on each cluster)."""
        return any(r.run_id == run_id for r in self.list_runs())

    def move_away(self, run_id: str, sentence: str) -> bool:
        """Stop a run that has not started, because it moves to another cluster or GPU type (``sentence``: why).

        True once its deletion was accepted; its ``RunFinished`` then comes when it is gone. False if
        it had already ended. A backend that cannot say why simply cancels it.
        """
        return self.cancel(run_id)

    def gpu_report(self) -> GpuReport:
        """The GPU types this profile offers and, where the backend can count them, how many are free."""
        if not self.profile.gpus:
            return GpuReport(self.profile.name, (), (), "no GPU types configured")
        return GpuReport(self.profile.name, tuple(self.profile.gpus), None,
                         f"a {self.profile.backend} profile's GPUs are not counted: only its configuration is known")  # fmt: skip

    def run_key(self, run_id: str) -> bytes | None:
        """The key of a run, when the backend keeps it somewhere this client can read (None: it does not)."""
        return None

    def render_reaper(self) -> list[dict[str, Any]]:
        """The objects of an in-cluster reaper of stale runs (``kjupyter render --reaper``)."""
        raise BackendError(f"cluster {self.profile.name!r} ({self.profile.backend}) needs no reaper: "
                           "its runs are processes of this machine")  # fmt: skip

    def forget_runs(self, run_ids: list[str]) -> None:
        """These runs were deleted from the store (``kjupyter gc``): drop what the backend keeps beside them."""

    def close(self) -> None:
        """Stop background threads and close connections; runs keep going."""

    def describe(self) -> dict[str, Any]:
        """A row of ``kjupyter clusters``: where this backend runs and whether it is reachable."""
        return {"reachable": True, "detail": ""}

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
