"""One renderer for every failure: the notebook, the terminal and the CLI show the same text.

A failure is shown as:

- a header: what was raised, in which function (and item of a map), on which run, cluster and node;
- the remote frames of the user's own code, with their source lines, named as the user knows them
  (a ``%%kube`` cell as ``Cell In[5], line 4``, with the cell's own line numbers); no kjupyter
  frames and no frames of the libraries that carry a run (concurrent.futures, zmq, ipykernel...);
- the exception line;
- at most one diagnosis line (``why:``) and one hint line (``hint:``), each once.

A cancel, a kernel interrupt, a run timeout and a pending timeout are one sentence, no traceback
(:func:`sentence`). Hints are given where they help: "retries=" only for failures that may go
away on a second try (out of memory on a busy node, eviction, a lost node), never for an
exception the user's code raised (:func:`hint_for`).

Pure: text in, text out; imports only the standard library and the lowest layers.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kjupyter
from kjupyter.errors import RemoteError, RunCancelled, RunFailed, RunTimeout
from kjupyter.run_events import Diagnosis

CELL_FILE = re.compile(r"^<kube-cell(?: (?P<name>[^>]+))?>$")  # kjupyter.runner.cell_task names a cell so
# Diagnoses that only restate that a task failed: the task's own exception (or the failed items) say more.
REDUNDANT_REASONS = frozenset({"BackoffLimitExceeded", "FailedIndexes", "Failed"})
# Failures that may go away on another try: only these get a retries= hint.
TRANSIENT_REASONS = frozenset({"Evicted", "NodeLost", "Preempted", "Preempting", "DiskPressure", "MemoryPressure",
                               "NodeShutdown", "Terminated", "PodLost", "WorkerLost"})  # fmt: skip
# Frames of the machinery that carries a run, never of the user's code (path fragments).
LIBRARY_FRAMES = ("/concurrent/futures/", "/site-packages/zmq/", "/site-packages/ipykernel/", "/site-packages/IPython/",
                  "/site-packages/tornado/", "/site-packages/cloudpickle/", "/asyncio/", "/threading.py", "/runpy.py",
                  "<frozen runpy>")  # fmt: skip
_FRAME = re.compile(r'^  File "(?P<file>[^"]*)", line (?P<line>\d+)(?P<rest>.*)$')


@dataclass(frozen=True)
class Where:
    """Where a failure happened, as far as it is known (every field may be empty)."""

    run_id: str = ""
    cluster: str = ""
    function: str = ""
    node: str = ""
    item: int | None = None
    item_text: str = ""  # a short summary of the item's input


def is_own_frame(filename: str) -> bool:
    """A frame of kjupyter itself (the runner, the cell executor), wherever kjupyter is installed."""
    _, sep, rest = filename.replace("\\", "/").rpartition("/kjupyter/")
    return bool(sep) and rest in _own_modules()


@functools.cache
def _own_modules() -> frozenset[str]:
    root = Path(kjupyter.__file__).parent
    return frozenset(p.relative_to(root).as_posix() for p in root.rglob("*.py"))


def is_library_frame(filename: str) -> bool:
    return any(part in filename.replace("\\", "/") for part in LIBRARY_FRAMES)


def clean_traceback(text: str, name_file: Callable[[str], str | None] | None = None) -> list[str]:
    """The user's part of a remote traceback: kjupyter and library frames dropped, cells named as the user knows them.

    ``name_file`` maps a file name to how the user knows it (``Cell In[3]``), or None to keep it.
    A ``%%kube`` cell is named ``Cell In[N]`` (its line numbers are the notebook cell's already).
    """
    out: list[str] = []
    skipping = False
    for line in text.rstrip("\n").splitlines():
        frame = _FRAME.match(line)
        if frame:
            filename = frame["file"]
            skipping = is_own_frame(filename) or is_library_frame(filename)
            if skipping:
                continue
            shown = _cell_name(filename) or (name_file(filename) if name_file else None)
            out.append(f"  {shown}, line {frame['line']}{frame['rest']}" if shown else line)
            continue
        if skipping and line.startswith("    "):
            continue  # the source (and ^^^ marker) lines of a dropped frame
        skipping = False
        out.append(line)
    return _drop_empty_tracebacks(out)


def _cell_name(filename: str) -> str | None:
    match = CELL_FILE.match(filename)
    if match is None:
        return None
    return f"Cell {match['name']}" if match["name"] else "%%kube cell"


def _drop_empty_tracebacks(lines: list[str]) -> list[str]:
    """A ``Traceback (most recent call last):`` left with no frame under it says nothing: drop that header."""
    out: list[str] = []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.startswith("Traceback (most recent call last)") and not nxt.startswith("  "):
            continue
        out.append(line)
    return out


def hint_for(exc: BaseException, diagnosis: Diagnosis | None = None) -> str:
    """The hint worth showing for a failure, or "" (never "retries=" for what the user's code raised)."""
    if user_raised(exc):
        return ""
    hint = diagnosis.hint if diagnosis is not None and diagnosis.fatal else ""
    hint = hint or str(getattr(exc, "hint", "") or "")
    reason = str(getattr(exc, "reason", "") or (diagnosis.reason if diagnosis is not None else ""))
    if "retries=" in hint and reason not in TRANSIENT_REASONS | {"OOMKilled"}:
        hint = _without_retries(hint)
    return hint


def _without_retries(hint: str) -> str:
    kept = [s for s in re.split(r"(?<=[.;])\s+", hint) if "retries=" not in s]
    return " ".join(kept).strip()


def user_raised(exc: BaseException) -> bool:
    """The user's code raised it (in the pod): it comes back with its remote traceback."""
    return bool(getattr(exc, "remote_traceback", "")) or isinstance(exc, RemoteError)


def header(exc: BaseException, where: Where) -> str:
    """``ValueError in check · item 1 (2) · run check-x1 on local · node n1``."""
    name = exc.remote_type if isinstance(exc, RemoteError) else type(exc).__name__
    function = "the %%kube cell" if where.function in ("%%kube cell", "CellTask", "cell") else where.function
    parts = [name + (f" in {function}" if function else "")]
    if where.item is not None:
        parts.append(f"item {where.item}" + (f" ({where.item_text})" if where.item_text else ""))
    if where.run_id:
        parts.append(f"run {where.run_id}" + (f" on {where.cluster}" if where.cluster else ""))
    if where.node:
        parts.append(f"node {where.node}")
    return " · ".join(parts)


def sentence(exc: BaseException, run_id: str = "") -> str | None:
    """The one sentence for a failure that needs no traceback (cancel, interrupt, timeouts); None for others."""
    run = f"run {run_id or getattr(exc, 'run_id', '') or '?'}"
    if isinstance(exc, KeyboardInterrupt):
        return f"kjupyter: {run} was cancelled (interrupted)."
    if isinstance(exc, RunCancelled):
        return f"kjupyter: {run} was cancelled."
    if isinstance(exc, RunTimeout) or (isinstance(exc, RunFailed) and exc.reason == "PendingTimeout"):
        what = str(getattr(exc, "sentence", "") or "").rstrip(".") or first_line(exc)
        hint = hint_for(exc)
        return f"kjupyter: {run} stopped: {_lower(what)}" + (f"; {_lower(hint.rstrip('.'))}." if hint else ".")
    return None


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def first_line(exc: BaseException) -> str:
    lines = str(getattr(exc, "sentence", "") or "").strip().splitlines() or str(exc).strip().splitlines()
    return lines[0] if lines else ""


def render(exc: BaseException, where: Where, diagnosis: Diagnosis | None = None,
           name_file: Callable[[str], str | None] | None = None) -> list[str]:  # fmt: skip
    """The failure as lines: one sentence, or the header, the user's frames, the exception, why and hint (once each)."""
    short = sentence(exc, where.run_id)
    if short is not None:
        return [short]
    lines = ["kjupyter: " + header(exc, where)]
    remote = str(getattr(exc, "remote_traceback", "") or "")
    if remote:
        lines += clean_traceback(remote, name_file)
    else:
        lines.append(f"{type(exc).__name__}: {first_line(exc)}" if first_line(exc) else type(exc).__name__)
    why = why_line(exc, diagnosis)
    if why and why not in "\n".join(lines):
        lines.append(f"  why: {why}")
    hint = hint_for(exc, diagnosis)
    if hint and hint not in "\n".join(lines):
        lines.append(f"  hint: {hint}")
    return lines


def why_line(exc: BaseException, diagnosis: Diagnosis | None) -> str:
    """The diagnosis worth its own line: not for a user's exception, never one that only says "it failed"."""
    if user_raised(exc) or diagnosis is None or not diagnosis.fatal or diagnosis.reason in REDUNDANT_REASONS:
        return ""
    return diagnosis.sentence


class Rendered:
    """An exception's ``_render_traceback_`` (IPython calls it instead of printing the traceback).

    A plain object holding the lines, so the exception still pickles (a closure would not).
    """

    def __init__(self, lines: list[str]) -> None:
        self.lines = list(lines)

    def __call__(self) -> list[str]:
        return list(self.lines)


def attach(exc: BaseException, lines: list[str]) -> BaseException:
    """Make ``exc`` show as ``lines``: in IPython and Jupyter, and in a script (:func:`install_excepthook`)."""
    try:
        exc._render_traceback_ = Rendered(lines)  # type: ignore[attr-defined]
    except AttributeError:  # (an exception type with __slots__: it keeps Python's own traceback)
        pass
    return exc


def ipython_name(filename: str) -> str | None:
    """How IPython names a notebook cell's file (``Cell In[3]``), when running in IPython; else None."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    compiler = getattr(shell, "compile", None)
    format_name = getattr(compiler, "format_code_name", None)
    if format_name is None:
        return None
    try:
        named = format_name(filename)
    except Exception:  # (IPython's own lookup failed: the file name is shown as it is)
        return None
    return " ".join(named) if named else None


_previous_hook: Callable[..., Any] | None = None


def install_excepthook() -> None:
    """In a plain Python process, show an uncaught kjupyter failure as its rendered lines (once per process).

    Any other exception goes to the hook that was there before. IPython does not need this: it calls
    ``_render_traceback_`` itself.
    """
    global _previous_hook
    if _previous_hook is not None:
        return
    _previous_hook = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        render = getattr(value, "_render_traceback_", None)
        if isinstance(render, Rendered):
            print("\n".join(render()), file=sys.stderr, flush=True)
            return
        assert _previous_hook is not None
        _previous_hook(kind, value, tb)

    sys.excepthook = hook


def map_status(counts: dict[str, int], *, ended: bool, return_exceptions: bool, stopped_at: int | None = None,
               stop_error: BaseException | None = None, running: int = 0) -> str:  # fmt: skip
    """A map's state in a few words, failures first: "27 ok · 3 raised (returned)", "stopped at item 7: ValueError"."""
    ok, failed, cancelled, total = counts["succeeded"], counts["failed"], counts["cancelled"], counts["total"]
    if stopped_at is not None:
        what = type(stop_error).__name__ if stop_error is not None else "failed"
        rest = [f"{ok} ok"] + ([f"{cancelled} cancelled"] if cancelled else [])
        return f"stopped at item {stopped_at}: {what} · " + " · ".join(rest)
    if not ended:
        parts = [f"{ok + failed + cancelled}/{total} done", f"{ok} ok"]
        parts += [f"{failed} raised"] if failed else []
        parts += [f"{running} running"] if running else []
        return " · ".join(parts)
    parts = [f"{ok} ok"]
    if failed:
        parts.append(f"{failed} raised" + (" (returned)" if return_exceptions else ""))
    if cancelled or ok + failed < total:
        parts.append(f"{total - ok - failed} cancelled")
    return " · ".join(parts)


def first_line_of(exc: BaseException) -> str:
    """``ValueError: four``: an exception's type and the first line of its message."""
    name = exc.remote_type if isinstance(exc, RemoteError) else type(exc).__name__
    message = exc.remote_message if isinstance(exc, RemoteError) else first_line(exc)
    first = message.strip().splitlines()[0] if message.strip() else ""
    return f"{name}: {first}" if first else name
