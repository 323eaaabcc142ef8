"""Outside a notebook (terminal IPython, a script) runs print plain log lines and a text progress bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    assert sorted(line for line in out.splitlines() if line.startswith("[")) == [f"[{i}] item {i}" for i in range(5)]
    assert "Widget" not in out + err and "VBox" not in out + err  # no widget repr anywhere
    bars = [line for line in err.splitlines() if line.startswith("kjupyter: [")]
    assert bars and bars[-1].startswith("kjupyter: [" + "#" * 30 + "] 5/5 succeeded 5 failed 0"), err
    assert "on local Succeeded in" in err and "(5 succeeded, 0 failed of 5)" in err, err
