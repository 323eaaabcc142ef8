"""The unit tier's shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from kjupyter.session import Session


@pytest.fixture
def ip(local_session: Session) -> Iterator[Any]:
    """The session's one IPython shell with kjupyter loaded; its namespace and cluster are restored after the test."""
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "kjupyter")
    saved = dict(shell.user_ns)
    yield shell
    shell.user_ns.clear()
    shell.user_ns.update(saved)
    local_session.cluster = None  # (%kube use NAME changes it)
