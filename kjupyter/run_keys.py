"""Per-run keys: what authenticates a run's pickles between the client and its runners.

Each run gets 32 random bytes. The client signs the payload (and a map's items)
with them, the runner verifies them before it unpickles anything and signs what
it writes back, and the client verifies every result before unpickling it (see
:mod:`kjupyter.payload`). Whoever can write to the store but does not hold the
key cannot make either side unpickle anything.

Where a key lives: in the client's memory while the run goes; in
``$KJUPYTER_HOME/keys/<run-id>`` (mode 0600, hex) so that ``kjupyter.attach``
from another process of the same machine can still authenticate the results;
in the runner's environment as :data:`ENV` (hex), which the runner removes from
its environment before it runs user code. Pure stdlib (and :mod:`kjupyter.paths`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from kjupyter.paths import data_home

ENV = "KJUPYTER_RUN_KEY"  # the runner reads the run's key, hex-encoded, from this variable
KEY_SIZE = 32


def new_key() -> bytes:
    """32 random bytes from the OS's CSPRNG."""
    return secrets.token_bytes(KEY_SIZE)


def keys_dir() -> Path:
    return data_home() / "keys"


def key_path(run_id: str) -> Path:
    """``$KJUPYTER_HOME/keys/<run_id>``; a run id that is not a plain file name is refused."""
    if not run_id or run_id in (".", "..") or "/" in run_id or "\\" in run_id or "\0" in run_id:
        raise ValueError(f"not a run id: {run_id!r}")
    return keys_dir() / run_id


def save_key(run_id: str, key: bytes) -> None:
    """Write the key of ``run_id`` (hex, mode 0600, in a 0700 folder); atomic, so a reader never sees half a key."""
    if len(key) != KEY_SIZE:
        raise ValueError(f"a run key is {KEY_SIZE} bytes, not {len(key)}")
    path = key_path(run_id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{run_id}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key.hex() + "\n")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def load_key(run_id: str) -> bytes | None:
    """The key saved for ``run_id`` on this machine, or None (none saved, or not a key)."""
    try:
        text = key_path(run_id).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return _parse(text)


def forget_key(run_id: str) -> None:
    """Delete the key of ``run_id`` (``kjupyter gc`` does, with the run); no error if there is none."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        key_path(run_id).unlink()


def key_from_env() -> bytes | None:
    """The run key the runner was given in :data:`ENV`, or None when it is missing or malformed."""
    return _parse(os.environ.get(ENV, ""))


def _parse(text: str) -> bytes | None:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        return None
    return key if len(key) == KEY_SIZE else None
