"""What a saved notebook says of its runs without a kernel (GitHub, nbviewer, after a restart): the text of
the widget's display output, kept up to date by the kernel; and the widget of ``f.submit()``."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from tests.notebook import helpers as h

pytestmark = pytest.mark.slow


def displayed(cell: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for o in cell.outputs if o.output_type == "display_data" and h.WIDGET_VIEW in o.data]


def test_the_saved_notebook_keeps_each_runs_summary_failures_and_last_log_lines(tmp_path: Path) -> None:
    nb = h.notebook(
        "%load_ext kjupyter\nfrom kjupyter import remote",
        "@remote\ndef chatty(n):\n    for i in range(n):\n        print(f'line {i}', flush=True)\n    return n\n"
        "chatty(30)",
        "@remote\ndef boom(x):\n    print('about to fail', flush=True)\n    raise ValueError(f'bad input {x}')\n"
        "boom(7)",
        "@remote\ndef sq(x):\n    print(f'item {x}', flush=True)\n    if x == 2:\n        raise KeyError('two')\n"
        "    return x * x\nsq.map(range(4), return_exceptions=True)",
        "fut = chatty.submit(3)\nfut",
        "print(fut.result(), fut.wait_ended(10))",
    )
    h.run(nb, tmp_path, allow_errors=True)
    saved = tmp_path / "saved.ipynb"
    nbformat.write(nb, saved)
    nb = nbformat.read(saved, as_version=4)  # what a reader without the kernel has
    cells = nb.cells

    [out] = displayed(cells[1])
    text = out.data["text/plain"]
    assert re.match(r"kjupyter: run chatty-\w+ \(chatty\) on local Succeeded in [\d.]+s\n", text), h.dump(nb)
    assert re.search(r"Log \(last 20 lines; 10 earlier lines: kjupyter logs chatty-\w+\):\nline 10\n", text), text
    assert text.endswith("line 29") and "line 9\n" not in text
    assert "<b>kjupyter: run chatty-" in out.data["text/html"] and "line 29" in out.data["text/html"]
    assert "Error displaying widget" not in text and "VBox(" not in text

    [out] = displayed(cells[2])
    text = out.data["text/plain"]
    assert re.match(r"kjupyter: run boom-\w+ \(boom\) on local Failed in [\d.]+s", text), text
    assert "about to fail" in text and "Failed:" not in text  # the error output below says it, once
    err = h.error(cells[2])  # the cell still fails, with the remote traceback of the user's code
    assert err is not None and "\n".join(err.traceback).count("ValueError: bad input 7") == 1, err
    assert h.text(cells[2]).count("bad input 7") == 2  # the log's one line, and the error

    [out] = displayed(cells[3])
    text = out.data["text/plain"]
    assert text.splitlines()[0].endswith(": 3 ok · 1 raised (returned)"), text
    assert "Failed items (1):\n  item 2 (2): KeyError: 'two'" in text
    assert all(f"[{i}] item {i}" in text for i in range(4)), text

    widgets = h.Widgets(nb)
    for i in (1, 2, 3):
        [view] = widgets.run_views(cells[i])
        assert not view["cancel_shown"], (i, view)  # the Cancel button went when the run ended
    [view] = widgets.run_views(cells[1])
    assert "line 0\n" in view["log"] and view["log"].rstrip().endswith("line 29")  # the live log, in order
    assert "white-space:nowrap" in view["status"]

    [out] = displayed(cells[4])  # submit() shows the live widget too, and returns the future at once
    # (its text is as the run was when the display was last updated while the client listened)
    assert re.match(r"kjupyter: run chatty-\w+ \(chatty\) on local (Pending for|Running for|Succeeded in)",
                    out.data["text/plain"])  # fmt: skip
    assert h.result(cells[4]).startswith("<RunFuture chatty-")  # type: ignore[union-attr]
    assert h.text(cells[5]).strip() == "3 True"
    [view] = widgets.run_views(cells[4])
    # Its later updates come from the run's event lane after cell 4 ended: a live front end applies
    # them, but nbclient keeps only messages of the cell it runs, so the saved state may be any of these.
    assert re.search(r"kjupyter-status.>(Pending|Running|Succeeded)</b>", view["status"]), view["status"]
    assert "kjupyter: run" not in "".join(o.get("text", "") for o in cells[5].outputs if o.output_type == "stream")
