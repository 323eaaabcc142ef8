"""GPU fallbacks: a pending run moves along its preference list, with exactly one copy at a time.

A run with ``gpu=["H100:1", "A100:1"]`` starts at the first place of its list
(:func:`kjupyter.placement.candidates`). While it is Pending it moves to the next place as soon as
the current one gives a verdict:

- the cluster autoscaler says it cannot help (a ``NotTriggerScaleUp`` diagnosis), or
- the profile's ``failover_after`` passes (for clusters whose autoscaler says nothing).

A move deletes the run where it is (:meth:`~kjupyter.backends.base.Backend.move_away`) and waits
until that run has ended (its Job gone, with its pods) before the next place is asked, so two
copies can never both start. A map moves as a whole (it is one Job). Once the run started (a pod
running, a line printed) it never moves. The run keeps its run id across moves; each move is
said as a ``Moved`` diagnosis and recorded in ``run.json`` (``moves``) at the next place.

:class:`Advisor` adds, to a GPU run that cannot be scheduled and cannot move, where GPUs are free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from kjupyter import placement
from kjupyter.backends.base import Backend, Check, GpuReport, SubmitRequest
from kjupyter.config import Profile
from kjupyter.errors import KjupyterError
from kjupyter.placement import Place
from kjupyter.run_events import (
    Diagnosis,
    Event,
    EventSink,
    LogLine,
    Phase,
    PhaseChanged,
    RunFinished,
    RunLost,
    TaskFinished,
)
from kjupyter.spec import RunSpec, format_duration

NO_ROOM = ("Unschedulable", "NotTriggerScaleUp", "NoCapacity")  # diagnoses of a pod that finds no node


class Advisor:
    """Once per place, for a GPU run that finds no node: where that GPU type (or another) is free right now."""

    def __init__(self, reports: Callable[[], Sequence[GpuReport]]) -> None:
        self.reports = reports
        self.given: set[str] = set()
        self.quiet = False  # the run ended, or a fatal diagnosis says why: advice would only hide it

    def observe(self, event: Event, place: Place, emit: EventSink) -> None:
        if isinstance(event, RunFinished | RunLost) or (isinstance(event, Diagnosis) and event.fatal):
            self.quiet = True
        if not isinstance(event, Diagnosis) or event.reason not in NO_ROOM or place.label in self.given:
            return
        self.given.add(place.label)

        def advise() -> None:  # (off the run's lane: it asks every cluster)
            text = placement.advice(self.reports(), place.gpu_type, place.count, place.profile.name)
            if not self.quiet:
                emit(Diagnosis(event.run_id, "GpuAlternatives", text, event.sentence, index=event.index))

        threading.Thread(target=advise, daemon=True, name=f"kjupyter-advice-{event.run_id}").start()

    def wrap(self, place: Place, sink: EventSink) -> EventSink:
        def advised(event: Event) -> None:
            sink(event)
            self.observe(event, place, sink)

        return advised


class FailoverBackend(Backend):
    """The backend of one run with a GPU fallback list: the backend of the place it is at, and its moves."""

    def __init__(self, places: Sequence[Place], backend_of: Callable[[Profile], Backend],
                 advisor: Advisor | None = None, on_move: Callable[[Place], None] = lambda p: None) -> None:  # fmt: skip
        super().__init__(places[0].profile)
        self.places = list(places)
        self.backend_of = backend_of
        self.advisor = advisor
        self.on_move = on_move
        self.current = backend_of(places[0].profile)
        self.position = 0
        self.state = "starting"  # "starting" (a place is being asked), "here", "leaving" (deleted, not yet gone)
        self._deferred = ""  # a verdict that came while the place was still being asked: acted on right after
        self._announced = threading.Event()  # the move under way was said (and recorded)
        self._announced.set()
        self.started = False
        self.cancelled = False
        self.moves: list[dict[str, Any]] = []
        self._attempt = 0
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._request: SubmitRequest | None = None
        self._sink: EventSink = lambda event: None

    @property
    def place(self) -> Place:
        return self.places[self.position]

    # --- starting at a place ------------------------------------------------------------------
    def submit(self, request: SubmitRequest, sink: EventSink) -> None:
        self._request, self._sink = request, sink
        self._start(0, request)

    def _start(self, position: int, request: SubmitRequest) -> None:
        place = self.places[position]
        backend = self.backend_of(place.profile)
        with self._lock:
            self._attempt += 1
            attempt = self._attempt
            self.position, self.current, self.profile = position, backend, place.profile
        backend.submit(request, lambda event: self._on_event(attempt, event))
        with self._lock:
            if self.state == "starting":  # (never over "leaving": a verdict may already have moved it on)
                self.state = "here"
            deferred, self._deferred = self._deferred, ""
            cancelled = self.cancelled
            after = place.profile.failover_after
            if not cancelled and after and position < len(self.places) - 1 and not self.started:
                self._timer = threading.Timer(after, self._waited, (attempt, after))
                self._timer.daemon = True
                self._timer.start()
        if cancelled:  # cancelled while this place was asked: stop it here (its end is the run's end)
            backend.cancel(request.run_id)
        elif deferred:
            self._move(attempt, deferred)

    def _can_move(self, *states: str) -> bool:
        return (self.state in (states or ("here",)) and not self.started and not self.cancelled
                and self.position < len(self.places) - 1)  # fmt: skip

    # --- events of the run where it is ---------------------------------------------------------
    def _on_event(self, attempt: int, event: Event) -> None:
        verdict = ""
        with self._lock:
            if attempt != self._attempt:
                return  # a place the run left: nothing of it is news any more
            if self.state == "leaving":
                if isinstance(event, RunFinished):  # the run is gone from there: go on
                    self._attempt += 1
                    self.state = "starting"
                    threading.Thread(target=self._next, daemon=True, name=f"kjupyter-move-{event.run_id}").start()
                if not isinstance(event, RunLost):  # (lost: its end will never be known; the future says so)
                    return
            if (isinstance(event, PhaseChanged) and event.phase is Phase.RUNNING) or isinstance(
                event, LogLine | TaskFinished | RunFinished | RunLost
            ):
                self.started = self.started or not isinstance(event, RunFinished | RunLost)
                self._stop_timer()
            elif (
                isinstance(event, Diagnosis)
                and event.reason == "NotTriggerScaleUp"
                and self._can_move("here", "starting")
            ):
                verdict = f"No {self.place.gpu_type} can be added on {self.place.profile.name}: NotTriggerScaleUp"
                if self.state == "starting":
                    self._deferred, verdict = verdict, ""
            stays = self.started or self.position == len(self.places) - 1
        self._sink(event)
        if verdict:
            self._move(attempt, verdict)
        elif self.advisor is not None and stays:  # (it cannot move on: say where GPUs are free)
            self.advisor.observe(event, self.place, self._sink)

    def _waited(self, attempt: int, after: float) -> None:
        with self._lock:
            if attempt != self._attempt:
                return
        self._move(attempt, f"No {self.place.gpu_type} started on {self.place.profile.name} within "
                            f"{format_duration(after)} (failover_after)")  # fmt: skip

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- moving -------------------------------------------------------------------------------
    def _move(self, attempt: int, why: str) -> None:
        request = self._request
        with self._lock:
            if attempt != self._attempt or not self._can_move() or request is None:
                return
            self.state = "leaving"
            self._stop_timer()
            here, there = self.place, self.places[self.position + 1]
            backend = self.current
        sentence = f"{why}; moved to {there.label}."
        reason = "NotTriggerScaleUp" if why.endswith("NotTriggerScaleUp") else "failover_after"
        move = {"from": here.profile.name, "from_gpu": here.gpu, "to": there.profile.name, "to_gpu": there.gpu,
                "reason": reason, "sentence": sentence}  # fmt: skip
        with self._lock:  # (recorded before the delete: the next place may be asked as soon as the run is gone)
            self.moves.append(move)
            self._announced.clear()
        refused = ""
        try:
            stopped = backend.move_away(request.run_id, sentence)
        except KjupyterError as exc:  # it could not be deleted: it stays (a second copy must never start)
            stopped, refused = False, str(exc).rstrip(".")
        if not stopped:  # refused, or it ended (or got a node) meanwhile: it stays
            with self._lock:
                self.moves.remove(move)
                self.state = "here"
        if refused:
            self._sink(Diagnosis(request.run_id, "MoveRefused", f"The run could not be moved off {here.profile.name}, "
                                 f"so it stays there: its deletion was refused ({refused})."))  # fmt: skip
        elif stopped:
            self._sink(Diagnosis(request.run_id, "Moved", sentence))
        self._announced.set()  # (the next place is asked only after the move was said)

    def _next(self) -> None:
        """The run is gone from where it was: start it at the next place (or end it, if cancelled)."""
        request = self._request
        assert request is not None
        self._announced.wait(30)
        with self._lock:
            cancelled = self.cancelled
            position = self.position + 1
            moves = tuple(self.moves)
        if cancelled:
            self._end(request, Phase.CANCELLED, "Cancelled", "the run was cancelled while it moved")
            return
        there = self.places[position]
        self.on_move(there)
        try:
            self._start(position, dataclasses.replace(request, spec=there.spec, moves=moves))
        except KjupyterError as exc:
            self._sink(Diagnosis(request.run_id, "MoveFailed", f"The run could not be started on {there.label} "
                                 f"after it moved there: {str(exc).rstrip('.')}.", fatal=True))  # fmt: skip
            self._end(request, Phase.FAILED, "MoveFailed", str(exc))

    def _end(self, request: SubmitRequest, phase: Phase, reason: str, message: str) -> None:
        task = Phase.CANCELLED if phase is Phase.CANCELLED else Phase.FAILED
        for index in range(request.count):
            self._sink(TaskFinished(request.run_id, index, task, None, reason, message))
        self._sink(RunFinished(request.run_id, phase, reason, message))

    # --- the Backend protocol: the place the run is at -------------------------------------------
    def cancel(self, run_id: str) -> bool:
        with self._lock:
            self.cancelled = True
            self._stop_timer()
            if self.state != "here":
                return True  # the move stops where it is: the run ends Cancelled without a next place
            backend = self.current
        return backend.cancel(run_id)

    def move_away(self, run_id: str, sentence: str) -> bool:
        return self.current.move_away(run_id, sentence)

    def attach(self, run_id: str, sink: EventSink) -> None:
        self.current.attach(run_id, sink)

    def open_outcome(self, run_id: str, index: int) -> contextlib.AbstractContextManager[IO[bytes]]:
        return self.current.open_outcome(run_id, index)

    def list_runs(self, user: str | None = None) -> Any:
        return self.current.list_runs(user)

    def logs(self, run_id: str, index: int | None = None, *, follow: bool = False) -> Iterator[str]:
        return self.current.logs(run_id, index, follow=follow)

    def render(self, spec: RunSpec, **kwargs: Any) -> list[dict[str, Any]]:
        return self.current.render(spec, **kwargs)

    def doctor(self) -> list[Check]:
        return self.current.doctor()

    def gpu_report(self) -> GpuReport:
        return self.current.gpu_report()

    def has_run(self, run_id: str) -> bool:
        return self.current.has_run(run_id)

    def run_key(self, run_id: str) -> bytes | None:
        return self.current.run_key(run_id)
