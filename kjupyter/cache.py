"""Opt-in result caching: ``@remote(cache=True)`` reuses the stored result of an identical earlier call.

The key is a SHA-256 over:

- the call's code and data, pickled by a *fingerprint* pickler (:class:`_FingerprintPickler`): the
  function's code (without its file name and first line number, which change from kernel to kernel
  and with every line added above it), its closure, the globals it uses, the arguments (a map: every
  item), each as cloudpickle would ship them, with sets sorted and the random ids cloudpickle gives
  classes defined in a notebook replaced by their names, so two kernels get the same bytes. A function
  of an importable module, which travels by name, counts by its name and its code; a class of one
  counts by its name only (the image's packages are in the key);
- the options that can change a result (:data:`RESULT_OPTIONS`): the backend kind, the image, the
  packages installed at start, the environment, the names of the Secrets mounted as environment, and
  the GPU count and type. Not the cluster, the name, cpu and memory, timeouts, retries, parallelism:
  they change where and how fast a call runs, or whether it fails, never what a successful call returns;
- the Python minor version (bytecode differs between them).

A cache entry is ``<store>/<user>/.cache/<key>``: the run id whose result it is, signed (HMAC) with
that run's key for ``cache/<key>``. A hit verifies the entry and then each result envelope with the key
of the run that produced them before anything is unpickled; an entry that fails is refused in one
sentence (a :class:`~kjupyter.errors.KjupyterWarning`) and the call runs anew, replacing it. Only
runs whose every task succeeded are recorded. ``kjupyter gc`` removes an entry with its run
(:func:`kjupyter.retention.expire_cache`), and an entry whose run is gone is never served.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import io
import json
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle

from kjupyter import integrity, run_keys
from kjupyter import payload as pl
from kjupyter import run_events as ev
from kjupyter import store as st
from kjupyter.backends.base import MAP, Backend
from kjupyter.config import Profile
from kjupyter.errors import ConfigError, KjupyterError, KjupyterWarning
from kjupyter.futures import MapFuture, RunFuture
from kjupyter.run_events import EventSink, Phase
from kjupyter.spec import RunSpec

CACHE_FOLDER = st.CACHE_FOLDER
VERSION = b"kjupyter-cache-1\0"
RESULT_OPTIONS = ("backend", "image", "packages", "env", "secrets", "gpu", "gpu_type")

# --- the key ------------------------------------------------------------------------------------

_CODE_REDUCE = cloudpickle.Pickler.dispatch_table.get(types.CodeType)


def _by_reference(fn: types.FunctionType) -> bool:
    """A function shipped by name whose code should count: not one of the picklers' own (their reducers)."""
    if str(getattr(fn, "__module__", "")).partition(".")[0] in ("cloudpickle", "kjupyter", "copyreg", "pickle"):
        return False
    check = getattr(cloudpickle.cloudpickle, "_should_pickle_by_reference", None)
    return bool(check(fn)) if check is not None else False


def _tracker_ids() -> Mapping[Any, str]:
    return getattr(cloudpickle.cloudpickle, "_DYNAMIC_CLASS_TRACKER_BY_CLASS", {})


class _FingerprintPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, made to give the same bytes for the same code and data in any process."""

    def __init__(self, file: Any) -> None:
        if _CODE_REDUCE is not None:
            self.dispatch_table = collections.ChainMap(
                {types.CodeType: self._reduce_code}, cloudpickle.Pickler.dispatch_table
            )
        super().__init__(file, protocol=pl.PROTOCOL)

    @staticmethod
    def _reduce_code(code: types.CodeType) -> Any:
        return _CODE_REDUCE(code.replace(co_filename="<kjupyter-cache>", co_firstlineno=1))  # type: ignore[misc]

    def persistent_id(self, obj: Any) -> Any:
        # A set's iteration order follows its elements' hashes, which for strings differ per process (and the
        # C pickler writes sets itself, without asking reducer_override): written sorted, by their own bytes.
        if type(obj) in (set, frozenset):
            return type(obj).__name__, tuple(sorted(obj, key=_fingerprint))
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.FunctionType) and _by_reference(obj):  # shipped by name: its code counts too
            return str, (f"{obj.__module__}.{obj.__qualname__}", hashlib.sha256(_fingerprint(obj.__code__)).digest())
        rv = super().reducer_override(obj)
        tracker = _tracker_ids().get(obj) if isinstance(obj, type) and rv is not NotImplemented else None
        if tracker:  # a class defined in the notebook: cloudpickle tags it with a random id per process
            name = f"{obj.__module__}.{obj.__qualname__}"
            rv = (rv[0], tuple(name if a == tracker else a for a in rv[1]), *rv[2:])
        return rv

    def _dynamic_function_reduce(self, func: types.FunctionType) -> Any:
        rv = super()._dynamic_function_reduce(func)
        code, base, *rest = rv[1]
        base = {k: v for k, v in base.items() if k != "__file__"}
        state, slots = rv[2]
        slots = {**slots, "__globals__": dict(sorted(slots.get("__globals__", {}).items()))}
        return (rv[0], (code, base, *rest), (state, slots), *rv[3:])


def _fingerprint(obj: Any) -> bytes:
    buf = io.BytesIO()
    _FingerprintPickler(buf).dump(obj)
    return buf.getvalue()


class _Digesting:
    """A file that hashes what is written to it: a large argument is hashed as it is pickled, never held twice."""

    def __init__(self, digest: Any) -> None:
        self.digest = digest

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return memoryview(data).nbytes


def result_options(spec: RunSpec, profile: Profile) -> dict[str, Any]:
    """The options that can change what a successful call returns (see the module docstring)."""
    image = (spec.image or profile.image) if profile.backend == "kubernetes" else None
    return {
        "backend": profile.backend, "image": image, "packages": list(spec.packages), "env": dict(spec.env),
        "secrets": sorted(set(spec.secrets) | set(profile.secrets)),
        "gpu": spec.resources.gpu, "gpu_type": spec.resources.gpu_type,
    }  # fmt: skip


def call_key(kind: str, fn: Callable[..., Any], args: Any, kwargs: Mapping[str, Any], spec: RunSpec,
             profile: Profile) -> str:  # fmt: skip
    """The cache key of ``fn(*args, **kwargs)`` (a map: ``args`` is the list of items) with ``spec`` on ``profile``."""
    digest = hashlib.sha256(VERSION)
    meta = {"kind": kind, "python": "{}.{}".format(*sys.version_info[:2]), **result_options(spec, profile)}
    digest.update(json.dumps(meta, sort_keys=True).encode() + b"\0")
    pl._ship_local_modules_by_value()  # (as the payload will: a helper module beside the notebook goes by value)
    try:
        _FingerprintPickler(_Digesting(digest)).dump((fn, tuple(args), dict(kwargs)))
    except Exception as exc:
        if kind == MAP:  # the item that cannot be pickled, named as the map's payload would name it
            pl.pack_items(args, io.BytesIO(), key=bytes(run_keys.KEY_SIZE))
        raise pl._explain_unpicklable(fn, tuple(args) if kind != MAP else (), dict(kwargs), exc) from None
    return digest.hexdigest()


# --- entries ------------------------------------------------------------------------------------


def cache_store(profile: Profile, store: st.RunStore | None) -> st.RunStore:
    """The store a profile keeps its cache in; ConfigError when it has none."""
    if store is None:
        raise ConfigError(
            f"cache=True needs a run store, and cluster {profile.name!r} has none (its results travel in pod logs "
            f'only): set `store = "s3://bucket/prefix"` in [clusters.{profile.name}], or drop cache=True'
        )
    return store


def _purpose(key: str) -> str:
    return f"cache/{key}"


@dataclass(frozen=True)
class Hit:
    key: str
    run_id: str
    kind: str
    count: int
    created: float
    run_key: bytes
    values: list[Any]

    @property
    def sentence(self) -> str:
        when = datetime.datetime.fromtimestamp(self.created).strftime("%Y-%m-%d %H:%M")
        return f"cached: result of run {self.run_id} from {when}, kjupyter gc expires it"


def record(store: st.RunStore, user: str, key: str, *, run_id: str, run_key: bytes, kind: str, count: int) -> None:
    """Write the entry of ``key``: run ``run_id``'s results, signed with its key."""
    body = json.dumps({"key": key, "run_id": run_id, "kind": kind, "count": count, "created": st.now()},
                      sort_keys=True).encode()  # fmt: skip
    store.run(user, CACHE_FOLDER).write_bytes(key, body + integrity.tag(run_key, _purpose(key), body))


def lookup(store: st.RunStore, user: str, key: str, backend: Backend) -> Hit | None:
    """The verified, unpickled results cached under ``key``, or None (a miss, or an entry refused in a warning)."""
    folder = store.run(user, CACHE_FOLDER)
    if not folder.exists(key):
        return None
    where = f"the cache entry {folder.url}/{key}"
    try:
        signed = folder.read_bytes(key)
        run_id = str(json.loads(signed[: -integrity.TAG_SIZE]).get("run_id", ""))
        run_keys.key_path(run_id)  # (a plain run id, or ValueError)
    except (KjupyterError, ValueError, TypeError, AttributeError) as exc:
        _refuse(f"{where} cannot be read ({exc})")
        return None
    run_dir = store.run(user, run_id)
    if not run_dir.exists(st.RUN_JSON):  # its run was collected: the entry goes with it, never served
        folder.fs.rm_file(f"{folder.path}/{key}")
        return None
    try:
        key_of_run = run_keys.load_key(run_id) or backend.run_key(run_id)
    except KjupyterError:
        key_of_run = None
    try:
        meta = json.loads(bytes(integrity.check(key_of_run, _purpose(key), signed, where)))
        count = int(meta["count"]) if meta.get("key") == key else -1
        if count < 1:
            raise KjupyterError(f"{where} is not the entry of this call")
        values = []
        for i in range(count):
            with run_dir.open_read(st.result_name(i)) as f:
                values.append(pl.load_outcome(f, key=key_of_run, index=i, where=f"run {run_id} task {i}"))
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        _refuse(f"{where} (run {run_id}) was refused: {exc}")
        return None
    return Hit(key, run_id, str(meta.get("kind", "call")), count, float(meta.get("created", 0)), key_of_run or b"",
               values)  # fmt: skip


def _refuse(sentence: str) -> None:
    warnings.warn(f"kjupyter: {sentence.rstrip('.')}; the call runs anew and replaces it.", KjupyterWarning,
                  stacklevel=4)  # fmt: skip
    return None


def recording(sink: EventSink, write: Callable[[], None], count: int) -> EventSink:
    """``sink``, after writing the run's cache entry when every one of its ``count`` tasks succeeded.

    The entry is written before the run's ``RunFinished`` reaches the future, so a call that returned
    is already cached for the next one.
    """
    succeeded: set[int] = set()

    def recorder(event: ev.Event) -> None:
        if isinstance(event, ev.TaskFinished) and event.phase is Phase.SUCCEEDED:
            succeeded.add(event.index)
        elif isinstance(event, ev.RunFinished) and event.phase is Phase.SUCCEEDED and len(succeeded) == count:
            try:
                write()
            except KjupyterError as exc:
                warnings.warn(f"kjupyter: the result of run {event.run_id} was not cached: {exc}", KjupyterWarning,
                              stacklevel=2)  # fmt: skip
        sink(event)

    return recorder


def served(hit: Hit, backend: Backend, cluster: str, function: str, items: Iterable[Any] | None = None,
           return_exceptions: bool = False) -> RunFuture:  # fmt: skip
    """A finished future holding the cached results; its events say, in one sentence, where they come from."""
    if items is not None:
        values = list(items)
        future: RunFuture = MapFuture(hit.run_id, backend, cluster=cluster, items=values, function=function,
                                      return_exceptions=return_exceptions, run_key=hit.run_key)  # fmt: skip
        future._results, future._have = list(hit.values), [True] * len(values)  # type: ignore[attr-defined]
        result: Any = list(hit.values)
    else:
        future = RunFuture(hit.run_id, backend, cluster=cluster, function=function, run_key=hit.run_key)
        result = hit.values[0]
    future.cached = hit.sentence  # type: ignore[attr-defined]
    future.set_result(result)
    rid = hit.run_id
    future.handle(ev.Diagnosis(rid, "Cached", hit.sentence[:1].upper() + hit.sentence[1:] + "."))
    if items is not None:
        future.handle(ev.Progress(rid, hit.count, succeeded=hit.count))
    future.handle(ev.RunFinished(rid, Phase.SUCCEEDED, "Cached", hit.sentence))
    return future


@dataclass(frozen=True)
class Plan:
    """A call with ``cache=True``: where its entry goes, its key, and the hit if there was one."""

    store: st.RunStore
    user: str
    key: str
    hit: Hit | None

    def sink(self, sink: EventSink, *, run_id: str, run_key: bytes, kind: str, count: int) -> EventSink:
        write = lambda: record(self.store, self.user, self.key, run_id=run_id, run_key=run_key, kind=kind,  # noqa: E731
                               count=count)  # fmt: skip
        return recording(sink, write, count)


def plan(kind: str, fn: Callable[..., Any], args: Any, kwargs: Mapping[str, Any], spec: RunSpec, profile: Profile,
         backend: Backend, user: str) -> Plan:  # fmt: skip
    """Look ``fn(*args, **kwargs)`` up (``args``: a map's items): a :class:`Plan` with its hit, if any."""
    store = cache_store(profile, getattr(backend, "store", None))
    key = call_key(kind, fn, args, kwargs, spec, profile)
    return Plan(store, user, key, lookup(store, user, key, backend))
