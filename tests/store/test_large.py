"""A 200 MB result through S3 (moto, real HTTP) without more than ~2.5x its size in memory.

Each side runs in a fresh subprocess so its peak RSS is its own (``VmHWM`` of its
address space; ``ru_maxrss`` would inherit the test process's peak across fork+exec):
the writer does what the runner does (``write_envelope`` into ``open_write``, signing as it
streams), the reader what a future does (``load_outcome`` from ``open_read``: verify into a
private spool, then unpickle from it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.servers import ObjectServer

SIZE = 200 * 2**20

_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import psutil
    from kjupyter import payload as pl, store as st

    mode, url, options, size = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    key = bytes(range(32))  # the run's key: signed while written, verified before it is unpickled
    run = st.open_run_dir(url, options)
    run.exists("nothing")  # connect, so the client's own buffers are in the baseline
    base = psutil.Process().memory_info().rss
    t = time.perf_counter()
    if mode == "write":
        value = b"k" * size
        with run.open_write(st.result_name(0)) as f:
            pl.write_envelope(f, pl.RESULT, value, key=key, purpose=pl.result_purpose(0), outbound=False)
    else:
        with run.open_read(st.result_name(0)) as f:
            value = pl.load_outcome(f, key=key)
        assert len(value) == size and value[:1] == b"k" and value[-1:] == b"k"
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"extra": peak - base, "seconds": time.perf_counter() - t}))
    """
)


def _measure(mode: str, url: str, server: ObjectServer) -> dict[str, float]:
    env = {**os.environ, **server.env}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode, url, json.dumps(server.options), str(SIZE)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS is read from /proc/self/status")
def test_200mb_result_round_trip_stays_under_2_5x(s3: ObjectServer, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/kj/alice/big-run"
    wrote = _measure("write", url, s3)
    read = _measure("read", url, s3)
    assert s3.filesystem().size(f"{s3_bucket}/kj/alice/big-run/results/0.pkl") > SIZE
    for side, m in (("writer", wrote), ("reader", read)):
        ratio = m["extra"] / SIZE
        print(f"{side}: peak {m['extra'] / 2**20:.0f} MiB over baseline ({ratio:.2f}x) in {m['seconds']:.1f}s")
        assert ratio < 2.5, f"the {side} held {ratio:.2f}x the object size"
