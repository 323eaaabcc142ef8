"""How a blocking wait ends: Ctrl-C cancels at once; other errors let the run finish its story first."""

from __future__ import annotations

from typing import Any

import pytest

from kjupyter.notebook import wait as views


class RecordingFuture:
    run_id = "r-1"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def done(self) -> bool:
        return False

    def cancel(self) -> bool:
        self.calls.append("cancel")
        return True

    def wait_ended(self, timeout: float) -> bool:
        self.calls.append("wait_ended")
        return True

    def result_or_raise(self) -> Any:
        raise AssertionError("not reached")


def test_ctrl_c_cancels_before_waiting_for_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(future: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(views, "_block", interrupted)
    future = RecordingFuture()
    with pytest.raises(KeyboardInterrupt):
        views.wait(future, show=False)  # type: ignore[arg-type]
    assert future.calls[0] == "cancel"  # not a wait for a run nobody cancelled yet


def test_a_failure_waits_for_the_run_to_end_without_cancelling(monkeypatch: pytest.MonkeyPatch) -> None:
    def failed(future: Any) -> None:
        raise RuntimeError("remote failure")

    monkeypatch.setattr(views, "_block", failed)
    future = RecordingFuture()
    with pytest.raises(RuntimeError):
        views.wait(future, show=False)  # type: ignore[arg-type]
    assert future.calls == ["wait_ended"]
