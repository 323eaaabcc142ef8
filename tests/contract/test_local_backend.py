"""The backend contract on the built-in local backend (real subprocesses)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from kjupyter.backends.local.files import state_root, worker_pids
from kjupyter.session import Session
from tests.contract.backend_contract import BackendContract


class TestLocalBackend(BackendContract):
    timeout = 30.0

    @pytest.fixture
    def session(self, local_session: Session) -> Iterator[Session]:
        yield local_session

    def kill_a_worker(self, run_id: str) -> None:
        """SIGKILL one worker process (and its group), as the OOM killer would."""
        pids = worker_pids(state_root() / run_id)
        assert pids, "no worker to kill"
        os.killpg(pids[0], signal.SIGKILL)
