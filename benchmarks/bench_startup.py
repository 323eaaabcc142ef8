"""`import kjupyter`, `%load_ext kjupyter`, and runner start to user code.

    python -m benchmarks.bench_startup [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.common import Row, print_rows, save

IMPORT = "import time; t=time.perf_counter(); import kjupyter; print(time.perf_counter()-t)"
BASELINE = "import time; t=time.perf_counter(); import json; print(time.perf_counter()-t)"
LOAD_EXT = (
    "import time; from IPython.core.interactiveshell import InteractiveShell; sh=InteractiveShell.instance(); "
    "t=time.perf_counter(); sh.run_line_magic('load_ext', 'kjupyter'); print(time.perf_counter()-t)"
)


def _python(code: str) -> float:
    out = subprocess.run([sys.executable, "-X", "frozen_modules=on", "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def runner_overhead(repeats: int) -> list[float]:
    """Seconds from launching `python -m kjupyter.runner` to the user's function starting."""
    from kjupyter import payload as pl
    from kjupyter import run_keys
    from kjupyter import store as st

    def mark() -> float:
        return time.time()

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        run = st.RunStore(f"file://{tmp}").run("u", "r")
        key = run_keys.new_key()
        run.write_bytes(st.PAYLOAD, pl.dump_call(mark, (), {}, key=key))
        for _ in range(repeats):
            start = time.time()
            env = {**os.environ, run_keys.ENV: key.hex()}
            subprocess.run([sys.executable, "-m", "kjupyter.runner", "--run", run.url], env=env, check=True)
            with run.open_read(st.result_name(0)) as f:
                out.append(pl.load_outcome(f, key=key) - start)
    return out


def run(quick: bool = False) -> list[Row]:
    n = 3 if quick else 15
    imp = _median([_python(IMPORT) for _ in range(n)])
    base = _median([_python(BASELINE) for _ in range(n)])
    rows = [
        Row("startup", "import kjupyter", imp * 1000, "ms", "import json", base * 1000, "< 150 ms", imp < 0.150),
    ]
    try:
        ext = _median([_python(LOAD_EXT) for _ in range(n)])
        rows.append(Row("startup", "%load_ext kjupyter", ext * 1000, "ms"))
    except subprocess.CalledProcessError:
        rows.append(Row("startup", "%load_ext kjupyter (failed to run)", float("nan"), "ms", passed=False))
    overhead = runner_overhead(3 if quick else 15)
    med = _median(overhead)
    rows.append(Row("startup", "runner start to user code (median)", med * 1000, "ms", target="< 300 ms", passed=med < 0.300))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    rows = run(parser.parse_args().quick)
    save("startup", rows)
    print_rows("Start-up", rows)
    print(json.dumps([r.metric for r in rows if r.passed is False]))
