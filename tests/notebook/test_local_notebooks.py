"""Real notebooks, real ipykernel, local backend: %%kube round trips, errors, widgets, detach/attach, interrupt."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import pytest
from nbclient.exceptions import CellExecutionError

from tests.notebook import helpers as h

pytestmark = pytest.mark.slow

FRAME = '''
class Frame:
    """DataFrame-like: columns of lists, methods, defined in the notebook (pickled by value)."""
    def __init__(self, **cols):
        self.cols = cols
    def scaled(self, k):
        return Frame(**{name: [v * k for v in values] for name, values in self.cols.items()})
    def __repr__(self):
        return f"Frame({self.cols})"

def double(v):
    return 2 * v

df = Frame(a=[1, 2], b=[3, 4])
k = 3
'''


def test_round_trip_display_out_and_widget(tmp_path: Path) -> None:
    nb = h.notebook(
        "%load_ext kjupyter",
        FRAME,
        '%%kube --memory 1Gi\nprint("hello from the cell", flush=True)\nn = double(k)\ndf2 = df.scaled(k)\n'
        "def triple(x):\n    return 3 * x + k\nn + 1",
        "assert n == 6, n\nassert df2.cols == {'a': [3, 6], 'b': [9, 12]}, df2\nprint(type(df2).__name__, triple(1))",
        "%%kube --out a\na = 1\nb = 2\na + b;",
        "print('a' in dir(), 'b' in dir())",
        "total = 0\ndel total",
        "%%kube\nhist = [x * k for x in range(3)]\ncount = 10\ncount += len(hist)\nimport math\nroot = math.sqrt(count)",
        "print(hist, count, root)",
        "from kjupyter import remote\n@remote\ndef sq(x):\n    print(f'item {x}', flush=True)\n"
        "    if x == 4:\n        raise ValueError('four')\n    return x * x\nsq.map(range(4))",
        "sq.map(range(6), return_exceptions=True)",
    )
    nb = h.run(nb, tmp_path)
    cells = nb.cells
    assert h.result(cells[2]) == "7", h.dump(nb)  # the last expression is displayed
    assert "Frame 6" in h.text(cells[3])  # a DataFrame-like value and a function came back; triple sees k
    assert h.result(cells[4]) is None  # `;` suppresses the display, as in a normal cell
    assert h.text(cells[5]).split() == ["True", "False"]  # --out a: only a came back
    assert h.text(cells[8]).strip() == "[0, 3, 6] 13 3.605551275463989"
    assert h.result(cells[9]) == "[0, 1, 4, 9]"

    widgets = h.Widgets(nb)
    [view] = widgets.run_views(cells[2])
    assert "Succeeded" in view["status"] and "on <b>local</b>" in view["status"]
    assert "hello from the cell" in view["log"]
    assert re.search(r"kjupyter: run cell-\w+ on local Succeeded in", h.text(cells[2]))  # the plain summary

    [mapview] = widgets.run_views(cells[9])
    assert mapview["progress"] == 4 and mapview["counts"] == "4 ok", mapview
    assert "[3] item 3" in mapview["log"]
    [failing] = widgets.run_views(cells[10])
    assert failing["counts"] == "5 ok · 1 raised (returned)", failing  # failures first, and what was asked
    assert failing["bar"] == {"done": 5, "failed": 1, "cancelled": 0, "running": 0}, failing  # not all red
    assert "item 4</b> (4): <span" in failing["failed"] and "ValueError: four" in failing["failed"]
    assert ": 5 ok · 1 raised (returned)" in h.text(cells[10])


def test_errors_fail_the_cell(tmp_path: Path) -> None:
    nb = h.notebook(
        "%load_ext kjupyter",
        "%%kube\ndef inner(v):\n    raise ValueError(f'bad value {v}')\n\ninner(41)",
        "%%kube --bogus 1\nx = 1",
        "%%kube --memory lots\nx = 1",
        "%%kube --cluster nowhere\nx = 1",
        "import threading\nlock = threading.Lock()",
        "%%kube\nwith lock:\n    y = 1",
        "%kube use nowhere",
        "%%kube --out missing\nz = 1",
    )
    nb = h.run(nb, tmp_path, allow_errors=True)
    cells = nb.cells
    err = h.error(cells[1])
    assert err is not None and err.ename == "ValueError", h.dump(nb)
    tb = "\n".join(err.traceback)
    assert tb.startswith("kjupyter: ValueError in the %%kube cell · run cell-") and "bad value 41" in tb, tb
    # the notebook cell's own name and line numbers (line 1 is "%%kube"); the user's frames only
    assert "Cell In[2], line 5, in <module>\n    inner(41)" in tb and "Cell In[2], line 3, in inner" in tb, tb
    assert "kjupyter/" not in tb and "File " not in tb and "<dynamic-code>" not in tb and "<kube-cell" not in tb
    usage = [
        (2, "UsageError: %%kube: unrecognized arguments: --bogus 1"),
        (3, "UsageError: %%kube: invalid memory='lots'"),
        (4, "UsageError: %%kube: unknown cluster 'nowhere'"),
        (6, "UsageError: variable 'lock' cannot be pickled"),
        (7, "UsageError: %kube use: unknown cluster 'nowhere'"),
    ]
    for i, first_line in usage:  # IPython's one-line UsageError (the cell fails: see the test below)
        shown = h.text(cells[i])
        assert shown.startswith(first_line) and shown.count("\n") == 1, (i, shown)
    err = h.error(cells[8])
    assert err is not None and err.ename == "NameError" and "missing" in h.text(cells[8])


def test_remote_tracebacks_show_the_lines_of_the_notebooks_functions(tmp_path: Path) -> None:
    nb = h.notebook(
        "%load_ext kjupyter\nfrom kjupyter import remote",
        "def check(v):\n    if v > 2:\n        raise ValueError(f'too big: {v}')\n    return v",
        "remote(check)(3)",
        "%%kube\ncheck(5)",
    )
    nb = h.run(nb, tmp_path, allow_errors=True)
    for i, shown in ((2, "too big: 3"), (3, "too big: 5")):
        err = h.error(nb.cells[i])
        assert err is not None and err.ename == "ValueError", h.dump(nb)
        tb = "\n".join(err.traceback)
        assert shown in tb and "raise ValueError(f'too big: {v}')" in tb and "<dynamic-code>" not in tb, tb
        assert "Cell In[2], line 3, in check" in tb, tb  # the cell's own name and line, as IPython names it
        assert "kjupyter/" not in tb and "concurrent/futures" not in tb and tb.count("ValueError: too big") == 1, tb


def test_a_usage_error_stops_the_notebook(tmp_path: Path) -> None:
    nb = h.notebook("%load_ext kjupyter", "%%kube --gpu lots\nx = 1", "print('not reached')")
    with pytest.raises(CellExecutionError, match="UsageError: %%kube: no configured cluster offers lots GPUs"):
        h.run(nb, tmp_path)
    assert nb.cells[2].outputs == []


def test_detached_run_is_collected_from_a_fresh_kernel(tmp_path: Path) -> None:
    first = h.notebook("%load_ext kjupyter", "%%kube --detach --name later\nanswer = 6 * 7\nprint('computed')\nanswer")
    with h.open_kernel(first, tmp_path) as c:
        for i, cell in enumerate(first.cells):
            c.execute_cell(cell, i)
        shown = h.text(first.cells[1])
        match = re.search(r"%kube attach (later-\w+)", shown)
        assert match, h.dump(first)
        second = h.notebook("%load_ext kjupyter", f"%kube attach {match.group(1)}", "print(answer + 1)")
        second = h.run(second, tmp_path)  # a new kernel, while the first one still owns the local run
    assert h.result(second.cells[1]) == "42", h.dump(second)
    assert h.text(second.cells[2]).strip() == "43"
    [view] = h.Widgets(second).run_views(second.cells[1])
    assert "Succeeded" in view["status"] and "computed" in view["log"]


def test_interrupting_the_kernel_cancels_the_run(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    nb = h.notebook(
        "%load_ext kjupyter",
        f"%%kube\nimport pathlib, time\npathlib.Path({str(marker)!r}).write_text('x')\ntime.sleep(60)",
        "from kjupyter.session import get_session\n"
        "runs = get_session().backend(get_session().config.profile()).list_runs()\n"
        "print([r.phase.value for r in runs])",
    )
    c = h.client(nb, tmp_path, allow_errors=True)

    def interrupt() -> None:
        h.wait_until_running(c, marker)  # the remote code runs and the widget is shown
        asyncio.run(
            c.km.interrupt_kernel()
        )  # nbclient's manager is async; this only sends SIGINT  # nbclient's manager is async; this only sends SIGINT

    started = time.monotonic()
    with c.setup_kernel():
        c.execute_cell(nb.cells[0], 0)
        thread = threading.Thread(target=interrupt, daemon=True)
        thread.start()
        c.execute_cell(nb.cells[1], 1)
        thread.join()
        c.execute_cell(nb.cells[2], 2)
        c.set_widgets_metadata()
    assert time.monotonic() - started < 30
    err = h.error(nb.cells[1])
    assert err is not None and err.ename == "KeyboardInterrupt", h.dump(nb)
    assert err.traceback == [next(line for line in err.traceback if "was cancelled (interrupted)." in line)], err
    assert len(err.traceback) == 1 and "Traceback" not in h.text(nb.cells[1])  # one sentence, no frames
    assert "Cancelled" in h.text(nb.cells[1])  # the saved text of the widget's display
    assert h.text(nb.cells[2]).strip() == "['Cancelled']"
    [view] = h.Widgets(nb).run_views(nb.cells[1])
    assert "Cancelled" in view["status"]


def test_jobs_logs_and_cancel_line_magics(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    nb = h.notebook(
        "%load_ext kjupyter",
        "%%kube --detach --name ticker\nimport pathlib, time\nprint('tick 1', flush=True)\n"
        f"pathlib.Path({str(marker)!r}).write_text('x')\ntime.sleep(120)",
        "run = _.run_id",  # the detached cell's value is its handle
        f"import pathlib, time\nwhile not pathlib.Path({str(marker)!r}).exists():\n    time.sleep(0.02)",
        "%kube jobs",
        "%kube logs $run",
        "%kube cancel $run",
        "%kube jobs",
        "%kube cancel nope-000000",
    )
    nb = h.run(nb, tmp_path, allow_errors=True)
    cells = nb.cells
    jobs = h.text(cells[4]).splitlines()
    assert jobs[0].split()[:3] == ["RUN", "STATUS", "KIND"] and jobs[1].split()[1] in ("Pending", "Running"), h.dump(nb)
    run = jobs[1].split()[0]
    assert run.startswith("ticker-")
    assert h.text(cells[5]).strip() == "tick 1"
    assert h.text(cells[6]).strip() == f"{run}: cancelled"
    assert h.text(cells[7]).splitlines()[1].split()[:2] == [run, "Cancelled"], h.dump(nb)
    shown = h.text(cells[8])  # an unknown run: the CLI's one-line error, no traceback
    assert shown.startswith("UsageError: no run 'nope-000000' on any configured cluster ") and len(shown.strip().splitlines()) == 1, shown
