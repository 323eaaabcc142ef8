"""HMAC-SHA256 of envelopes: computed while they are written, checked before a byte of them is read.

A signed object is its bytes followed by a 32-byte tag::

    tag = HMAC-SHA256(run key, b"kjupyter-envelope\\0" + purpose + b"\\0" + bytes)

``purpose`` says what the bytes are in their run (``payload``, ``result/3``,
``item/7``), so a signed object cannot be passed off as another one of the same
run (task 1's result as task 0's, a payload as a result). The run key is
random per run (:mod:`kjupyter.run_keys`), which binds the run.

Writing streams: :class:`SigningWriter` updates the MAC with every write and
appends the tag at the end, so a 200 MB result is never copied. Reading
verifies first: :func:`verified` reads the whole object once, feeding the MAC
and a private spool (memory up to :data:`SPOOL_IN_MEMORY`, then an unlinked
temporary file), and hands the spool to the reader only when the tag matches.
What is unpickled is therefore exactly what was verified: a second read of the
store could return different bytes (someone may replace the object between
the two reads), the private spool cannot.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from kjupyter.errors import IntegrityError

TAG_SIZE = 32
SPOOL_IN_MEMORY = 16 * 2**20  # a verified object larger than this waits in an unlinked temporary file
READ_CHUNK = 2**20
_DOMAIN = b"kjupyter-envelope\0"
NOT_UNPICKLED = "It was not unpickled."


def new_mac(key: bytes, purpose: str) -> Any:
    if not key:
        raise IntegrityError(f"cannot sign or check the {purpose} without the run's key")
    return hmac.new(key, _DOMAIN + purpose.encode() + b"\0", hashlib.sha256)


def tag(key: bytes, purpose: str, data: bytes | memoryview) -> bytes:
    mac = new_mac(key, purpose)
    mac.update(data)
    return bytes(mac.digest())


class SigningWriter(io.RawIOBase):
    """Passes writes through to ``f`` while computing their MAC; :meth:`finish` appends the tag."""

    def __init__(self, f: IO[bytes], key: bytes, purpose: str) -> None:
        super().__init__()
        self._f = f
        self._mac = new_mac(key, purpose)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._mac.update(data)
        self._f.write(data)
        return memoryview(data).nbytes

    def finish(self) -> None:
        self._f.write(self._mac.digest())


def check(key: bytes | None, purpose: str, signed: bytes, what: str) -> memoryview:
    """The bytes of an in-memory signed object (without its tag), or IntegrityError."""
    if not key:
        raise IntegrityError(f"{what} cannot be authenticated: there is no key for its run. {NOT_UNPICKLED}")
    if len(signed) < TAG_SIZE:
        raise _short(what, len(signed))
    view = memoryview(signed)
    if not hmac.compare_digest(tag(key, purpose, view[:-TAG_SIZE]), view[-TAG_SIZE:]):
        raise _mismatch(what)
    return view[:-TAG_SIZE]


@contextlib.contextmanager
def verified(f: IO[bytes], key: bytes | None, purpose: str, what: str, *,
             unsigned_magic: bytes = b"") -> Iterator[IO[bytes]]:  # fmt: skip
    """A file holding exactly the authenticated bytes of the signed object read from ``f``.

    Raises :class:`IntegrityError` naming ``what`` when the tag does not match (changed,
    truncated or extended bytes, another run's key, another purpose). ``unsigned_magic``
    names the start of an older, unsigned format, for a clearer message.
    """
    if not key:
        raise IntegrityError(f"{what} cannot be authenticated: there is no key for its run. {NOT_UNPICKLED}")
    mac = new_mac(key, purpose)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        held = b""  # the last TAG_SIZE bytes seen: the tag, once the object ends
        size = 0
        first = b""
        while chunk := f.read(READ_CHUNK):
            first = first or chunk[:16]
            size += len(chunk)
            data = held + chunk if held else chunk
            cut = len(data) - TAG_SIZE
            if cut > 0:
                view = memoryview(data)
                mac.update(view[:cut])
                spool.write(view[:cut])
                held = bytes(view[cut:])
            else:
                held = data
        if unsigned_magic and first.startswith(unsigned_magic):
            raise IntegrityError(
                f"{what} carries no HMAC: it was written by an older kjupyter, which did not sign what it wrote; "
                f"use the same kjupyter version in the client and the image. {NOT_UNPICKLED}"
            )
        if size < TAG_SIZE:
            raise _short(what, size)
        if not hmac.compare_digest(mac.digest(), held):
            raise _mismatch(what)
        spool.seek(0)
        yield spool  # type: ignore[misc]


def _short(what: str, size: int) -> IntegrityError:
    return IntegrityError(
        f"{what} failed authentication: it is {size} bytes, shorter than its HMAC, so it was truncated or is no "
        f"kjupyter object. {NOT_UNPICKLED}"
    )


def _mismatch(what: str) -> IntegrityError:
    return IntegrityError(
        f"{what} failed authentication: its HMAC does not match the run's key, so it was changed after it was "
        "written, or was not written by this run's client or runner (whoever can write to the store can replace "
        f"it). {NOT_UNPICKLED}"
    )
