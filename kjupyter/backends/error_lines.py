"""The exception line of a failed task, read without unpickling anything.

A task's error envelope carries the exception's type and message as text in its header
(:func:`kjupyter.payload.dump_error`). Here the envelope is authenticated with the run's key, then
only its header is read: the body (the pickled exception) is never touched, so a process that must
not unpickle (the Jupyter server's extension) can still say what a task raised.
"""

from __future__ import annotations

from kjupyter import payload as pl
from kjupyter.backends.base import Backend
from kjupyter.errors import KjupyterError


def exception_line(backend: Backend, run_id: str, index: int, key: bytes | None) -> str:
    """``ValueError: bad 3``: what task ``index`` raised; a KjupyterError saying why when that cannot be told."""
    if key is None:
        raise KjupyterError("its exception cannot be read here: the run's key is not on this machine")
    with (
        backend.open_outcome(run_id, index) as f,
        pl.verified(f, key, pl.result_purpose(index), f"the outcome of item {index}") as v,
    ):
        header = pl.read_header(v)
    if header.kind != pl.ERROR:
        raise KjupyterError("it left a result, not an error: it succeeded on a retry")
    kind = str(header.extra.get("type", "Exception")).rsplit(".", 1)[-1]
    message = str(header.extra.get("message", "")).strip().splitlines()
    return f"{kind}: {message[0]}" if message else kind


def error_line(backend: Backend, run_id: str, index: int, key: bytes | None) -> str:
    """:func:`exception_line`, or the sentence in parentheses that says why it cannot be told."""
    try:
        return exception_line(backend, run_id, index, key)
    except KjupyterError as exc:
        return f"({exc})"
