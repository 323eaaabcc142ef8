"""Outside a notebook (terminal IPython, a script) runs print plain log lines and a text progress bar."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CELLS = [
    "%load_ext kjupyter",
    "%%kube\nfor i in range(3):\n    print(f'step {i}', flush=True)\nanswer = 6 * 7",
    "print('answer in the shell:', answer)",
    "from kjupyter import remote\n@remote\ndef sq(x):\n    print(f'item {x}', flush=True)\n    return x * x\n"
    "print('squares:', sq.map(range(5)))",
]

# A terminal IPython shell (what `ipython` runs), fed the cells one by one as a user would type them.
DRIVER = """
import json, sys
from IPython.terminal.interactiveshell import TerminalInteractiveShell
# term_title=False: IPython 8.0 writes the terminal-title escape to stdout even when it is a pipe.
shell = TerminalInteractiveShell.instance(colors="NoColor", term_title=False)
for cell in json.loads(sys.argv[1]):
    result = shell.run_cell(cell, store_history=True)
    if not result.success:
        sys.exit(f"cell failed: {cell!r}")
"""


def test_terminal_ipython_shows_plain_lines_and_a_text_progress_bar(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(CELLS)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out, err = done.stdout, done.stderr
    assert [line for line in out.splitlines() if line.startswith("step")] == ["step 0", "step 1", "step 2"], out
    assert "answer in the shell: 42" in out and "squares: [0, 1, 4, 9, 16]" in out
    assert sorted(line for line in out.splitlines() if line.startswith("[")) == [
        f"[{i}] item {i}" for i in range(5)
    ]
    assert "Widget" not in out + err and "VBox" not in out + err  # no widget repr anywhere
    bars = [line for line in err.splitlines() if line.startswith("kjupyter sq-")]  # tqdm's format, not a pipe's \r
    assert bars and "100%" in bars[-1] and "5/5" in bars[-1] and "5 ok" in bars[-1], err
    assert "succeeded 5 failed 0" not in err  # (the old hand-made bar read like "5 failed")
    assert "on local Succeeded in" in err and ": 5 ok" in err, err


SCRIPT = """
import sys, time
from kjupyter import remote

def check(v):
    if v == 3:
        raise ValueError(f"bad item {v}")
    return v

def slow(v):
    time.sleep(30)

what = sys.argv[1]
if what == "map":
    print(remote(check).map(range(8), return_exceptions=True))
elif what == "failfast":
    remote(check).map(range(8))
elif what == "call":
    remote(check)(3)
elif what == "timeout":
    remote(slow, timeout="1s")(1)
elif what == "interrupt":
    def started_then_slow(path):
        open(path, "w").close()
        time.sleep(60)
    remote(started_then_slow)(sys.argv[2])
"""


def _script(tmp_path: Path, what: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "job.py"
    path.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(path), what], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))  # fmt: skip


def test_a_script_shows_tqdm_progress_and_failures_in_a_few_lines(tmp_path: Path) -> None:
    done = _script(tmp_path, "map")
    assert done.returncode == 0, done.stderr
    err = done.stderr
    bars = [line for line in err.splitlines() if line.startswith("kjupyter check-")]
    assert bars and "8/8" in bars[-1] and "7 ok · 1 raised (returned)" in bars[-1], err
    assert "on local Succeeded in" in err and ": 7 ok · 1 raised (returned)" in err, err
    assert "failed 0" not in err and "cancelled" not in err  # nothing was cancelled: nothing says so

    done = _script(tmp_path, "failfast")
    assert done.returncode == 1
    err = done.stderr
    assert "stopped at item 3: ValueError" in err, err
    assert "Traceback" not in err.split("kjupyter: ValueError in check · item 3 (3)")[0]  # no local frames above
    rendered = err[err.index("kjupyter: ValueError in check · item 3 (3)"):]
    assert f'File "{tmp_path / "job.py"}", line 7, in check' in rendered and 'raise ValueError(f"bad item {v}")' in rendered
    assert "kjupyter/" not in rendered and "concurrent/futures" not in rendered and "<dynamic-code>" not in rendered
    assert rendered.count("ValueError: bad item 3") == 1, err  # the traceback once: not in the log too

    done = _script(tmp_path, "call")
    assert done.returncode == 1 and done.stderr.count("raise ValueError") == 1, done.stderr
    assert "hint:" not in done.stderr and "retries=" not in done.stderr  # a deterministic error: no retry hint


def test_a_timeout_in_a_script_ends_in_one_sentence(tmp_path: Path) -> None:
    done = _script(tmp_path, "timeout")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kjupyter: run slow-") and "stopped: the run exceeded its timeout of 1s" in last, done.stderr
    assert "Traceback" not in done.stderr and "File " not in done.stderr
    assert done.stderr.count("timeout of 1s") == 1, done.stderr  # said once: not by the view, the summary and the error


def test_ctrl_c_in_a_script_cancels_the_run_in_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "job.py"
    path.write_text(SCRIPT)
    marker = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, str(path), "interrupt", str(marker)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)  # polling for the remote code's marker file, not a timing assert
        assert marker.exists(), proc.communicate(timeout=10)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"kjupyter: run started-then-slow-\w+ was cancelled \(interrupted\)\.", last), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
