"""What a failed run shows in a notebook: a fail-fast map that stopped, a timeout in one sentence, each thing once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebook import helpers as h

pytestmark = pytest.mark.slow


def test_a_stopped_map_a_timeout_and_a_cells_error_each_show_once(tmp_path: Path) -> None:
    nb = h.notebook(
        "%load_ext kjupyter\nfrom kjupyter import remote\nimport time",
        "def check(v):\n    print(f'checking {v}', flush=True)\n    if v == 2:\n        raise ValueError(f'bad {v}')\n"
        "    time.sleep(3)\n    return v\nremote(check).map(range(4), parallelism=4)",
        "def slow(v):\n    time.sleep(30)\nremote(slow, timeout='1s')(1)",
    )
    nb = h.run(nb, tmp_path, allow_errors=True)
    stopped, timed_out = nb.cells[1], nb.cells[2]

    [view] = h.Widgets(nb).run_views(stopped)
    assert "Failed" in view["status"] and "Cancelled" not in view["status"], view  # it stopped at its error
    assert view["counts"].startswith("stopped at item 2: ValueError"), view
    assert view["bar"]["failed"] == 1 and view["bar"]["cancelled"] >= 1, view  # not one red bar
    assert "data-index='2'" in view["failed"] and "checking 2" in view["failed"], view  # the item's own log
    # the whole remote traceback one click away, as the pod wrote it
    assert "<summary>Full traceback</summary>" in view["failed"] and 'File &quot;/tmp/ipykernel_' in view["failed"]
    err = h.error(stopped)
    assert err is not None and err.ename == "ValueError"
    tb = "\n".join(err.traceback)
    assert tb.startswith("kjupyter: ValueError in check · item 2 (2) · run check-"), tb
    assert "Cell In[2], line 4, in check" in tb and "kjupyter/" not in tb and "<dynamic-code>" not in tb, tb
    assert tb.count("ValueError: bad 2") == 1 and tb.count("raise ValueError") == 1, tb  # the traceback once
    assert "Traceback" not in view["log"], view  # ... and not in the log as well
    saved = next(out for out in stopped.outputs if h.WIDGET_VIEW in out.get("data", {}))
    assert "Failed items (1):\n  item 2 (2): ValueError: bad 2" in saved.data["text/plain"]  # the saved fallback

    err = h.error(timed_out)
    assert err is not None and err.ename == "RunTimeout"
    [line] = err.traceback  # one sentence, no traceback
    assert line.startswith("kjupyter: run slow-") and "stopped: the run exceeded its timeout of 1s" in line, line
    assert h.text(timed_out).count("timeout of 1s") == 1, h.text(timed_out)  # the diagnosis once
    assert "Traceback" not in h.text(timed_out)
