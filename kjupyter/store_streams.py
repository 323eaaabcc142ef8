"""The run store's streaming file wrappers: big writes cut into blocks, reads in blocks, errors translated.

Split from :mod:`kjupyter.store`, which opens the files; these only wrap them.
"""

from __future__ import annotations

import contextlib
import io
from typing import IO, Any

from fsspec.spec import AbstractFileSystem

from kjupyter.store_errors import translated

BLOCK_SIZE = 16 * 2**20  # upload part: >= S3's 5 MiB minimum part, a multiple of GCS's 256 KiB
READ_BLOCK_SIZE = 8 * 2**20  # read block: a read-ahead fetch is two blocks, and HTTP clients copy it a few times


class _BlockWriter(io.RawIOBase):
    """Cuts big writes into blocks, so the upload buffer never holds a whole copy."""

    def __init__(self, f: IO[bytes], where: tuple[str, str, AbstractFileSystem], block: int = BLOCK_SIZE) -> None:
        super().__init__()
        self._f, self._where, self._block = f, where, block

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        with translated(*self._where):
            for start in range(0, len(view), self._block):
                self._f.write(view[start : start + self._block])
        return len(view)

    def flush(self) -> None:
        pass  # the underlying file flushes by itself; a forced flush would commit an object store upload


class _Seekable(io.RawIOBase):
    """A readable wrapper around ``self._f`` that seeks where it does."""

    _f: Any

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._f.seek(offset, whence))

    def tell(self) -> int:
        return int(self._f.tell())

    def seekable(self) -> bool:
        return True


class _BlockReader(_Seekable):
    """Assembles a huge ``read(n)`` block by block, and serves ``readinto`` (pickle reads big bytes that way)."""

    def __init__(self, f: IO[bytes], block: int = READ_BLOCK_SIZE) -> None:
        super().__init__()
        self._f, self._block = f, block

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0 or n <= self._block:
            data: bytes = self._f.read(-1 if n is None else n)
            return data
        buf = bytearray(n)
        got = self.readinto(buf)
        if got < n:
            del buf[got:]
        return bytes(buf)  # the one extra copy pickle needs; ``buf`` is freed on return

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        got = 0
        while got < len(view):
            chunk = self._f.read(min(self._block, len(view) - got))
            if not chunk:
                break
            view[got : got + len(chunk)] = chunk
            got += len(chunk)
        return got

    def readline(self, size: int | None = -1) -> bytes:
        return bytes(self._f.readline() if size is None or size < 0 else self._f.readline(size))


def _abandon(f: Any) -> None:
    """Throw away an unfinished object-store upload, so close() cannot publish it."""
    with contextlib.suppress(Exception):
        f.discard()
    with contextlib.suppress(Exception):
        f.buffer = io.BytesIO()
    with contextlib.suppress(Exception):
        f.closed = True


class _TranslatingReader(_Seekable):
    """A read-only file whose library errors come out as StoreError naming the URL."""

    def __init__(self, f: _BlockReader, url: str, name: str) -> None:
        super().__init__()
        self._f, self._url, self._name = f, url, name

    @property
    def name(self) -> str:
        """The object's URL (for messages)."""
        return f"{self._url}/{self._name}"

    def read(self, n: int | None = -1) -> bytes:
        with translated(self._url, self._name):
            data: bytes = self._f.read(n)
            return data

    def readinto(self, buffer: Any) -> int:
        with translated(self._url, self._name):
            return int(self._f.readinto(buffer))

    def readline(self, size: int | None = -1) -> bytes:
        with translated(self._url, self._name):
            return bytes(self._f.readline(size))
