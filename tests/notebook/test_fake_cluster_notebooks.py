"""The notebook experience on the Kubernetes backend, against the fake cluster (tests/fakekube)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.notebook import helpers as h
from tests.notebook.test_local_notebooks import FRAME

pytestmark = pytest.mark.slow


def kube_profile(folder: Path, make_fake_cluster: Callable[..., Any], extra: str = "") -> Any:
    """A fake cluster with CPU nodes only, as the default profile of a kernel started in ``folder``."""
    cluster = make_fake_cluster(nodes=[{"name": "cpu-1", "cpu": "8", "memory": "32Gi"}])
    (folder / "kjupyter.toml").write_text(
        'default = "kube"\n[clusters.kube]\nbackend = "kubernetes"\n'
        f'kubeconfig = "{cluster.kubeconfig_path}"\nimage = "python:3.11"\npending_timeout = "4s"\n'
        f'store = "file://{folder / "store"}"\n' + extra
    )
    return cluster


def test_round_trip_on_the_fake_cluster(tmp_path: Path, make_fake_cluster: Callable[..., Any]) -> None:
    kube_profile(tmp_path, make_fake_cluster)
    nb = h.notebook(
        "%load_ext kjupyter",
        FRAME + "items = {'a': [1, 2]}\nk = 5",
        "%%kube --memory 256Mi\nprint('in the pod', flush=True)\nresult = double(k)\nitems['b'] = [result]\n"
        "df2 = df.scaled(k)\nresult + 1",
        "print(result, items, df2)",
        "%%kube --out a\na = 1\nb = 2",
        "print('a' in dir(), 'b' in dir())",
        "from kjupyter import remote\n@remote\ndef sq(x):\n    print(f'item {x}', flush=True)\n    return x * x\n"
        "sq.map(range(3))",
        "%%kube\ndef inner(v):\n    raise ValueError(f'bad value {v}')\n\ninner(41)",
        "@remote\ndef odd(x):\n    if x == 1:\n        raise ValueError('one')\n    return x\nodd.map(range(3), return_exceptions=True)",
    )
    nb = h.run(nb, tmp_path, allow_errors=True)
    cells = nb.cells
    assert h.result(cells[2]) == "11", h.dump(nb)  # the last expression, displayed
    assert h.text(cells[3]).strip() == "10 {'a': [1, 2], 'b': [10]} Frame({'a': [5, 10], 'b': [15, 20]})"
    assert h.text(cells[5]).split() == ["True", "False"]  # --out a
    assert h.result(cells[6]) == "[0, 1, 4]"
    widgets = h.Widgets(nb)
    [view] = widgets.run_views(cells[2])
    assert "Succeeded" in view["status"] and "on <b>kube</b>" in view["status"]
    assert "in the pod" in view["log"]
    assert "on kube Succeeded" in h.text(cells[2])  # the plain-text summary
    [mapview] = widgets.run_views(cells[6])
    assert mapview["progress"] == 3 and mapview["counts"] == "3 ok", mapview
    assert re.search(r"on <b>kube</b> · \d pods?<", mapview["status"]), mapview  # the map's pods, not one of them
    assert "[2] item 2" in mapview["log"] and "Succeeded" in mapview["status"]
    err = h.error(cells[7])
    assert err is not None and err.ename == "ValueError", h.dump(nb)
    tb = "\n".join(err.traceback)
    assert re.match(r"kjupyter: ValueError in the %%kube cell · run cell-\w+ on kube · node \S+\n", tb), tb
    assert "Cell In[8], line 5, in <module>" in tb and "Cell In[8], line 3, in inner" in tb and "kjupyter/" not in tb
    [failing] = widgets.run_views(cells[8])
    assert failing["counts"] == "2 ok · 1 raised (returned)" and "item 1</b>" in failing["failed"], failing
    shown = h.text(cells[8]) + failing["diagnosis"] + failing["failed"]
    assert "failed indexes" not in shown and "retries=" not in shown, shown  # the item's own error says it all


def test_detached_run_is_collected_from_a_fresh_kernel(tmp_path: Path, make_fake_cluster: Callable[..., Any]) -> None:
    kube_profile(tmp_path, make_fake_cluster)
    first = h.notebook("%load_ext kjupyter", "%%kube --detach --name later\nanswer = 6 * 7\nprint('computed')\nanswer")
    first = h.run(first, tmp_path)  # the first kernel is gone afterwards: the Job keeps running
    match = re.search(r"%kube attach (later-\w+)", h.text(first.cells[1]))
    assert match, h.dump(first)
    second = h.run(h.notebook("%load_ext kjupyter", f"%kube attach {match.group(1)}", "print(answer + 1)"), tmp_path)
    assert h.result(second.cells[1]) == "42", h.dump(second)
    assert h.text(second.cells[2]).strip() == "43"
    [view] = h.Widgets(second).run_views(second.cells[1])
    assert "Succeeded" in view["status"] and "computed" in view["log"]


def live_views(c: Any) -> list[tuple[str, str]]:
    """(status, diagnosis) HTML of the run widgets as a frontend sees them now (from IOPub comm messages)."""
    state = {mid: dict(st) for mid, st in list(c.widget_state.items())}
    views = []
    for st in state.values():
        if st.get("_model_name") != "VBoxModel" or not st.get("children"):
            continue
        html = []
        todo = [ch.removeprefix("IPY_MODEL_") for ch in st["children"]]
        while todo:
            child = state.get(todo.pop(0), {})
            todo += [ch.removeprefix("IPY_MODEL_") for ch in child.get("children", [])]
            if child.get("_model_name") == "HTMLModel":
                html.append(child.get("value", ""))
        status = next((v for v in html if "kjupyter-status" in v), "")
        diagnosis = next((v for v in html if "kjupyter-diagnosis" in v), "")
        if status:
            views.append((status, diagnosis))
    return views


def test_unschedulable_run_shows_the_diagnosis_while_pending(
    tmp_path: Path, make_fake_cluster: Callable[..., Any]
) -> None:
    kube_profile(tmp_path, make_fake_cluster)  # CPU nodes only: a GPU run cannot be scheduled
    nb = h.notebook("%load_ext kjupyter", "%%kube --gpu 1\nx = 1")
    c = h.client(nb, tmp_path, allow_errors=True)
    seen: list[tuple[str, str]] = []

    def watch() -> None:  # what the frontend shows while the cell still blocks
        deadline = time.monotonic() + 60
        while not seen and time.monotonic() < deadline:
            seen.extend(v for v in live_views(c) if "nodes are available" in v[1])
            time.sleep(0.02)  # polling the live widget state, not a timing assert

    with c.setup_kernel():
        c.execute_cell(nb.cells[0], 0)
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        c.execute_cell(nb.cells[1], 1)
        thread.join()
        c.set_widgets_metadata()
    assert seen, h.dump(nb)
    status, diagnosis = seen[0]
    assert ">Pending<" in status and "Insufficient nvidia.com/gpu" in diagnosis, seen[0]
    # still pending after pending_timeout: deleted, and the cell fails saying why
    [view] = h.Widgets(nb).run_views(nb.cells[1])
    assert "nodes are available" in view["diagnosis"] and "Failed" in view["status"], view
    err = h.error(nb.cells[1])
    assert err is not None and "pending after 4s" in h.text(nb.cells[1]), h.text(nb.cells[1])
    [line] = err.traceback  # one sentence: what happened, why, what to do; no traceback
    assert line.startswith("kjupyter: run ") and "stopped: the run was still pending after 4s" in line, line
    assert h.text(nb.cells[1]).count("Insufficient nvidia.com/gpu") == 1, h.text(nb.cells[1])  # the diagnosis once
    assert diagnosis.count("<div class='kjupyter-hint'") == 1, diagnosis  # live: the sentence, then the hint below
    assert diagnosis.index("Insufficient nvidia.com/gpu") < diagnosis.index("kjupyter-hint"), diagnosis


@pytest.mark.parametrize("keep_warm", ["0", "default"])
def test_interrupting_the_kernel_cancels_the_run(tmp_path: Path, make_fake_cluster: Callable[..., Any],
                                                 keep_warm: str) -> None:  # fmt: skip
    """keep_warm=0: the Job is deleted. A warm pod (a kernel's default): the run's process is killed, the
    pod is kept, and the next cell runs on it."""
    cluster = kube_profile(tmp_path, make_fake_cluster, 'keep_warm = "0"\n' if keep_warm == "0" else "")
    marker = tmp_path / "started"  # the fake kubelet runs the pod as a local process: it can write it
    nb = h.notebook(
        "%load_ext kjupyter",
        f"%%kube\nimport pathlib, time\npathlib.Path({str(marker)!r}).write_text('x')\ntime.sleep(120)",
        "%%kube\nprint('next cell', flush=True)",
    )
    c = h.client(nb, tmp_path, allow_errors=True)

    def interrupt() -> None:
        h.wait_until_running(c, marker)  # the remote code runs and the widget is shown
        asyncio.run(c.km.interrupt_kernel())  # nbclient's manager is async; this only sends SIGINT

    with c.setup_kernel():
        c.execute_cell(nb.cells[0], 0)
        thread = threading.Thread(target=interrupt, daemon=True)
        thread.start()
        c.execute_cell(nb.cells[1], 1)
        thread.join()
        if keep_warm != "0":
            c.execute_cell(nb.cells[2], 2)
        c.set_widgets_metadata()
    err = h.error(nb.cells[1])
    assert err is not None and err.ename == "KeyboardInterrupt", h.dump(nb)
    assert "cancelled (interrupted)" in h.text(nb.cells[1]) and "on kube Cancelled" in h.text(nb.cells[1])
    views = h.Widgets(nb).run_views(nb.cells[1])
    assert len(views) == 1 and "Cancelled" in views[0]["status"], [o.output_type for o in nb.cells[1].outputs]
    if keep_warm == "0":
        assert cluster.requests(verb="delete", resource="jobs"), "the Job was never deleted"
        cluster.wait_for(lambda: not cluster.objects("jobs") and not cluster.objects("pods"), 20, "job and pods gone")
        return
    assert not cluster.requests(verb="delete", resource="jobs") and not cluster.requests(verb="delete", resource="pods")
    assert "next cell" in h.text(nb.cells[2]) and h.error(nb.cells[2]) is None, h.dump(nb)
    assert len(cluster.objects("jobs")) == 1 and len(cluster.objects("pods")) == 1  # the same warm pod
