"""``%%kube --cache`` in a real IPython shell, on the local backend: the same cell with the same inputs
comes back from the cache (its assignments too), another input runs it again."""

from __future__ import annotations

from typing import Any

import pytest

from kjupyter.session import Session


def test_a_cached_cell_brings_its_names_back_without_running(ip: Any, local_session: Session,
                                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    store = local_session.backend(local_session.config.profile()).store
    ip.user_ns.update(k=4)
    cell = "print('ran', flush=True)\nm = k * 10\nm + 1"
    assert ip.run_cell_magic("kube", "--cache", cell) == 41 and ip.user_ns["m"] == 40
    [run_id] = store.run_ids(local_session.user)
    assert "ran" in capsys.readouterr().out
    ip.user_ns["m"] = None
    assert ip.run_cell_magic("kube", "--cache", cell) == 41 and ip.user_ns["m"] == 40
    out, err = capsys.readouterr()
    assert "ran" not in out and f"kjupyter: cached: result of run {run_id} from " in err
    assert store.run_ids(local_session.user) == [run_id]
    ip.user_ns.update(k=5)  # another input: it runs
    assert ip.run_cell_magic("kube", "--cache", cell) == 51 and len(store.run_ids(local_session.user)) == 2
    assert ip.run_cell_magic("kube", "", cell) == 51 and len(store.run_ids(local_session.user)) == 3  # no --cache
