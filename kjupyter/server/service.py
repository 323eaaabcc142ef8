"""What the REST routes need from kjupyter, as plain blocking calls on plain data.

It speaks only the :class:`~kjupyter.backends.base.Backend` protocol
(``list_runs``, ``logs``, ``cancel``, ``describe``) and :class:`RunInfo`:
nothing here reads a payload or an outcome, so the server never unpickles.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from kjupyter import names, usage
from kjupyter.backends.base import Backend, RunInfo
from kjupyter.config import Config, Profile, load_config
from kjupyter.errors import ConfigError, KjupyterError
from kjupyter.run_events import Phase
from kjupyter.server.failures import RunErrors, failure_rows
from kjupyter.server.probes import ProbeCache
from kjupyter.server.state import LabChoice
from kjupyter.session import make_backend
from kjupyter.usage import Prices


class NotFound(KjupyterError):
    """An unknown run or cluster: the routes answer 404 with this sentence."""


class BadRequest(KjupyterError):
    """A request that cannot be served as asked: the routes answer 400 with this sentence."""


@dataclass(frozen=True)
class Listing:
    runs: list[dict[str, Any]]
    errors: list[dict[str, str]]


class RunService:
    """Configuration, one backend per cluster, and the user whose runs are shown.

    Runs cancelled here are remembered (the last ``KEEP_CANCELLED``, while the server runs):
    a backend that forgets a run once it is gone (a Kubernetes profile without a store, whose
    deleted Job was all there was of the run) would otherwise make it vanish from the panel
    instead of showing it Cancelled. With a store, the run's run.json keeps it listed. A
    backend's listing that is partial (a store that cannot be read) is listed, and said in
    ``errors``.
    """

    KEEP_CANCELLED = 200
    FOLLOW_INTERVAL = 1.0  # seconds between re-reads of a log the backend stopped following
    PROBE_WAIT = 3.0  # seconds a cluster probe may take before its row says "no answer yet"
    PROBE_TTL = 30.0  # seconds a probe's answer is reused

    def __init__(self, config: Config | None = None, user: str | None = None,
                 choice: LabChoice | None = None) -> None:  # fmt: skip
        self._config = config
        self.user = user or names.current_user()
        self.choice = choice  # None: a service that is no lab's (no status-bar choice to keep)
        self._backends: dict[str, Backend] = {}
        self._lock = threading.Lock()
        self._cancelled: OrderedDict[tuple[str, str], RunInfo] = OrderedDict()
        self._probes = ProbeCache(self._describe, self.PROBE_WAIT, self.PROBE_TTL)
        self.errors = RunErrors()

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config()
        return self._config

    def profile(self, name: str) -> Profile:
        try:
            return self.config.profile(name)
        except ConfigError as exc:
            raise NotFound(str(exc)) from None

    def backend(self, name: str) -> Backend:
        profile = self.profile(name)
        with self._lock:
            backend = self._backends.get(name)
            if backend is None:
                backend = self._backends[name] = make_backend(profile)
            return backend

    def close(self) -> None:
        self._probes.close()
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            try:
                backend.close()
            except Exception:  # closing is best effort at server shutdown
                pass

    # --- clusters ----------------------------------------------------------------------

    def current(self) -> str:
        """The cluster this lab's kernels use: the lab's choice if it is still configured, else the default."""
        chosen = self.choice.read() if self.choice is not None else None
        return chosen if chosen is not None and chosen in self.config.profiles else self.config.default

    def chosen_by(self) -> str:
        """What picked :meth:`current`: the lab's status bar, or the default's own source."""
        chosen = self.choice.read() if self.choice is not None else None
        if chosen is not None and chosen in self.config.profiles:
            return "chosen in this lab's status bar"
        return self.config.default_source

    def choose(self, name: str) -> str:
        if name not in self.config.profiles:
            known = ", ".join(sorted(self.config.profiles))
            raise BadRequest(f"There is no cluster {name!r}; the configured clusters are: {known}.")
        if self.choice is None:
            raise BadRequest("This server keeps no cluster choice (it was not started as a Jupyter server extension).")
        self.choice.write(name)
        return name

    def clusters(self, probe: bool = False) -> dict[str, Any]:
        """The profiles (name, backend, namespace, where), the current one and why; ``probe``: reachability.

        A probe asks every cluster at once; a cluster that does not answer within ``PROBE_WAIT`` is a
        row that says so, and its answer, when it comes, is kept ``PROBE_TTL`` like every other.
        """
        current = self.current()
        rows = [self._cluster_row(p, current) for _, p in sorted(self.config.profiles.items())]
        if probe:
            for row, result in zip(rows, self._probes.get([r["name"] for r in rows]), strict=True):
                row.update(result)
        return {"clusters": rows, "current": current, "default": self.config.default, "chosen_by": self.chosen_by()}

    def _cluster_row(self, p: Profile, current: str) -> dict[str, Any]:
        namespace = p.namespace or ("default" if p.backend == "kubernetes" else "")
        return {"name": p.name, "backend": p.backend, "where": p.where, "namespace": namespace,
                "gpus": sorted(p.gpus), "default": p.name == self.config.default, "current": p.name == current,
                "reachable": None, "detail": ""}  # fmt: skip

    def _describe(self, name: str) -> dict[str, Any]:
        try:
            info = self.backend(name).describe()
            return {"reachable": bool(info.get("reachable", True)), "detail": str(info.get("detail", ""))}
        except Exception as exc:  # an unreachable cluster is a row, not a failed request
            return {"reachable": False, "detail": str(exc)}

    # --- runs --------------------------------------------------------------------------

    def list_runs(self, cluster: str | None = None, status: str | None = None) -> Listing:
        """The user's runs on one cluster (or all), newest first; a cluster that fails is reported, not fatal."""
        names_ = [self.profile(cluster).name] if cluster else sorted(self.config.profiles)
        wanted = {s.strip().lower() for s in status.split(",")} if status else None
        found: dict[str, RunInfo] = {}  # two profiles may share one store: show each run once
        listed_on: dict[str, str] = {}  # run id -> the profile that listed it (whose backend reads its errors)
        errors: list[dict[str, str]] = []
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(names_)))) as pool:
            for name, result in zip(names_, pool.map(self._runs_of, names_), strict=True):
                if isinstance(result, str):
                    errors.append({"cluster": name, "message": result})
                    continue
                for problem in getattr(result, "problems", ()):  # listed, but partly: said, not hidden
                    errors.append({"cluster": name, "message": f"{name}: {problem[:1].upper()}{problem[1:]}."})
                for info in result:
                    moved = info.extra.get("moved")  # (the record a GPU fallback list left: the run went on elsewhere)
                    if info.run_id not in found or (info.cluster == name and not moved):
                        found[info.run_id], listed_on[info.run_id] = info, name
                for info in self._cancelled_on(name):
                    if info.run_id not in found:
                        found[info.run_id], listed_on[info.run_id] = info, name
        runs = sorted(found.values(), key=lambda r: r.created, reverse=True)
        rows = [run_row(r, self.prices(r.cluster)) for r in runs if wanted is None or r.phase.value.lower() in wanted]
        self.errors.fill(rows, lambda row: self.backend(listed_on[row["run_id"]]))
        return Listing(rows, errors)

    def prices(self, name: str) -> Prices:
        """The prices of cluster ``name`` (none for a cluster not configured here)."""
        profile = self.config.profiles.get(name)
        return profile.prices if profile is not None else Prices()

    def _cancelled_on(self, name: str) -> list[RunInfo]:
        with self._lock:
            return [info for (cluster, _), info in self._cancelled.items() if cluster == name]

    def _runs_of(self, name: str) -> list[RunInfo] | str:
        try:
            return self.backend(name).list_runs(self.user)
        except Exception as exc:  # an unreachable cluster must not hide the others' runs
            return f"cannot list the runs on {name}: {exc}"

    def find(self, run_id: str, cluster: str | None = None) -> tuple[str, RunInfo]:
        """``(profile name, run)`` for the run ``run_id`` of the user, on ``cluster`` or on any cluster."""
        names_ = [self.profile(cluster).name] if cluster else sorted(self.config.profiles)
        for name in names_:
            result = self._runs_of(name)
            if isinstance(result, list):
                for info in result:
                    if info.run_id == run_id and not info.extra.get("moved"):
                        return name, info
            with self._lock:
                gone = self._cancelled.get((name, run_id))
            if gone is not None:
                return name, gone
        where = f"cluster {cluster!r}" if cluster else "any configured cluster"
        raise NotFound(
            f"There is no run {run_id!r} of user {self.user!r} on {where}; the Kubernetes runs panel lists the runs."
        )

    def logs(self, cluster: str, info: RunInfo, index: int | None, follow: bool,
             stop: threading.Event | None = None) -> Iterator[str]:  # fmt: skip
        """The run's log; with ``follow``, lines keep coming until the run ends (or ``stop`` is set)."""
        if index is not None and not 0 <= index < info.total:
            raise BadRequest(f"Run {info.run_id!r} has tasks 0 to {info.total - 1}; there is no task {index}.")
        lines = self.backend(cluster).logs(info.run_id, index, follow=follow)
        if not follow or info.phase.finished:
            return lines
        return self._follow(cluster, info.run_id, index, lines, stop or threading.Event())

    def _follow(self, cluster: str, run_id: str, index: int | None, lines: Iterator[str],
                stop: threading.Event) -> Iterator[str]:  # fmt: skip
        """Follow a log to the run's end, even where the backend's own stream ends earlier.

        A backend may end a followed stream while the run goes on (a Kubernetes map whose
        later pods start after the stream began, a dropped connection): then the log is
        re-read every ``FOLLOW_INTERVAL`` and only the lines not sent yet are sent (counted
        per distinct line, so lines of several tasks may interleave), until the run ended and
        one last read was made.
        """
        sent: Counter[str] = Counter()
        try:
            for line in lines:
                sent[line] += 1
                yield line
                if stop.is_set():
                    return
        finally:
            close = getattr(lines, "close", None)
            if close is not None:
                close()
        backend = self.backend(cluster)
        while not stop.is_set():
            ended = self._ended(cluster, run_id)
            seen: Counter[str] = Counter()
            try:
                current = list(backend.logs(run_id, index, follow=False))
            except KjupyterError:
                return  # the run is gone (a deleted Job): nothing more to read
            for line in current:
                seen[line] += 1
                if seen[line] > sent[line]:
                    sent[line] += 1
                    yield line
            if ended or stop.wait(self.FOLLOW_INTERVAL):
                return

    def _ended(self, cluster: str, run_id: str) -> bool:
        try:
            return self.find(run_id, cluster)[1].phase.finished
        except NotFound:
            return True

    def row(self, cluster: str, info: RunInfo) -> dict[str, Any]:
        """One run as the listing shows it (with its error line)."""
        row = run_row(info, self.prices(info.cluster))
        self.errors.fill([row], lambda _: self.backend(cluster))
        return row

    def failures(self, cluster: str, info: RunInfo) -> list[dict[str, Any]]:
        """The run's failed items, each with its exception line (:mod:`kjupyter.server.failures`)."""
        return failure_rows(self.backend(cluster), info.run_id, list(info.extra.get("failed_items", [])))

    def cancel(self, cluster: str, info: RunInfo) -> bool:
        """Cancel the run; once cancelled here it is listed as Cancelled even after its backend forgets it."""
        run_id = info.run_id
        cancelled = self.backend(cluster).cancel(run_id)
        if cancelled:
            gone = replace(info, phase=Phase.CANCELLED, finished=info.finished or time.time(), running=0)
            with self._lock:
                self._cancelled[(cluster, run_id)] = gone
                while len(self._cancelled) > self.KEEP_CANCELLED:
                    self._cancelled.popitem(last=False)
        return cancelled


def run_row(info: RunInfo, prices: Prices | None = None) -> dict[str, Any]:
    """A run as JSON: RunInfo's fields, whether it is still going, its GPU-hours and estimated cost, a map's
    cancelled items and failed items.

    ``error`` (added by :class:`~kjupyter.server.failures.RunErrors`): what its first failed task raised.
    ``cancelled``: a finished run's tasks that neither succeeded nor failed. ``failed_items``: the
    indexes of the failed tasks its record lists (the first 50); ``GET runs/ID/failures`` reads
    their exception lines.
    """
    row = {**info.as_dict(), **usage.summary(info.usage, prices or Prices())}
    row["active"] = not info.phase.finished
    row["cancelled"] = max(0, info.total - info.succeeded - info.failed) if info.phase.finished else 0
    row["failed_items"] = list(info.extra.get("failed_items", []))
    return row
