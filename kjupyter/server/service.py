"""What the REST routes need from kjupyter, as plain blocking calls on plain data.

It speaks only the :class:`~kjupyter.backends.base.Backend` protocol
(``list_runs``, ``logs``, ``cancel``, ``describe``) and :class:`RunInfo`:
nothing here reads a payload or an outcome, so the server never unpickles.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kjupyter import names
from kjupyter.backends.base import Backend, RunInfo
from kjupyter.config import Config, Profile, load_config
from kjupyter.errors import ConfigError, KjupyterError
from kjupyter.server import state
from kjupyter.session import make_backend


class NotFound(KjupyterError):
    """An unknown run or cluster: the routes answer 404 with this sentence."""


class BadRequest(KjupyterError):
    """A request that cannot be served as asked: the routes answer 400 with this sentence."""


@dataclass(frozen=True)
class Listing:
    runs: list[dict[str, Any]]
    errors: list[dict[str, str]]


class RunService:
    """Configuration, one backend per cluster, and the user whose runs are shown."""

    def __init__(self, config: Config | None = None, user: str | None = None) -> None:
        self._config = config
        self.user = user or names.current_user()
        self._backends: dict[str, Backend] = {}
        self._lock = threading.Lock()

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
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            try:
                backend.close()
            except Exception:  # closing is best effort at server shutdown
                pass

    # --- clusters ----------------------------------------------------------------------

    def current(self) -> str:
        """The cluster chosen in the lab if it is still configured, else the configuration's default."""
        chosen = state.read_current()
        return chosen if chosen is not None and chosen in self.config.profiles else self.config.default

    def choose(self, name: str) -> str:
        if name not in self.config.profiles:
            known = ", ".join(sorted(self.config.profiles))
            raise BadRequest(f"There is no cluster {name!r}; the configured clusters are: {known}.")
        state.write_current(name)
        return name

    def clusters(self, probe: bool = False) -> dict[str, Any]:
        current = self.current()
        rows = [self._cluster_row(p, current) for _, p in sorted(self.config.profiles.items())]
        if probe:
            with ThreadPoolExecutor(max_workers=max(1, min(8, len(rows)))) as pool:
                for row, result in zip(rows, pool.map(self._describe, [r["name"] for r in rows]), strict=True):
                    row.update(result)
        return {"clusters": rows, "current": current, "default": self.config.default}

    def _cluster_row(self, p: Profile, current: str) -> dict[str, Any]:
        if p.backend == "kubernetes":
            where = f"{p.context or ('in-cluster' if p.in_cluster else 'current context')}/{p.namespace or 'default'}"
        else:
            where = "this machine"
        return {"name": p.name, "backend": p.backend, "where": where, "gpus": sorted(p.gpus),
                "default": p.name == self.config.default, "current": p.name == current,
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
        errors: list[dict[str, str]] = []
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(names_)))) as pool:
            for name, result in zip(names_, pool.map(self._runs_of, names_), strict=True):
                if isinstance(result, str):
                    errors.append({"cluster": name, "message": result})
                    continue
                for info in result:
                    if info.run_id not in found or info.cluster == name:
                        found[info.run_id] = info
        runs = sorted(found.values(), key=lambda r: r.created, reverse=True)
        rows = [run_row(r) for r in runs if wanted is None or r.phase.value.lower() in wanted]
        return Listing(rows, errors)

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
                    if info.run_id == run_id:
                        return name, info
        where = f"cluster {cluster!r}" if cluster else "any configured cluster"
        raise NotFound(
            f"There is no run {run_id!r} of user {self.user!r} on {where}; the Kubernetes runs panel lists the runs."
        )

    def logs(self, cluster: str, info: RunInfo, index: int | None, follow: bool) -> Iterator[str]:
        if index is not None and not 0 <= index < info.total:
            raise BadRequest(f"Run {info.run_id!r} has tasks 0 to {info.total - 1}; there is no task {index}.")
        return self.backend(cluster).logs(info.run_id, index, follow=follow)

    def cancel(self, cluster: str, run_id: str) -> bool:
        return self.backend(cluster).cancel(run_id)


def run_row(info: RunInfo) -> dict[str, Any]:
    """A run as JSON: RunInfo's fields plus whether it is still going."""
    row = info.as_dict()
    row["active"] = not info.phase.finished
    return row
