"""``@remote``: a function that runs as a Job (or a local process) when called."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

from kjupyter.errors import FileError
from kjupyter.futures import MapFuture, RunFuture
from kjupyter.notebook import wait
from kjupyter.session import get_session
from kjupyter.spec import RunSpec

P = ParamSpec("P")
R = TypeVar("R")


class RemoteFunction(Generic[P, R]):
    """A function whose calls run remotely. Options are those of :class:`~kjupyter.spec.RunSpec`."""

    def __init__(self, fn: Callable[P, R], options: dict[str, Any]) -> None:
        RunSpec.build(**options)  # bad options fail at decoration time, where the user wrote them
        self.fn = fn
        self.options = dict(options)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run remotely, show the logs live, return the value or raise the remote exception."""
        result: R = wait.wait(get_session().submit_call(self.fn, args, kwargs, self.options))
        return result

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> RunFuture:
        """Start a run and return its :class:`~concurrent.futures.Future` at once (in a notebook, its live widget shows)."""
        future = get_session().submit_call(self.fn, args, kwargs, self.options)
        wait.show_live(future)
        return future

    def map(self, items: Iterable[Any], *, parallelism: int | None = None, return_exceptions: bool = False,
            resume: str | None = None, **options: Any) -> list[Any]:  # fmt: skip
        """Run ``fn(item)`` for every item as ONE run (an Indexed Job); results in input order.

        ``resume=RUN_ID``: rerun only the failed and missing items of that earlier map of the same
        function and items (one of yours, with a store); the others' stored results are reused.
        """
        future = self._submit_map(items, parallelism, return_exceptions, options, resume)
        result: list[Any] = wait.wait(future)
        return result

    def submit_map(self, items: Iterable[Any], *, parallelism: int | None = None, return_exceptions: bool = False,
                   resume: str | None = None, **options: Any) -> MapFuture:  # fmt: skip
        """Start a map and return its future at once (in a notebook, its live widget shows)."""
        future = self._submit_map(items, parallelism, return_exceptions, options, resume)
        wait.show_live(future)
        return future

    def _submit_map(self, items: Iterable[Any], parallelism: int | None, return_exceptions: bool,
                    options: dict[str, Any], resume: str | None = None) -> MapFuture:  # fmt: skip
        opts = {**self.options, **options, "parallelism": parallelism or self.options.get("parallelism")}
        if resume is not None:
            return get_session().resume_map(self.fn, items, opts, resume, return_exceptions=return_exceptions)
        return get_session().submit_map(self.fn, items, opts, return_exceptions=return_exceptions)

    def map_files(self, pattern: str | Sequence[str], *, chunk_size: int | None = None, parallelism: int | None = None,
                  return_exceptions: bool = False, storage_options: Mapping[str, Any] | None = None,
                  **options: Any) -> list[Any]:  # fmt: skip
        """Run ``fn(url)`` for every file matching a glob URL (``"s3://bucket/raw/*.csv"``); results in URL order.

        Each file is an item of one map: at most ``parallelism`` worker pods take files until
        none are left. ``chunk_size=N`` instead gives each pod N consecutive files and no more
        (``items_per_pod=N``: a fresh process every N files).
        A file whose step raises comes back as a :class:`~kjupyter.fanout.FileError` naming
        its URL: raised (after every file was tried) or, with ``return_exceptions=True``, in
        its place. The glob is expanded here with ``storage_options`` (default: the cluster
        profile's store options when the URL is on the store's protocol).
        """
        from kjupyter import fanout
        from kjupyter.store_errors import protocol_of

        opts = {**self.options, **options, "parallelism": parallelism or self.options.get("parallelism")}
        if chunk_size is not None:
            if not isinstance(chunk_size, int) or chunk_size < 1:
                raise ValueError(f"chunk_size must be a whole number of files of at least 1, got {chunk_size!r}")
            opts["items_per_pod"] = chunk_size
        if storage_options is None:
            profile = get_session().profile_for(opts)
            first = pattern if isinstance(pattern, str) else (pattern[0] if pattern else "")
            same = profile.store and protocol_of(profile.store) == protocol_of(first)
            storage_options = dict(profile.store_options) if same else {}
        urls = fanout.expand(pattern, storage_options)
        if not urls:
            return []
        step = fanout.FileStep(self.fn)  # type: ignore[arg-type]
        functools.update_wrapper(step, self.fn)
        future = get_session().submit_map(step, urls, opts, return_exceptions=True)
        results = fanout.per_file(urls, wait.wait(future))
        error = fanout.first_error(results)
        if error is not None and not return_exceptions:
            bad = [r.path for r in results if isinstance(r, FileError)]
            error.add_note(f"kjupyter: {len(bad)} of {len(urls)} file(s) failed: {', '.join(bad[:10])}"
                           + (" ..." if len(bad) > 10 else ""))  # fmt: skip
            raise error
        return results

    def with_options(self, **options: Any) -> RemoteFunction[P, R]:
        """A copy with some options changed: ``train.with_options(gpu=2)(cfg)``."""
        return RemoteFunction(self.fn, {**self.options, **options})

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """A plain local call, for debugging."""
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:  # nested use inside a remote function
        return (RemoteFunction, (self.fn, self.options))

    def __repr__(self) -> str:
        return f"<remote function {getattr(self.fn, '__qualname__', self.fn)} {self.options or ''}>"


@overload
def remote(fn: Callable[P, R], /) -> RemoteFunction[P, R]: ...
@overload
def remote(**options: Any) -> Callable[[Callable[P, R]], RemoteFunction[P, R]]: ...
def remote(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Decorate a function to run it on a cluster: ``@remote`` or ``@remote(gpu=1, memory="16Gi")``.

    Options: cluster, name, cpu, memory, gpu ("A100:2", or a fallback list ["H100:1", "A100:1"]), gpu_type,
    image, timeout, retries (a count, or ``Retry(2, grow_memory=2.0, max_memory="64Gi")`` to grow memory
    after an OOM kill), env, secrets, packages, parallelism, pending_timeout, keep_warm (seconds a call's
    pod waits for the next compatible call), cache (``True``: reuse the stored result of an identical
    earlier call; see :mod:`kjupyter.cache`).
    """
    if fn is not None:
        return RemoteFunction(fn, options)
    return lambda f: RemoteFunction(f, options)
