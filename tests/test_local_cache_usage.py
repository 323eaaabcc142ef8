"""The local backend: cache hits start no process and write no run; usage is the task processes' wall time
as cpu-seconds of the cpu requested (one core when none was)."""

from __future__ import annotations

import json
import time

from kjupyter import remote
from kjupyter import store as st
from kjupyter.session import Session


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_local_run_records_its_wall_time_as_cpu_seconds(local_session: Session) -> None:
    future = remote(nap, cpu=2).submit(0.5)
    assert future.result(60) == 0.5 and future.wait_ended(10)
    assert future.usage is not None and future.usage.source == "local"
    used = future.usage.as_dict
    assert set(used) == {"cpu"} and 1.0 <= used["cpu"] < 1.0 + 2 * 30  # 2 cores x (0.5 s and the process's own time)
    store = local_session.backend(local_session.config.profile()).store
    record = json.loads(store.run(local_session.user, future.run_id).read_bytes(st.RUN_JSON))
    assert record["usage"] == used and record["usage_source"] == "local"
    one_core = remote(nap).submit(0.2)
    assert one_core.result(60) == 0.2 and one_core.wait_ended(10)
    assert one_core.usage is not None and one_core.usage.as_dict["cpu"] >= 0.2


def test_a_local_cache_hit_writes_no_run(local_session: Session) -> None:
    store = local_session.backend(local_session.config.profile()).store
    f = remote(nap, cache=True)
    assert f(0.1) == 0.1
    runs = store.run_ids(local_session.user)
    assert len(runs) == 1
    hit = f.submit(0.1)
    assert hit.result(5) == 0.1 and hit.run_id == runs[0]
    assert store.run_ids(local_session.user) == runs  # no new run: no payload, no process
    assert f(0.2) == 0.2 and len(store.run_ids(local_session.user)) == 2
