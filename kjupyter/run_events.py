"""Typed events flowing from backends to futures, widgets and the console.

Backends only ever *emit* these; everything above them only *consumes* them.
They are small frozen dataclasses so they can be queued, logged and compared
in tests without any backend present.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class Phase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED)


@dataclass(frozen=True)
class _RunEvent:
    """What every event has: its run, and when it happened (this process's clock; keyword only)."""

    run_id: str
    time: float = field(default_factory=time.time, kw_only=True)


@dataclass(frozen=True)
class PhaseChanged(_RunEvent):
    """The run (``index is None``) or one of its tasks changed phase."""

    phase: Phase
    index: int | None = None
    pod: str | None = None
    node: str | None = None
    message: str = ""


@dataclass(frozen=True)
class LogLine(_RunEvent):
    """One line a task printed, without its trailing newline."""

    text: str
    index: int = 0
    stream: str = "stdout"


@dataclass(frozen=True)
class Diagnosis(_RunEvent):
    """Something is wrong (or slow) and the user should know why, in one sentence.

    ``fatal`` diagnoses end the run (image cannot be pulled, out of memory);
    others are warnings that may resolve by themselves (waiting for scale-up).
    """

    reason: str
    sentence: str
    hint: str = ""
    fatal: bool = False
    index: int | None = None

    def __str__(self) -> str:
        return f"{self.sentence} {self.hint}".strip()


@dataclass(frozen=True)
class Progress(_RunEvent):
    """Counts of a map's tasks; ``total`` is the number of items."""

    total: int
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    pending: int = 0


@dataclass(frozen=True)
class TaskFinished(_RunEvent):
    """Task ``index`` ended for good (after its retries). Its outcome is in the store."""

    index: int
    phase: Phase
    exit_code: int | None = None
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class Usage(_RunEvent):
    """What the run used, just before its ``RunFinished``: resource-seconds (:mod:`kjupyter.usage`).

    ``source`` says how it was measured (``pods``: the task containers' start and end times; ``local``:
    the wall time of each task process times the cpu requested).
    """

    seconds: tuple[tuple[str, float], ...]
    source: str = "pods"

    @property
    def as_dict(self) -> dict[str, float]:
        return dict(self.seconds)


@dataclass(frozen=True)
class RunFinished(_RunEvent):
    """The whole run ended; no event for this run follows."""

    phase: Phase
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class RunLost(_RunEvent):
    """kjupyter can no longer follow the run (its watches are refused); the run itself may go on.

    No ``RunFinished`` follows: nothing is known of how it ends. ``sentence`` says why and what to do.
    """

    reason: str
    sentence: str


Event = PhaseChanged | LogLine | Diagnosis | Progress | TaskFinished | Usage | RunFinished | RunLost
EventSink = Callable[[Event], None]
