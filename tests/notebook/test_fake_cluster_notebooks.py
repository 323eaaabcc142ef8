"""The notebook experience on the Kubernetes backend, against the fake cluster (tests/fakekube)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.notebook import helpers as h

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("kjupyter.backends.kubernetes") is None,
        reason="kjupyter/backends/kubernetes.py (the Kubernetes backend) is not there yet",
    ),
]


def kube_profile(folder: Path, make_fake_cluster: Callable[..., Any]) -> Any:
    """A fake cluster with CPU nodes only, as the default profile of a kernel started in ``folder``."""
    cluster = make_fake_cluster(nodes=[{"name": "cpu-1", "cpu": "8", "memory": "32Gi"}])
    (folder / "kjupyter.toml").write_text(
        'default = "kube"\n[clusters.kube]\nbackend = "kubernetes"\n'
        f'kubeconfig = "{cluster.kubeconfig_path}"\nimage = "python:3.11"\npending_timeout = "4s"\n'
        f'store = "file://{folder / "store"}"\n'
    )
    return cluster


def test_round_trip_on_the_fake_cluster(tmp_path: Path, make_fake_cluster: Callable[..., Any]) -> None:
    kube_profile(tmp_path, make_fake_cluster)
    nb = h.notebook(
        "%load_ext kjupyter",
        "def double(v):\n    return 2 * v\nitems = {'a': [1, 2]}\nk = 5",
        "%%kube --memory 256Mi\nprint('in the pod', flush=True)\nresult = double(k)\nitems['b'] = [result]\nresult + 1",
        "print(result, items)",
    )
    nb = h.run(nb, tmp_path)
    assert h.result(nb.cells[2]) == "11", h.dump(nb)
    assert h.text(nb.cells[3]).strip() == "10 {'a': [1, 2], 'b': [10]}"
    [view] = h.Widgets(nb).run_views(nb.cells[2])
    assert "Succeeded" in view["status"] and "on <b>kube</b>" in view["status"]
    assert "in the pod" in view["log"]
    assert "on kube Succeeded" in h.text(nb.cells[2])


def test_unschedulable_run_shows_the_diagnosis_while_pending(
    tmp_path: Path, make_fake_cluster: Callable[..., Any]
) -> None:
    kube_profile(tmp_path, make_fake_cluster)
    nb = h.notebook(
        "%load_ext kjupyter",
        # a run, its widget, and a wait for its first diagnosis (it cannot be scheduled: no node has a GPU)
        "import threading\nfrom kjupyter import remote\nfrom kjupyter.events import Diagnosis\n"
        "from kjupyter.widgets import RunWidget\n"
        "seen = threading.Event()\n"
        "fut = remote(lambda: 1, gpu=1).submit()\n"
        "widget = RunWidget.show(fut)\nfut.subscribe(widget)\n"
        "fut.subscribe(lambda e: seen.set() if isinstance(e, Diagnosis) else None)\n"
        "assert seen.wait(10)\n"
        "print('status', widget.phase.value, '|', widget.diagnosis.value)\n"
        "fut.cancel()\nfut.wait_ended(10)",
        "%%kube --gpu 1\nx = 1",
    )
    nb = h.run(nb, tmp_path, allow_errors=True)
    shown = h.text(nb.cells[1])
    assert "status Pending | " in shown and "nodes are available" in shown, h.dump(nb)
    [pending] = h.Widgets(nb).run_views(nb.cells[1])
    assert "nodes are available" in pending["diagnosis"] and "Cancelled" in pending["status"]
    # the blocking %%kube: still pending after pending_timeout, so it is deleted and the cell fails, saying why
    [view] = h.Widgets(nb).run_views(nb.cells[2])
    assert "nodes are available" in view["diagnosis"] and "Failed" in view["status"], view
    err = h.error(nb.cells[2])
    assert err is not None and "pending after 4s" in h.text(nb.cells[2]), h.text(nb.cells[2])
