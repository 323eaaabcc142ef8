"""Authenticated cloudpickle envelopes: what travels between the client and the runner.

An envelope is a header line of JSON, a cloudpickle body, optionally the source
lines of the code the body ships by value, and an HMAC-SHA256 tag::

    KJUP2\n{"kind": "call", "python": "3.11", "cloudpickle": "3.1.1", ...}\n<pickle>[<sources JSON>]<32-byte tag>

The tag (:mod:`kjupyter.integrity`) covers everything before it, under the
run's key and the object's purpose in the run (``payload``, ``result/<i>``):
nothing is read from an envelope, not even its header, before the tag is
checked, and a mismatch is an :class:`~kjupyter.errors.IntegrityError`, never an
unpickling. The header is plain JSON so that a reader can check versions (and
read an error's type, message and traceback) *before* unpickling anything; a
mismatch is then reported as such instead of as an obscure unpickling error.
Envelopes are written to and read from file objects, so a large result is
streamed rather than copied (pickle writes big buffers straight through; the
reader verifies into a private spool and unpickles from it).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import struct
import sys
import traceback
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import cloudpickle

from kjupyter import __version__, pickler
from kjupyter import integrity as mac
from kjupyter.errors import RemoteError, RemoteTraceback, SerializationError, VersionMismatchError

MAGIC = b"KJUP2\n"
UNSIGNED_MAGIC = b"KJUP1\n"  # envelopes of kjupyter before they were signed
ITEMS_MAGIC = b"KJIT2\n"
PROTOCOL = pickler.PROTOCOL

CALL, MAP, RESULT, ERROR = "call", "map", "result", "error"
PAYLOAD_PURPOSE = "payload"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def result_purpose(index: int) -> str:
    """What task ``index``'s result or error envelope is signed as."""
    return f"result/{index}"


def item_purpose(index: int) -> str:
    return f"item/{index}"


def client_versions() -> dict[str, str]:
    return {
        "python": "{}.{}.{}".format(*sys.version_info[:3]),
        "cloudpickle": cloudpickle.__version__,
        "kjupyter": __version__,
    }


@dataclass(frozen=True)
class Header:
    kind: str
    python: str
    cloudpickle: str
    kjupyter: str
    extra: dict[str, Any]

    def check_compatible(self) -> None:
        """Raise :class:`VersionMismatchError` if this process cannot safely unpickle the body."""
        mine = client_versions()
        py_ok = _minor(self.python) == _minor(mine["python"])
        cp_ok = _minor(self.cloudpickle) == _minor(mine["cloudpickle"])
        if py_ok and cp_ok:
            return
        raise VersionMismatchError(
            f"version mismatch: the payload was written with Python {self.python} and cloudpickle "
            f"{self.cloudpickle}, but this side runs Python {mine['python']} and cloudpickle "
            f"{mine['cloudpickle']}. Both sides need the same Python minor version and the same "
            f"cloudpickle minor version: use an image built on Python {_minor(self.python)} with "
            f"`pip install 'cloudpickle=={_minor(self.cloudpickle)}.*'`, or align the client's "
            f"environment with the image."
        )


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


# --- writing ------------------------------------------------------------------


def write_envelope(f: IO[bytes], kind: str, body: Any, *, key: bytes, purpose: str, outbound: bool = True,
                   **extra: Any) -> None:  # fmt: skip
    """Write ``body`` as an envelope of ``kind``, signed with the run's ``key`` for ``purpose``, to ``f``.

    ``outbound`` (client to pod) ships the client's uninstalled modules by value,
    and the source lines of the code pickled by value (for the remote traceback;
    only the lines of that code, not the rest of its cell or module).
    The runner's results and errors go back to the client, which has its own
    modules: scanning the pod's (``packages_distributions()`` reads every
    installed distribution, up to a second per task) would buy nothing.
    """
    signed = mac.SigningWriter(f, key, purpose)
    header = {"kind": kind, **client_versions(), **extra}
    signed.write(MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n")
    if outbound:
        _ship_local_modules_by_value()
    spans = pickler.dump(body, signed, PROTOCOL)  # type: ignore[arg-type]
    sources = pickler.source_lines(spans) if outbound else {}
    if sources:
        signed.write(json.dumps(sources, separators=(",", ":")).encode())
    signed.finish()


def dumps(kind: str, body: Any, *, key: bytes, purpose: str = PAYLOAD_PURPOSE, outbound: bool = True,
          **extra: Any) -> bytes:  # fmt: skip
    buf = io.BytesIO()
    write_envelope(buf, kind, body, key=key, purpose=purpose, outbound=outbound, **extra)
    return buf.getvalue()


def dump_call(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], *, key: bytes,
              **extra: Any) -> bytes:  # fmt: skip
    """Envelope for ``fn(*args, **kwargs)``; names the argument that cannot be pickled."""
    try:
        return dumps(CALL, (fn, tuple(args), dict(kwargs)), key=key, function=_qualname(fn), **extra)
    except Exception as exc:
        raise _explain_unpicklable(fn, args, kwargs, exc) from None


def dump_map_function(fn: Callable[..., Any], *, key: bytes, **extra: Any) -> bytes:
    try:
        return dumps(MAP, fn, key=key, function=_qualname(fn), **extra)
    except Exception as exc:
        raise _explain_unpicklable(fn, (), {}, exc) from None


def dump_error(exc: BaseException, *, key: bytes, purpose: str, where: str = "") -> bytes:
    """Error envelope: text fields in the header (always readable), the exception in the body."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next  # the user's frames are what matters, not the runner's (or kjupyter's own, for its errors)
    tb_text = "".join(traceback.format_exception(type(exc), exc, tb))
    header = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": tb_text,
        "where": where,
    }
    try:
        return dumps(ERROR, exc, key=key, purpose=purpose, outbound=False, **header)
    except Exception:  # the exception itself does not pickle: keep the text only
        return dumps(ERROR, None, key=key, purpose=purpose, outbound=False, **header)


# --- reading ------------------------------------------------------------------


def verified(f: IO[bytes], key: bytes | None, purpose: str, what: str) -> contextlib.AbstractContextManager[IO[bytes]]:
    """The authenticated bytes of the envelope in ``f``, to read from (IntegrityError naming ``what`` otherwise)."""
    return mac.verified(f, key, purpose, what, unsigned_magic=UNSIGNED_MAGIC)


def read_header(f: IO[bytes]) -> Header:
    """The header of an envelope (only ever called on verified bytes)."""
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise SerializationError("not a kjupyter payload (bad magic bytes); the store may hold a foreign file")
    raw = json.loads(f.readline())
    known = {k: raw.pop(k, "?") for k in ("kind", "python", "cloudpickle", "kjupyter")}
    return Header(extra=raw, **known)


def load_body(f: IO[bytes]) -> Any:
    """Unpickle the body of a verified envelope; the source lines it carries go to linecache."""
    body = cloudpickle.load(f)
    rest = f.read()
    if rest:
        pickler.register_sources(json.loads(rest))
    return body


def read_envelope(f: IO[bytes], *, key: bytes | None, purpose: str = PAYLOAD_PURPOSE, what: str = "the payload",
                  check_versions: bool = True) -> tuple[Header, Any]:  # fmt: skip
    """Verify, then read, the envelope in ``f`` (IntegrityError naming ``what`` if it is not authentic)."""
    with verified(f, key, purpose, what) as v:
        header = read_header(v)
        if check_versions:
            header.check_compatible()
        try:
            return header, load_body(v)
        except Exception as exc:
            raise SerializationError(f"cannot unpickle the {header.kind} payload: {type(exc).__name__}: {exc}") from exc


def loads(data: bytes, *, key: bytes | None, purpose: str = PAYLOAD_PURPOSE) -> tuple[Header, Any]:
    return read_envelope(io.BytesIO(data), key=key, purpose=purpose)


def load_outcome(f: IO[bytes], *, key: bytes | None, index: int = 0, where: str = "") -> Any:
    """The result in task ``index``'s result envelope, or the remote exception of an error one.

    Nothing is unpickled unless the envelope is authenticated by the run's ``key``
    (:class:`~kjupyter.errors.IntegrityError` otherwise; ``where`` says which run, task and
    object, for that message).
    """
    what = f"the result of {where or f'task {index}'}"
    with verified(f, key, result_purpose(index), what) as v:
        header = read_header(v)
        if header.kind == RESULT:
            header.check_compatible()
            try:
                return load_body(v)
            except Exception as exc:
                raise SerializationError(f"the result came back but cannot be unpickled here: {exc}") from exc
        if header.kind != ERROR:
            raise SerializationError(f"expected a result or an error, found a {header.kind!r} envelope")
        raise rebuild_exception(header, v)


def rebuild_exception(header: Header, f: IO[bytes]) -> BaseException:
    """The original exception when it unpickles here, else :class:`RemoteError`; both carry the remote traceback."""
    tb_text = str(header.extra.get("traceback", ""))
    exc: BaseException | None = None
    try:
        header.check_compatible()
        loaded = load_body(f)
        exc = loaded if isinstance(loaded, BaseException) else None
    except Exception:
        exc = None
    if exc is not None:
        exc = exc.with_traceback(None)  # its local traceback would only show kjupyter internals
    if exc is None:
        exc = RemoteError(str(header.extra.get("type", "Exception")), str(header.extra.get("message", "")), tb_text)
    else:
        exc.__cause__ = RemoteTraceback(tb_text)
        exc.remote_traceback = tb_text  # type: ignore[attr-defined]
    return exc


# --- map items: one blob, O(1) writes, each task reads (and verifies) only its own slice ----------


def pack_items(items: Iterable[Any], out: IO[bytes], *, key: bytes) -> int:
    """Write every item into one blob: magic, count, offset table, signed pickles. Returns the count.

    Each item is pickled and signed (for ``item/<i>``) separately, so task ``i`` reads and
    verifies just its byte range.
    """
    blobs: list[tuple[bytes, bytes]] = []
    _ship_local_modules_by_value()
    for i, item in enumerate(items):
        try:
            buf = io.BytesIO()
            pickler.dump(item, buf, PROTOCOL)
            blob = buf.getvalue()
        except Exception as exc:
            where, culprit, err = pickler.find_unpicklable(item, f"items[{i}]")
            raise SerializationError(
                f"item {i} of the map cannot be pickled: {where} is {pickler.describe(culprit)} ({err or exc})"
            ) from None
        blobs.append((blob, mac.tag(key, item_purpose(i), blob)))
    count = len(blobs)
    out.write(ITEMS_MAGIC + struct.pack("<Q", count))
    offset = len(ITEMS_MAGIC) + 8 + 8 * (count + 1)
    table = [offset]
    for blob, _ in blobs:
        offset += len(blob) + mac.TAG_SIZE
        table.append(offset)
    out.write(struct.pack(f"<{count + 1}Q", *table))
    for blob, tag in blobs:
        out.write(blob)
        out.write(tag)
    return count


def item_range_request(index: int) -> tuple[int, int]:
    """Byte range of the two table entries that bound item ``index``."""
    start = len(ITEMS_MAGIC) + 8 + 8 * index
    return start, start + 16


def item_count(head: bytes) -> int:
    if head[: len(ITEMS_MAGIC)] != ITEMS_MAGIC:
        raise SerializationError("the map's items blob is damaged (bad magic bytes)")
    return int(struct.unpack_from("<Q", head, len(ITEMS_MAGIC))[0])


def item_bounds(table_entries: bytes) -> tuple[int, int]:
    start, end = struct.unpack("<2Q", table_entries)
    return int(start), int(end)


def load_item(data: bytes, *, key: bytes | None, index: int, what: str = "") -> Any:
    """Unpickle item ``index`` of a map once its signature checks out (IntegrityError otherwise)."""
    return cloudpickle.loads(mac.check(key, item_purpose(index), data, what or f"item {index} of the map"))


# --- by-value shipping of modules that live beside the user's code ---------------------


@functools.cache
def _installed_roots() -> tuple[str, ...]:
    import site
    import sysconfig  # imported here: the runner never needs it, and start-up time matters there

    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
    paths |= set(getattr(site, "getsitepackages", list)()) | {site.getusersitepackages()}
    return tuple(os.path.realpath(p) + os.sep for p in paths if p)


@functools.cache
def _distributed_top_levels() -> frozenset[str]:
    import importlib.metadata

    try:
        return frozenset(importlib.metadata.packages_distributions())
    except Exception:
        return frozenset()


_BY_VALUE: set[str] = set()
_CHECKED: set[str] = set()  # module names already classified, so each dump scans only new imports


def _is_local_module(name: str, module: types.ModuleType) -> bool:
    if "." in name or name in _BY_VALUE or name in ("__main__", "kjupyter") or name in sys.builtin_module_names:
        return False
    path = getattr(module, "__file__", None)
    if not path or (not path.endswith(".py") and not path.endswith("__init__.py")):
        return False
    real = os.path.realpath(path)
    return not real.startswith(_installed_roots()) and name not in _distributed_top_levels()


def _ship_local_modules_by_value() -> None:
    """Pickle modules that are not installed (a ``helpers.py`` beside the notebook) by value.

    The pod has the image's packages but not the user's working directory, so
    a function that calls ``helpers.clean()`` would fail there with
    ModuleNotFoundError. Registering is idempotent and cheap, and only what
    the pickled objects reference is actually shipped.
    """
    for name, module in list(sys.modules.items()):
        if name in _CHECKED:
            continue
        _CHECKED.add(name)
        if module is not None and _is_local_module(name, module):
            cloudpickle.register_pickle_by_value(module)
            _BY_VALUE.add(name)


# --- explaining what cannot be pickled ------------------------------------------------


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _explain_unpicklable(
    fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], exc: Exception
) -> SerializationError:
    import inspect

    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = []
    candidates = []
    for i, value in enumerate(args):
        root = params[i] if i < len(params) else f"args[{i}]"
        candidates.append((f"argument {root!r} (position {i})", root, value))
    candidates += [(f"argument {k!r}", k, v) for k, v in kwargs.items()]
    for label, root, value in candidates:
        where, culprit, err = pickler.find_unpicklable(value, root)
        if err is not None:
            inner = "" if where == root else f": {where} is {pickler.describe(culprit)}"
            return SerializationError(f"{label} cannot be pickled{inner} ({type(err).__name__}: {err})")
    where, culprit, err = pickler.find_unpicklable(fn, "the function")
    return SerializationError(
        f"the function {_qualname(fn)} cannot be pickled ({type(err or exc).__name__}: {err or exc}); "
        "a global it uses (an open file, a lock, a client connection) may be the cause: create it inside the function"
    )
