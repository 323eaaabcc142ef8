"""A finished task's failure, read back from its error envelope, for ``kjupyter logs``.

The runner writes a task's traceback into its error envelope, not into the log (where the log
has one line, ``[kjupyter] raised ValueError: ...``): this reads it back and renders it as the
notebook and the terminal do (:mod:`kjupyter.failure_text`). Only with the run's key saved on
this machine, and only an authenticated *error* envelope is unpickled; a result envelope is never
read past its header.
"""

from __future__ import annotations

from kjupyter import failure_text as ft
from kjupyter import payload as pl
from kjupyter import run_keys
from kjupyter.backends.base import Backend
from kjupyter.errors import KjupyterError


def failure_lines(backend: Backend, run_id: str, index: int, cluster: str = "", item: int | None = None) -> list[str]:
    """Task ``index``'s failure as rendered lines; [] if it succeeded, left no outcome, or this machine has no key."""
    key = run_keys.load_key(run_id)
    if key is None:
        return []
    try:
        with backend.open_outcome(run_id, index) as f, pl.verified(f, key, pl.result_purpose(index),
                                                                   f"task {index} of run {run_id}") as v:  # fmt: skip
            header = pl.read_header(v)
            if header.kind != pl.ERROR:
                return []
            exc = pl.rebuild_exception(header, v)
    except KjupyterError:  # no outcome (killed, cancelled, still running) or not authentic: the log says the rest
        return []
    if not getattr(exc, "remote_traceback", ""):
        return []
    return ft.render(exc, ft.Where(run_id, cluster, item=item))
