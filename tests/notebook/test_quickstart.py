"""examples/quickstart.py is the README's quickstart: it must run as a script and as a notebook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

from tests.notebook import helpers as h

pytestmark = pytest.mark.slow
QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def test_quickstart_runs_as_a_script() -> None:
    done = subprocess.run([sys.executable, str(QUICKSTART)], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["epoch 0: loss 0.5000", "epoch 1: loss 0.2500", "epoch 2: loss 0.1250"]  # the live log
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49]" in lines and "total: 140" in lines
    assert "on local Succeeded in" in done.stderr and ": 8 ok\n" in done.stderr, done.stderr
    assert "8/8 [" in done.stderr  # tqdm's meter


def test_quickstart_runs_as_a_notebook(tmp_path: Path) -> None:
    nb = jupytext.read(QUICKSTART)
    assert any(c.source.startswith("%%kube") for c in nb.cells)  # jupytext made the commented magic real
    nb = h.run(nb, tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    kube = next(c for c in code if c.source.startswith("%%kube"))
    assert h.result(kube) == "140", h.dump(nb)
    assert "total: 140" in h.text(code[-1])
    widgets = h.Widgets(nb)
    train_view = widgets.run_views(code[1])[0]
    assert "Succeeded" in train_view["status"] and "epoch 2: loss 0.1250" in train_view["log"]
    map_view = widgets.run_views(code[2])[0]
    assert map_view["progress"] == 8 and map_view["counts"] == "8 ok", map_view
