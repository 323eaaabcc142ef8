"""The process-wide session: configuration, backends, and the runs it started.

Everything user-facing (``@remote``, ``%%kube``, the CLI) goes through one
:class:`Session`: it resolves the cluster profile, merges the profile's
defaults with the call's options, serialises the payload, hands it to the
backend, and makes sure non-detached runs do not outlive the interpreter.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from kjupyter import cache, credentials, lab_choice, names, placement, reruns, resume, run_keys
from kjupyter import payload as pl
from kjupyter.backends.base import CALL, MAP, Backend, GpuReport, SubmitRequest
from kjupyter.config import Config, Profile, load_config
from kjupyter.errors import BackendError, ConfigError, IntegrityError, KjupyterError, KjupyterWarning
from kjupyter.failover import Advisor, FailoverBackend
from kjupyter.futures import MapFuture, RunFuture
from kjupyter.placement import Place
from kjupyter.run_events import EventSink
from kjupyter.spec import RunSpec, gpu_choices

Notice = Callable[[str], None]
F = TypeVar("F", bound=RunFuture)


class Session:
    def __init__(self, config: Config | None = None) -> None:
        self._config = config
        self.cluster: str | None = None  # set by `%kube use NAME`
        self._backends: dict[str, Backend] = {}
        self._active: dict[str, RunFuture] = {}
        self._lock = threading.Lock()
        self.user = names.current_user()
        self.session_id = names.SESSION_ID
        self.notice: Notice = lambda text: None  # where "picked cluster X" style notes go
        self._ignored_lab_choice: str | None = None  # warned about once, not at every run

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config()
        return self._config

    def reload(self, config: Config | None = None) -> None:
        self.close()
        self._config = config

    # --- resolution -------------------------------------------------------------------------

    def choice(self) -> lab_choice.Choice:
        """Where a run that names no cluster goes, and what chose it (:mod:`kjupyter.lab_choice`).

        In a kernel of JupyterLab the lab's status-bar choice is read at each run, so a switch in the
        lab applies to kernels already open; a choice that names no configured profile is ignored with
        one :class:`KjupyterWarning` (once per name).
        """
        chosen = lab_choice.choose(self.config, kube_use=self.cluster)
        ignored = chosen.ignored_lab_choice
        if ignored is not None and ignored != self._ignored_lab_choice:
            self._ignored_lab_choice = ignored
            warnings.warn(
                f"the cluster {ignored!r} chosen in JupyterLab ({lab_choice.lab_file()}) is not configured "
                f"here; using {chosen.name!r} ({chosen.source}). Configured clusters: "
                f"{', '.join(sorted(self.config.profiles))}.",
                KjupyterWarning,
                stacklevel=4,
            )
        return chosen

    def default_profile(self) -> Profile:
        """The profile of :meth:`choice`: where a run goes when it names no cluster."""
        return self.config.profile(self.choice().name)

    def profile_for(self, options: Mapping[str, Any]) -> Profile:
        """The profile a run goes to: named, or the session's, or one offering the GPU type, or the default."""
        if gpu_choices(options.get("gpu")):  # a GPU fallback list: its first place
            return self.plan(options)[0].profile
        name = options.get("cluster") or self.cluster
        if name:
            return self.config.profile(name)
        gpu_type = RunSpec.build(
            **{k: options[k] for k in ("gpu", "gpu_type") if options.get(k) is not None}
        ).resources.gpu_type
        default = self.default_profile()
        if gpu_type and not default.offers_gpu(gpu_type):
            offering = self.config.profiles_offering_gpu(gpu_type)
            if not offering:
                known = {g for p in self.config.profiles.values() for g in p.gpus}
                raise ConfigError(
                    f"no configured cluster offers {gpu_type} GPUs; GPU types offered: {', '.join(sorted(known)) or 'none'}"
                )
            self.notice(f"kjupyter: running on cluster {offering[0].name!r}, the first one that offers {gpu_type} GPUs")
            return offering[0]
        return default

    def spec_for(self, profile: Profile, options: Mapping[str, Any]) -> RunSpec:
        """The run's spec on ``profile``: its defaults, then ``options``; a GPU type it lacks is refused."""
        spec = profile.defaults.with_options(**{k: v for k, v in options.items() if k != "cluster"},
                                             cluster=profile.name)  # fmt: skip
        gpu_type = spec.resources.gpu_type
        if gpu_type and profile.backend == "kubernetes" and not profile.offers_gpu(gpu_type):
            # Not silently a GPU of any type: the type only means something through the profile's node selector.
            others = [p.name for p in self.config.profiles_offering_gpu(gpu_type)]
            raise ConfigError(
                f"cluster {profile.name!r} has no {gpu_type} GPUs configured (its GPU types: "
                f"{', '.join(sorted(profile.gpus)) or 'none'}), so a run there cannot ask for one; "
                + (f"clusters that have them: {', '.join(others)} (name one, or name no cluster and kjupyter picks it). "
                   if others else "no configured cluster has them. ")
                + f"Ask for any GPU with gpu={spec.resources.gpu}, or describe its {gpu_type} nodes in "
                f"[clusters.{profile.name}.gpus.{gpu_type}] (node_selector, tolerations)"
            )  # fmt: skip
        return spec

    def plan(self, options: Mapping[str, Any]) -> list[Place]:
        """The places of a GPU fallback list (``gpu=["H100:1", "A100:1"]``), each with the run's spec there."""
        choices = gpu_choices(options.get("gpu")) or ()
        first = self.cluster or self.default_profile().name  # (`%kube use NAME`: asked first, not alone)
        places = placement.candidates(self.config, choices, cluster=options.get("cluster"), first=first)
        return [Place(p.profile, p.gpu_type, p.count, self.spec_for(p.profile, {**options, "gpu": p.gpu}))
                for p in places]  # fmt: skip

    def gpu_reports(self) -> list[GpuReport]:
        """``kjupyter gpus``: every profile's GPU types and, where nodes can be listed, how many are free."""
        return [self.backend(p).gpu_report() for p in self.config.profiles.values()]

    def placed(self, options: Mapping[str, Any]) -> tuple[Profile, RunSpec, list[Place]]:
        """Where a run goes: one profile, or (a GPU fallback list) its places, the first one first."""
        if gpu_choices(options.get("gpu")):
            places = self.plan(options)
            return places[0].profile, places[0].spec, places
        profile = self.profile_for(options)
        return profile, self.spec_for(profile, options), []

    def _backend_for(self, profile: Profile, spec: RunSpec, places: list[Place]) -> tuple[Backend, Advisor | None]:
        """The run's backend (one that moves it along ``places``, if any) and who advises on free GPUs."""
        advisor = Advisor(self.gpu_reports) if spec.resources.gpu_type and profile.backend == "kubernetes" else None
        if not places:
            return self.backend(profile), advisor
        return FailoverBackend(places, self.backend, advisor), None

    def backend_of_run(self, run_id: str, cluster: str | None = None, notice: Notice | None = None) -> Backend:
        """The backend of the cluster that has run ``run_id`` (``kjupyter logs RUN``, ``kjupyter cancel RUN``).

        A named ``cluster`` is taken as it is: no search. Otherwise the session's cluster (or the
        default) is asked first, then every other configured profile in configuration order; the
        first that has the run is used, and ``notice`` (default :attr:`notice`) says which when it is
        not the first. None has it: one BackendError naming the clusters searched.
        """
        if cluster:
            return self.backend(self.config.profile(cluster))
        first = self.config.profile(self.cluster) if self.cluster else self.default_profile()
        searched: list[str] = []
        for profile in [first, *(p for p in self.config.profiles.values() if p.name != first.name)]:
            backend = self.backend(profile)
            try:
                found = backend.has_run(run_id)
            except KjupyterError as exc:  # an unreachable cluster must not stop the search
                searched.append(f"{profile.name} (not reachable: {str(exc).rstrip('.')})")
                continue
            if found:
                if profile.name != first.name:
                    (notice or self.notice)(f"kjupyter: run {run_id} is on cluster {profile.name!r}")
                return backend
            searched.append(profile.name)
        raise BackendError(f"no run {run_id!r} on any configured cluster (searched: {'; '.join(searched)}); "
                           "`kjupyter jobs --cluster NAME` lists a cluster's runs")  # fmt: skip

    def backend(self, profile: Profile) -> Backend:
        with self._lock:
            backend = self._backends.get(profile.name)
            if backend is None:
                backend = self._backends[profile.name] = make_backend(profile)
            return backend

    # --- submitting -------------------------------------------------------------------------

    def submit_call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                    options: Mapping[str, Any]) -> RunFuture:  # fmt: skip
        profile, asked, places = self.placed(options)
        spec = reruns.first_attempt(asked, profile)  # (with grow_memory, reruns are new Jobs: kjupyter.reruns)
        plan = (
            cache.plan(CALL, fn, args, kwargs, spec, profile, self.backend(profile), self.user) if spec.cache else None
        )
        if plan and plan.hit:  # no Job, no pod: the stored result of the same call
            return cache.served(plan.hit, self.backend(profile), profile.name, getattr(fn, "__qualname__", ""))
        key = run_keys.new_key()
        extra: dict[str, Any] = {"packages": list(spec.packages)} if spec.packages else {}
        data = pl.dump_call(fn, args, kwargs, key=key, **extra)
        credentials.check_no_credentials(data, f"the call of {pl._qualname(fn)}")
        run_id = names.new_run_id(spec.name or getattr(fn, "__name__", None))
        request = self._request(run_id, CALL, spec, data, fn, key)
        backend, advisor = self._backend_for(profile, spec, places)
        future = RunFuture(run_id, backend, cluster=profile.name, function=request.function, run_key=key)
        reruns.arm(self, future, fn, [(args, kwargs)], asked)
        return self._start(future, request, advisor, plan)

    def submit_map(self, fn: Callable[..., Any], items: Iterable[Any], options: Mapping[str, Any],
                   *, return_exceptions: bool = False) -> MapFuture:  # fmt: skip
        profile, asked, places = self.placed(options)
        spec = reruns.first_attempt(asked, profile)
        values = list(items)
        plan = cache.plan(MAP, fn, values, {}, spec, profile, self.backend(profile), self.user) if spec.cache else None
        if plan and plan.hit:
            return cache.served(plan.hit, self.backend(profile), profile.name, getattr(fn, "__qualname__", ""),  # type: ignore[return-value]
                                values, return_exceptions)  # fmt: skip
        key = run_keys.new_key()
        blob = io.BytesIO()
        count = pl.pack_items(values, blob, key=key)
        extra: dict[str, Any] = {"packages": list(spec.packages)} if spec.packages else {}
        data = pl.dump_map_function(fn, key=key, **extra)
        credentials.check_no_credentials(data, f"the function {pl._qualname(fn)}")
        packed = blob.getvalue()
        del blob
        credentials.check_no_credentials(packed, f"the items of the map of {pl._qualname(fn)}")
        run_id = names.new_run_id(spec.name or getattr(fn, "__name__", None))
        request = self._request(run_id, MAP, spec, data, fn, key, count=count, items=packed)
        backend, advisor = self._backend_for(profile, spec, places)
        future = MapFuture(run_id, backend, cluster=profile.name, items=values,
                           return_exceptions=return_exceptions, function=request.function, run_key=key)  # fmt: skip
        reruns.arm(self, future, fn, values, asked, return_exceptions)
        return self._start(future, request, advisor, plan)

    def resume_map(self, fn: Callable[..., Any], items: Iterable[Any], options: Mapping[str, Any], run_id: str,
                   *, return_exceptions: bool = False) -> MapFuture:  # fmt: skip
        """Rerun the failed and missing items of map ``run_id`` (``f.map(items, resume=RUN_ID)``)."""
        return resume.resume(self, fn, items, dict(options), run_id, return_exceptions)

    def _request(self, run_id: str, kind: str, spec: RunSpec, data: bytes, fn: Any, key: bytes,
                 count: int = 1, items: bytes | None = None) -> SubmitRequest:  # fmt: skip
        return SubmitRequest(run_id=run_id, kind=kind, spec=spec, payload=data, count=count, items=items,
                             user=self.user, session=self.session_id,
                             function=getattr(fn, "__qualname__", type(fn).__name__), run_key=key)  # fmt: skip

    def _start(self, future: F, request: SubmitRequest, advisor: Advisor | None = None,
               plan: cache.Plan | None = None) -> F:  # fmt: skip
        # Saved before the run exists, so `kjupyter.attach` from another process can always authenticate it.
        run_keys.save_key(request.run_id, request.run_key)
        with self._lock:
            self._active[request.run_id] = future
        sink: EventSink = future.handle
        if plan is not None:  # a successful run is recorded in the cache before its future learns it ended
            sink = plan.sink(sink, run_id=request.run_id, run_key=request.run_key, kind=request.kind,
                             count=request.count)  # fmt: skip
        if isinstance(future.backend, FailoverBackend):  # each move: the future (and its views) say where it is now
            future.backend.on_move = lambda place: setattr(future, "cluster", place.profile.name)
        elif advisor is not None:
            sink = advisor.wrap(Place(future.backend.profile, str(request.spec.resources.gpu_type),
                                      request.spec.resources.gpu), sink)  # fmt: skip
        try:
            future.backend.submit(request, sink)
        except BaseException:  # nothing was started: nothing to cancel at exit, nothing left behind
            self._forget(request.run_id)
            run_keys.forget_key(request.run_id)
            raise
        future.add_done_callback(lambda f: self._forget(request.run_id))
        return future

    def attach(self, run_id: str, cluster: str | None = None) -> RunFuture:
        """A future for a run started earlier, by this or another process."""
        name = cluster or self.cluster
        profile = self.config.profile(name) if name else self.default_profile()
        backend = self.backend(profile)
        info = next((r for r in backend.list_runs(self.user) if r.run_id == run_id), None)
        if not name and (info is None or info.extra.get("moved")):  # elsewhere (a GPU fallback list moved it)?
            backend = self.backend_of_run(run_id)
            profile = backend.profile
            info = next((r for r in backend.list_runs(self.user) if r.run_id == run_id), None)
        key = run_keys.load_key(run_id) or backend.run_key(run_id)
        if not key:
            raise IntegrityError(
                f"the results of run {run_id} cannot be authenticated from this machine: its key is neither in "
                f"{run_keys.keys_dir()} nor kept by cluster {profile.name!r}, so nothing it wrote will be "
                "unpickled here. Attach from the machine that started it (or copy its key file here)."
            )
        if info is not None and info.kind == MAP:
            future: RunFuture = MapFuture(run_id, backend, cluster=profile.name, items=[None] * info.total,
                                          function=info.function, run_key=key)  # fmt: skip
        else:
            future = RunFuture(run_id, backend, cluster=profile.name, function=info.function if info else "",
                               run_key=key)  # fmt: skip
        future.detached = True
        backend.attach(run_id, future.handle)
        return future

    def _forget(self, run_id: str) -> None:
        with self._lock:
            self._active.pop(run_id, None)

    def active_runs(self) -> list[RunFuture]:
        with self._lock:
            return list(self._active.values())

    def cancel_all(self) -> None:
        """Cancel every run of this session that was not detached (at interpreter exit)."""
        for future in self.active_runs():
            if not future.detached:
                try:
                    future.cancel()
                except KjupyterError as exc:  # (at exit: say it, and go on with the others)
                    print(f"kjupyter: run {future.run_id} could not be cancelled: {exc}", file=sys.stderr)

    def close(self) -> None:
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            with contextlib.suppress(Exception):
                backend.close()


def make_backend(profile: Profile) -> Backend:
    if profile.backend == "local":
        from kjupyter.backends.local.backend import LocalBackend

        return LocalBackend(profile)
    if profile.backend == "kubernetes":
        from kjupyter.backends.kubernetes.backend import (
            KubernetesBackend,  # type: ignore[import-not-found,unused-ignore]
        )

        backend: Backend = KubernetesBackend(profile)
        return backend
    raise ConfigError(f"cluster {profile.name!r} has an unknown backend {profile.backend!r}")


_session: Session | None = None
_session_lock = threading.Lock()


def get_session() -> Session:
    global _session
    with _session_lock:
        if _session is None:
            _session = Session()
            atexit.register(_session.cancel_all)
        return _session
