"""One way for tests to install a kjupyter session as the process-wide one, and to take it down."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kjupyter import session as session_mod
from kjupyter.config import Config


@contextmanager
def installed_session(config: Config) -> Iterator[session_mod.Session]:
    """A new Session on ``config`` as ``get_session()``'s answer; its live runs are cancelled on exit."""
    sess = session_mod.Session(config)
    old = session_mod._session
    session_mod._session = sess
    try:
        yield sess
    finally:
        for future in sess.active_runs():
            future.cancel()
            future.wait_ended(5)
        sess.close()
        session_mod._session = old
