"""Inline outcomes: a task's result (or error) envelope framed on lines of the pod's log.

Without a store the runner prints its outcome on stdout, and the Kubernetes
backend reads it back from the pod's log and hides it from the user's log.
Each frame is one line::

    <MARKER>out <index> <nonce> <seq> <base64 chunk> <tag>
    <MARKER>end <index> <nonce> <count> <size> <tag>
    <MARKER>eof <index> <nonce> 0 - <tag>
    <MARKER>item <index> <nonce> <attempt> start|retry|done|fail|cancelled|timeout <tag>

``item`` frames come from a worker pod of a map (one pod, many items): the item it starts
and how it ended, so the client tags the lines in between with their item and settles
each item from the log, without polling anything.

``eof`` is the last line a pod's runner writes (the log is complete up to here): a followed
log stream that delivered it needs no final read.

``tag`` is the hex HMAC-SHA256, under the run's key, of everything between the
marker and the tag, so a frame binds its task, its attempt (``nonce``, random
per outcome), its position and its bytes. The user's own output can contain
the marker (a print of some foreign text, a log of a log): a frame whose tag
does not verify is not a frame, it is a line of the user's log, shown as such
and never assembled, so it cannot replace, damage or delay the real outcome.
The assembled bytes are an envelope, verified again (and only then unpickled)
by :func:`kjupyter.payload.load_outcome`.

The lowest layer: used by the runner (writing) and by the Kubernetes backend
(reading); imports only the standard library and :mod:`kjupyter.errors`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable

from kjupyter.errors import SerializationError

INLINE_MARKER = "\x1ekjupyter:"  # starts every frame line of an inline outcome on stdout
INLINE_LIMIT = (
    1024 * 1024
)  # bytes that may travel without a store: a payload (+ items) in a Secret, an outcome in the log
CHUNK = 8000  # base64 characters per frame line
_DOMAIN = b"kjupyter-frame\0"


def _tag(key: bytes, body: str) -> str:
    return hmac.new(key, _DOMAIN + body.encode("ascii"), hashlib.sha256).hexdigest()


def frame_lines(index: int, data: bytes, key: bytes) -> list[str]:
    """The lines (without newlines) that carry ``data``, the outcome of task ``index``, signed with ``key``."""
    if len(data) > INLINE_LIMIT:
        raise SerializationError(
            f"the outcome is {len(data)} bytes, more than the {INLINE_LIMIT} bytes that can travel without a "
            'store; configure a store for this cluster (store = "s3://bucket/prefix" in its profile)'
        )
    nonce = secrets.token_hex(8)
    text = base64.b64encode(data).decode("ascii")
    chunks = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)]
    bodies = [f"out {index} {nonce} {seq} {chunk}" for seq, chunk in enumerate(chunks)]
    bodies.append(f"end {index} {nonce} {len(chunks)} {len(data)}")
    return [f"{INLINE_MARKER}{body} {_tag(key, body)}" for body in bodies]


def eof_line(index: int, key: bytes) -> str:
    """The signed last line of task ``index``'s log: every line before it was delivered with it."""
    body = f"eof {index} {secrets.token_hex(8)} 0 -"
    return f"{INLINE_MARKER}{body} {_tag(key, body)}"


ITEM_STATES = ("start", "retry", "done", "fail", "cancelled", "timeout")  # the last two: warm workers
END_STATES = ("done", "fail", "cancelled", "timeout")


def item_line(index: int, attempt: int, state: str, key: bytes) -> str:
    """The signed line that says a worker started item ``index`` (``attempt``), or how it ended."""
    body = f"item {index} {secrets.token_hex(8)} {attempt} {state}"
    return f"{INLINE_MARKER}{body} {_tag(key, body)}"


def parse_item(frame: str) -> tuple[int, int, str] | None:
    """``(index, attempt, state)`` of an item frame (already checked by :class:`Outcomes`), else None."""
    fields = frame.strip().split(" ")
    if len(fields) != 6 or fields[0] != "item" or fields[4] not in ITEM_STATES:
        return None
    return int(fields[1]), int(fields[3]), fields[4]


class Outcomes:
    """Reassembles inline outcomes from authenticated frames; ``get(index)`` returns the bytes.

    With ``key`` None (``kjupyter logs``: the reader holds no key) well-formed frames are
    recognised, to be hidden from the log, but nothing is ever assembled.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or None
        self.parts: dict[tuple[int, str], dict[int, bytes]] = {}
        self.done: dict[int, bytes] = {}
        self.lock = threading.Lock()

    def feed(self, frame: str) -> bool:
        """Take the text after a marker; False if it is no frame of this run (it is then a line of the log)."""
        fields = frame.strip().split(" ")
        if len(fields) != 6 or fields[0] not in ("out", "end", "eof", "item"):
            return False
        kind, index_text, nonce, seq_text, data, tag = fields
        if not (index_text.isdigit() and seq_text.isdigit()):
            return False
        if self.key is None:
            return True
        if not hmac.compare_digest(_tag(self.key, " ".join(fields[:5])), tag):
            return False
        index, number = int(index_text), int(seq_text)
        if kind in ("eof", "item"):
            return True  # (LineFilter notes it: it concerns the stream that carried it)
        with self.lock:
            if kind == "out":
                try:
                    self.parts.setdefault((index, nonce), {})[number] = base64.b64decode(data, validate=True)
                except binascii.Error:
                    self.parts.pop((index, nonce), None)  # (signed, so only a broken runner could write it)
                return True
            chunks = self.parts.pop((index, nonce), {})
            if data.isdigit() and sorted(chunks) == list(range(number)):
                blob = b"".join(chunks[i] for i in range(number))
                if len(blob) == int(data):
                    self.done[index] = blob
        return True

    def get(self, index: int) -> bytes | None:
        with self.lock:
            return self.done.get(index)


class LineFilter:
    """Splits a pod's raw log lines into user lines and inline-outcome frames."""

    def __init__(self, emit: Callable[[str], None], outcomes: Outcomes,
                 on_item: Callable[[int, int, str], None] | None = None) -> None:  # fmt: skip
        self.emit = emit
        self.outcomes = outcomes
        self.on_item = on_item  # a worker's item frames, in log order (without a key: unverified, for tagging)
        self.held_blank = False
        self.eof = False  # the runner's signed last line came through (only with a key: else it is unknown)
        # A warm worker's log holds many runs, each signed with a key of its own: ``gated`` drops every
        # line until the first frame verified with this run's key; ``until_end`` drops every line after
        # this run's own end frame (:data:`END_STATES`). Both need a key.
        self.gated = False
        self.until_end = False
        self.ended = False

    def feed(self, text: str) -> None:
        if self.ended:
            return
        before, marker, frame = text.partition(INLINE_MARKER)
        verified = bool(marker) and self.outcomes.feed(frame)
        if self.gated:
            if not (verified and self.outcomes.key is not None):
                return  # another run's line (or frame) on a shared warm worker
            self.gated = False
            before = ""
        if verified:
            if frame.startswith("eof ") and self.outcomes.key is not None:
                self.eof = True
            if before:
                self._flush_blank()
                self.emit(before)
            item = parse_item(frame) if frame.startswith("item ") else None
            if item is not None and self.on_item is not None:
                self.on_item(*item)  # (after the text before it on its line: that was the previous item's)
            if item is not None and self.until_end and item[2] in END_STATES and self.outcomes.key is not None:
                self.ended = True
            self.held_blank = False  # the runner starts its frames on a fresh line
            return
        if text == "":
            self._flush_blank()
            self.held_blank = True
            return
        self._flush_blank()
        self.emit(text)  # (a forged frame too: the user's code printed it)

    def _flush_blank(self) -> None:
        if self.held_blank:
            self.held_blank = False
            self.emit("")

    def close(self) -> None:
        self._flush_blank()
