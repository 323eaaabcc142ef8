"""Fan-out over files: ``fn.map_files(pattern)``, one task per file or chunk of files.

``fn.map_files("s3://bucket/raw/*.csv")`` expands the glob on the client
(:func:`expand`), runs ``fn(url)`` once per file (or once per chunk of files,
``chunk_size=``), and returns the results in the order of the sorted URLs. A
file whose step raises is reported as a :class:`FileError` naming its URL.

This module is also imported by the runner when a ``map_files`` task is
unpickled, so it stays light: cloud libraries are imported only when used.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kjupyter.errors import FileError
from kjupyter.store import open_fs
from kjupyter.store_errors import check_bucket, protocol_of, translated


def expand(pattern: str | Sequence[str], storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Full URLs of the files matching a glob URL (or list of URLs/globs), sorted; no directories."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    urls: list[str] = []
    for pat in patterns:
        fs, _ = open_fs(pat, storage_options)
        protocol = protocol_of(pat)
        body = pat.split("://", 1)[1] if "://" in pat else pat
        with translated(pat, "", fs):
            if any(c in body for c in "*?["):
                found = fs.glob(body, detail=True)
                paths = sorted(p for p, info in found.items() if info.get("type", "file") != "directory")
            else:
                paths = [body]
            if not paths:
                check_bucket(fs, pat)  # an empty match in a missing bucket is an error, not []
        urls += [f"{protocol}://{p}" if "://" in pat else p for p in paths]
    return urls


def chunks(items: Sequence[str], chunk_size: int) -> list[list[str]]:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    return [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]


class FileStep:
    """What runs in the pod for one task of ``map_files``: ``fn`` on each URL of a chunk.

    With one URL per task a failure raises :class:`FileError` (the task fails,
    as a Job's pod would). With a chunk, each file's failure is caught and
    returned in its place, so one bad file does not lose its neighbours' results.
    """

    def __init__(self, fn: Callable[[str], Any], chunked: bool) -> None:
        self.fn = fn
        self.chunked = chunked

    def __call__(self, urls: list[str]) -> list[Any]:
        out: list[Any] = []
        for url in urls:
            try:
                out.append(self.fn(url))
            except Exception as exc:
                tb = traceback.format_exc()
                error = FileError(url, f"{type(exc).__name__}: {exc}", _picklable(exc), tb)
                if not self.chunked:
                    raise error from exc
                print(f"[kjupyter] {url} failed:\n{error.remote_traceback}", flush=True)
                out.append(error)
        return out


def flatten(urls: Sequence[str], groups: Sequence[list[str]], results: Sequence[Any]) -> list[Any]:
    """Per-file results in URL order from per-task results; a failed task fails each of its files."""
    out: list[Any] = []
    for group, result in zip(groups, results, strict=True):
        if isinstance(result, FileError):
            out.append(result)
        elif isinstance(result, BaseException):
            out += [_as_file_error(url, result) for url in group]
        else:
            out += list(result)
    assert len(out) == len(urls)
    return out


def first_error(results: Iterable[Any]) -> FileError | None:
    return next((r for r in results if isinstance(r, FileError)), None)


def _as_file_error(url: str, exc: BaseException) -> FileError:
    error = FileError(url, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", exc)
    error.__cause__ = exc
    return error


def _picklable(exc: BaseException) -> BaseException | None:
    import pickle

    try:
        pickle.dumps(exc)
    except Exception:
        return None
    return exc
