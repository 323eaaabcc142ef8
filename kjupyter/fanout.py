"""Fan-out over files: ``fn.map_files(pattern)``, a map with one item per file.

``fn.map_files("s3://bucket/raw/*.csv")`` expands the glob on the client
(:func:`expand`) and maps ``fn(url)`` over the files like any map: at most
``parallelism`` worker pods take files until none are left, or, with
``chunk_size=k``, each pod takes ``k`` consecutive files (``items_per_pod=k``).
Results come in the order of the sorted URLs; a file whose step raises is
reported as a :class:`FileError` naming its URL.

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


class FileStep:
    """What runs for one item of ``map_files``: ``fn(url)``; a failure raises :class:`FileError` naming the URL."""

    def __init__(self, fn: Callable[[str], Any]) -> None:
        self.fn = fn

    def __call__(self, url: str) -> Any:
        try:
            return self.fn(url)
        except Exception as exc:
            tb = traceback.format_exc()
            raise FileError(url, f"{type(exc).__name__}: {exc}", _picklable(exc), tb) from exc


def per_file(urls: Sequence[str], results: Sequence[Any]) -> list[Any]:
    """Each file's result, or its :class:`FileError` (a lost item, say, becomes one naming its URL)."""
    return [
        _as_file_error(url, r) if isinstance(r, BaseException) and not isinstance(r, FileError) else r
        for url, r in zip(urls, results, strict=True)
    ]


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
