"""Futures of runs: they turn a backend's events into a value, an exception, or a cancellation.

:class:`RunFuture` is a :class:`concurrent.futures.Future` for one call;
:class:`MapFuture` resolves to the list of a map's results in input order.
Both are also the event hub of their run: views (widgets, console) subscribe
to them, and ``cancel()`` really stops the run on its backend.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kjupyter import failure_text as ft
from kjupyter import payload as pl
from kjupyter import run_events as ev
from kjupyter.backends.base import Backend
from kjupyter.errors import BackendError, IntegrityError, KjupyterError, RunCancelled, RunFailed, RunTimeout
from kjupyter.event_hub import EventHub
from kjupyter.run_events import Event, EventSink, Phase

_TAIL_LINES = 20  # log lines kept per running task, for the message of a crash


class RunFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """The future of one run. ``cancel()`` deletes the run (Job and pods) on its backend."""

    kind = "call"

    def __init__(self, run_id: str, backend: Backend, *, cluster: str, total: int = 1, function: str = "",
                 run_key: bytes | None = None) -> None:  # fmt: skip
        super().__init__()
        self.run_id = run_id
        self.run_key = run_key  # every outcome is authenticated with it before it is unpickled
        self.backend = backend
        self.cluster = cluster
        self.total = total
        self.function = function
        self.phase = Phase.PENDING
        self.diagnosis: ev.Diagnosis | None = None
        self.usage: ev.Usage | None = None  # what the run used (kjupyter.usage), known just before it ends
        self.cause: ev.Diagnosis | None = None  # why the run failed, when a diagnosis said it
        self.nodes: dict[int | None, str] = {}  # the node each task ran on (None: the run's own pod)
        self.created = time.time()
        self.finished_at: float | None = None
        self.detached = False
        self.hub = EventHub(run_id)
        self._tails: dict[int, collections.deque[str]] = {}
        self._ended = threading.Event()
        # Follow-up runs (kjupyter.reruns): OOM growth, retry_failed(), resume=. ``reruns`` sees every event
        # first; ``live_run_id`` is the run cancel() stops; ``_where[i]`` is (run, key, task) of task i's outcome
        # when another run made it; ``_verdicts[i]`` is the exception of a task judged by the client itself.
        self.reruns: Any = None
        self.source: Any = None  # what can start this run's tasks again (set by the session)
        self.live_run_id = run_id
        self._where: dict[int, tuple[str, bytes | None, int]] = {}
        self._verdicts: dict[int, BaseException] = {}

    # --- events -----------------------------------------------------------------------------

    def subscribe(self, listener: EventSink, *, replay: bool = True) -> None:
        """Call ``listener`` with every event of this run (past ones first, if ``replay``), on the run's lane."""
        self.hub.subscribe(listener, replay=replay)

    def unsubscribe(self, listener: EventSink) -> None:
        self.hub.unsubscribe(listener)

    def handle(self, event: Event) -> None:
        """The sink given to the backend (called on the run's event lane, never on a watch thread)."""
        if self.reruns is not None:
            found = self.reruns.filter(event)  # (translated from a follow-up run, held back, or as it came)
            if found is None:
                return
            event = found
        self._track(event)
        if isinstance(event, ev.TaskFinished):
            self._on_task(event)
        elif isinstance(event, ev.RunFinished):
            self._on_run(event)
        elif isinstance(event, ev.RunLost) and not self.done():
            self.set_exception(BackendError(event.sentence))
        self.hub.publish(event)
        if isinstance(event, ev.RunFinished | ev.RunLost):  # ended once every view has seen the end too
            self.hub.after_delivery(self._ended.set)

    def _track(self, event: Event) -> None:
        if isinstance(event, ev.PhaseChanged):
            if event.index is None:
                self.phase = event.phase
            if event.node:
                self.nodes[event.index] = event.node  # (a map item's node under its index)
        elif isinstance(event, ev.Diagnosis):
            self.diagnosis = event
            if event.fatal and event.reason not in ft.REDUNDANT_REASONS and self.cause is None:
                self.cause = event  # the first fatal diagnosis that says why (not only "it failed")
        elif isinstance(event, ev.Usage):
            self.usage = event
        elif isinstance(event, ev.LogLine):
            self._tails.setdefault(event.index, collections.deque(maxlen=_TAIL_LINES)).append(event.text)
        elif isinstance(event, ev.RunFinished):
            self.phase = event.phase
            self.finished_at = event.time

    def wait_ended(self, timeout: float | None = None) -> bool:
        """Wait until the backend reported the run's end (all processes gone), not just the result."""
        return self._ended.wait(timeout)

    # --- outcomes -----------------------------------------------------------------------------

    def _outcome(self, index: int, succeeded: bool = False) -> tuple[bool, Any]:
        """``(True, value)`` or ``(False, exception)`` for task ``index``.

        ``(False, None)``: a failed task left no outcome (killed before it wrote one); the caller
        explains why. A task that *succeeded* but whose outcome cannot be read gets the backend's
        own sentence (say, logs forbidden for an inline result), never "every task succeeded".
        """
        if index in self._verdicts:
            return False, self._verdicts[index]
        run_id, key, at = self._where.get(index, (self.run_id, self.run_key, index))
        try:
            with self.backend.open_outcome(run_id, at) as f:
                source = str(getattr(f, "name", "") or "")  # the store object's URL or path, when it has one
                where = f"run {run_id} task {at}" + (f" ({source})" if source else "")
                try:
                    return True, pl.load_outcome(f, key=key, index=at, where=where)
                except BaseException as exc:  # the remote exception, rebuilt (or why it cannot be read)
                    return False, exc.with_traceback(None)
        except IntegrityError as exc:  # the backend would not even open it (a store URL outside yours)
            return False, exc.with_traceback(None)
        except KjupyterError as exc:
            return False, (exc.with_traceback(None) if succeeded else None)

    def _failure(self, event: ev.TaskFinished | ev.RunFinished, index: int = 0) -> BaseException:
        """Why a task failed, when it left no exception of its own: one sentence (and a hint), said once.

        The message is ``run X failed (reason): sentence`` and, on a line of its own, the hint. The last
        log lines are kept on the exception (``logs``), not in its message: every view shows the log.
        """
        d = self.cause
        sentence = event.message or (d.sentence if d is not None else "") or "it ended without a result"
        hint = d.hint if d is not None else ""
        reason = event.reason or (d.reason if d is not None else "")
        text = f"run {self.run_id} failed" + (f" ({reason})" if reason else "") + f": {sentence.rstrip('.')}."
        if hint:
            text += f"\nhint: {hint}"
        tail = "\n".join(self._tails.get(index, ()))
        cls = RunTimeout if reason == "DeadlineExceeded" else RunFailed
        return cls(text, run_id=self.run_id, reason=reason, logs=tail, sentence=sentence, hint=hint)

    def _on_task(self, event: ev.TaskFinished) -> None:
        self._tails.pop(event.index, None) if event.phase is Phase.SUCCEEDED else None

    def _on_run(self, event: ev.RunFinished) -> None:
        if self.done():
            return
        if event.phase is Phase.CANCELLED:
            super().cancel()
            return
        ok, value = self._outcome(0, succeeded=event.phase is Phase.SUCCEEDED)
        if ok:
            self.set_result(value)
        elif value is not None:
            self.set_exception(value)
        else:
            self.set_exception(self._failure(event))

    # --- control ------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Stop the run on its backend; True once the cluster accepted to stop it, False if it had finished.

        A refused stop (no permission to delete the Job, say) raises the backend's error: the run
        goes on, and saying "cancelled" would be a lie.
        """
        if self.done():
            return False
        if self.reruns is not None:
            self.reruns.cancelling = True  # no further rerun starts
        if not self.backend.cancel(self.live_run_id):
            return False  # it had just finished: its result is on its way
        return super().cancel()

    def result(self, timeout: float | None = None) -> Any:
        """The run's value; a cancelled run raises :class:`RunCancelled` (a ``CancelledError`` too)."""
        with self._as_run_cancelled():
            return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        with self._as_run_cancelled():
            return super().exception(timeout)

    @contextlib.contextmanager
    def _as_run_cancelled(self) -> Iterator[None]:
        """Every cancelled run raises the one type, :class:`RunCancelled`, whatever cancelled it."""
        try:
            yield
        except RunCancelled:
            raise
        except concurrent.futures.CancelledError:
            cancelled = RunCancelled(f"run {self.run_id} was cancelled", run_id=self.run_id)
            raise ft.attach(cancelled, ft.render(cancelled, self.where())) from None

    def set_exception(self, exception: BaseException | None) -> None:
        """Settle with ``exception``, which then shows as kjupyter's one rendering of a failure (see failure_text)."""
        if exception is not None:
            index = getattr(self, "_failed_index", None)
            ft.attach(exception, ft.render(exception, self.where(index), self.cause, name_file=ft.ipython_name))
        super().set_exception(exception)

    def where(self, index: int | None = None) -> ft.Where:
        """Where task ``index`` (a map's item; None: the run) ran, for the header of its failure."""
        item = index if self.kind == "map" else None
        summary = self.describe(item) if item is not None else ""
        return ft.Where(self.run_id, self.cluster, self.function, node_of(self, index), item, summary)

    def detach(self) -> RunFuture:
        """Let the run outlive this interpreter (it is not cancelled at exit); ``kjupyter.attach`` finds it."""
        self.detached = True
        return self

    def failures(self) -> list[tuple[int | None, BaseException]]:
        """What failed, once known: ``[(None, exception)]`` for a failed call (a map: one entry per failed
        item, ``(index, exception)``); cancelled tasks are not failures. Never blocks."""
        if not self.done() or self.cancelled():
            return []
        exc = concurrent.futures.Future.exception(self, 0)
        return [] if exc is None or isinstance(exc, RunCancelled) else [(None, exc)]

    def describe(self, index: int) -> str:
        """A short description of task ``index`` (a map's item)."""
        return f"task {index}"

    def result_or_raise(self, timeout: float | None = None) -> Any:
        """``result()`` (kept for callers of earlier versions: ``result()`` itself raises RunCancelled now)."""
        return self.result(timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.run_id} on {self.cluster}: {self.phase.value}>"


class MapFuture(RunFuture):
    """The future of a map: the list of results, in the order of the inputs.

    By default the first failure raises (after cancelling the rest); with
    ``return_exceptions=True`` each failed item's exception takes its place
    in the list instead.
    """

    kind = "map"

    def __init__(self, run_id: str, backend: Backend, *, cluster: str, items: Sequence[Any],
                 return_exceptions: bool = False, function: str = "", run_key: bytes | None = None) -> None:  # fmt: skip
        super().__init__(run_id, backend, cluster=cluster, total=len(items), function=function, run_key=run_key)
        self.return_exceptions = return_exceptions
        self._describe: Callable[[int], str] = lambda i: _short(items[i])
        self._results: list[Any] = [None] * len(items)
        self._have = [False] * len(items)
        self.stopped_at: int | None = None  # the item whose failure stopped the map (without return_exceptions)

    def _on_task(self, event: ev.TaskFinished) -> None:
        super()._on_task(event)
        i = event.index
        if event.phase is Phase.SUCCEEDED:
            ok, value = self._outcome(i, succeeded=True)
        elif event.phase is Phase.CANCELLED:
            ok, value = False, RunCancelled(f"item {i} of run {self.run_id} was cancelled")
        else:
            ok, value = self._outcome(i)
            if value is None:
                value = self._failure(event, i)
        if not ok and isinstance(value, BaseException):
            with contextlib.suppress(Exception):
                value.add_note(f"kjupyter: raised by item {i} of run {self.run_id}: {self._describe(i)}")
        self._results[i], self._have[i] = value, True
        if not ok and not self.return_exceptions and not self.done() and event.phase is not Phase.CANCELLED:
            self._failed_index = i
            self.stopped_at = i  # fail-fast: the map stopped at this item
            self.set_exception(value)
            with contextlib.suppress(KjupyterError):
                self.backend.cancel(self.live_run_id)  # first failure: stop the rest

    def _on_run(self, event: ev.RunFinished) -> None:
        if self.done():
            return
        if event.phase is Phase.CANCELLED and not all(self._have):
            super(RunFuture, self).cancel()
            return
        missing = [i for i, have in enumerate(self._have) if not have]
        if missing:  # the run ended without a word on these tasks (deadline, deletion)
            error = self._failure(event, missing[0])
            if not self.return_exceptions:
                self.set_exception(error)
                return
            for i in missing:
                self._results[i] = error
        self.set_result(list(self._results))

    def failures(self) -> list[tuple[int | None, BaseException]]:
        found: list[tuple[int | None, BaseException]] = [
            (i, value)
            for i, (have, value) in enumerate(zip(self._have, self._results, strict=True))
            if have and isinstance(value, BaseException) and not isinstance(value, RunCancelled)
        ]
        if not found:  # the run ended without a word on an item (a deadline): the map's own exception
            found = super().failures()
        return found

    def describe(self, index: int) -> str:
        return self._describe(index)

    def retry_failed(self) -> MapFuture:
        """A new map future that reruns only the failed, cancelled and missing items of this finished map.

        The other items keep their results (no new work, nothing read again); the rerun is one new
        run (``<run>-r1``) over the failed items, and its future resolves to the complete list, in
        input order. ``f.map(items, resume=RUN_ID)`` does the same from the store, in another process.
        """
        if not self.done():
            raise KjupyterError(f"map {self.run_id} is still running: retry_failed() reruns the failed items of a "
                                "finished map; wait for it (or cancel it) first")  # fmt: skip
        if self.source is None:
            raise KjupyterError(f"map {self.run_id} was not started by this process, so its function and items are "
                                f"not here; rerun its failed items with f.map(items, resume={self.run_id!r})")  # fmt: skip
        ok = {i: v for i, (have, v) in enumerate(zip(self._have, self._results, strict=True))
              if have and not isinstance(v, BaseException)}  # fmt: skip
        future: MapFuture = self.source.retry(self, ok)
        return future

    @property
    def counts(self) -> dict[str, int]:
        out = {"total": self.total, "succeeded": 0, "failed": 0, "cancelled": 0}
        for have, value in zip(self._have, self._results, strict=True):
            if have:
                key = (
                    "cancelled"
                    if isinstance(value, RunCancelled)
                    else "failed"
                    if isinstance(value, BaseException)
                    else "succeeded"
                )
                out[key] += 1
        return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def node_of(future: RunFuture, index: int | None) -> str:
    """The node task ``index`` ran on, else the run's (as far as the events told)."""
    nodes = future.nodes
    return nodes.get(index) or nodes.get(0 if index is None else None) or nodes.get(None) or ""
