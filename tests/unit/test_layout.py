"""One concept, one place: timestamps in UTC whatever the time zone, one error root, no state changed by a listing."""

from __future__ import annotations

import calendar
import importlib
import os
import pkgutil
import time
from pathlib import Path

import pytest

import kjupyter
from kjupyter.backends.kubernetes.state import k8s_time
from kjupyter.errors import KjupyterError


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Berlin", "Australia/Sydney", "UTC"])
def test_cluster_timestamps_do_not_move_with_the_local_time_zone_or_its_daylight_saving(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        summer = calendar.timegm((2026, 7, 1, 12, 0, 0, 0, 0, 0))
        winter = calendar.timegm((2026, 1, 15, 12, 0, 0, 0, 0, 0))
        assert k8s_time("2026-07-01T12:00:00Z") == summer
        assert k8s_time("2026-01-15T12:00:00Z") == winter
        assert k8s_time("2026-07-01T12:00:00.25Z") == summer + 0.25
        # the night Europe and the US change their clocks: still one hour of cluster time per hour
        assert k8s_time("2026-03-29T02:30:00Z") - k8s_time("2026-03-29T00:30:00Z") == 7200
        assert k8s_time("2026-11-01T06:30:00Z") - k8s_time("2026-11-01T05:30:00Z") == 3600
        assert k8s_time(None) == 0.0 and k8s_time("garbage") == 0.0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_every_exception_class_of_kjupyter_derives_from_the_root_and_is_exported() -> None:
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(kjupyter.__path__, "kjupyter."):
        if info.name.startswith(("kjupyter.server", "kjupyter.notebook.widget", "kjupyter.runner.__main__")) or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, BaseException) and not issubclass(value, Warning)
                    and value.__module__ == info.name and not name.startswith("_")):  # fmt: skip
                found[f"{info.name}.{name}"] = value
    assert found, "no exception classes found"
    assert [name for name, cls in found.items() if not issubclass(cls, KjupyterError)] == []
    public = {name.rsplit(".", 1)[1] for name in found}
    assert sorted(public - set(kjupyter.__all__)) == []


def test_no_module_of_the_package_is_over_400_lines() -> None:
    root = Path(kjupyter.__file__).parent
    long = {str(p.relative_to(root)): n for p in root.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_a_cancelled_run_always_raises_run_cancelled_which_is_also_a_cancelled_error() -> None:
    import concurrent.futures

    from kjupyter.errors import RunCancelled

    assert issubclass(RunCancelled, concurrent.futures.CancelledError)
    assert issubclass(RunCancelled, KjupyterError)
    assert os.sep  # (the future side is tested in tests/contract: cancel raises RunCancelled)
