"""The backend contract on the built-in local backend (real subprocesses)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kjupyter.session import Session
from tests.contract.backend_contract import BackendContract


class TestLocalBackend(BackendContract):
    timeout = 30.0

    @pytest.fixture
    def session(self, local_session: Session) -> Iterator[Session]:
        yield local_session
