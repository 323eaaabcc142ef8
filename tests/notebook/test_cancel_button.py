"""The widget's Cancel button works while a blocking ``%%kube`` cell holds the kernel.

A real kernel runs the cell; a second client sends, on the shell channel, the very
message a browser sends when the button is clicked (ipywidgets' ``custom`` click
event on the button's comm), while the cell is still blocked in the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking import BlockingKernelClient
from nbclient import NotebookClient

from tests.notebook import helpers as h
from tests.notebook.test_fake_cluster_notebooks import kube_profile

pytestmark = pytest.mark.slow


def second_client(c: NotebookClient) -> BlockingKernelClient:
    """Another client of the kernel ``c`` runs (as a second browser tab would be). Stop its channels when done."""
    kc = BlockingKernelClient()
    kc.load_connection_info(c.km.get_connection_info())
    kc.start_channels()
    return kc


def click(kc: BlockingKernelClient, comm_id: str) -> None:
    """Send the ipywidgets click message for the button whose comm is ``comm_id``."""
    content = {"comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}}
    kc.shell_channel.send(kc.session.msg("comm_msg", content))


def run_and_click(nb: Any, cwd: Path, marker: Path, queue: str | None = None) -> tuple[list[str], dict[str, Any]]:
    """Run the notebook; when the blocking cell (index 1) has started remotely, click its Cancel button.

    With ``queue``, the second client first asks the kernel to execute that code, so that the
    request reaches the kernel while the cell blocks (the click, sent after it on the same
    connection, is what ends the block): it must be held, and run after the cell. Its reply is returned.
    """
    c = h.client(nb, cwd, allow_errors=True)
    clicked: list[str] = []
    sent: list[str] = []
    reply: dict[str, Any] = {}

    with c.setup_kernel():
        kc = second_client(c)  # kept open until the cell ends: closing it at once could drop the unsent click

        def clicker() -> None:
            button = h.wait_until_running(c, marker)
            if button is not None:
                if queue is not None:
                    sent.append(kc.execute(queue))
                click(kc, button)
                clicked.append(button)

        try:
            c.execute_cell(nb.cells[0], 0)
            thread = threading.Thread(target=clicker, daemon=True)
            thread.start()
            c.execute_cell(nb.cells[1], 1)
            thread.join()
            if sent:
                reply = kc.get_shell_msg(timeout=60)
                assert reply["parent_header"]["msg_id"] == sent[0]
        finally:
            kc.stop_channels()
        for i in range(2, len(nb.cells)):
            c.execute_cell(nb.cells[i], i)
        c.set_widgets_metadata()
    return clicked, reply


def blocking_cell(marker: Path) -> str:
    return f"%%kube\nimport pathlib, time\npathlib.Path({str(marker)!r}).write_text('x')\ntime.sleep(120)\nfinished = 1"


def assert_cancelled_by_the_button(nb: Any, clicked: list[str]) -> None:
    assert clicked, "the Cancel button never appeared, or the run never started: " + h.dump(nb)
    cell = nb.cells[1]
    err = h.error(cell)
    assert err is not None and err.ename == "RunCancelled", h.dump(nb)
    shown = h.text(cell)
    assert "was cancelled" in shown and "interrupted" not in shown, shown  # the button, not a kernel interrupt
    assert " Cancelled in " in shown, shown  # the saved text of the widget's display
    assert "Traceback" not in shown
    assert err.traceback == [f"kjupyter: run {err.evalue.split()[1]} was cancelled."], err  # one sentence
    [view] = h.Widgets(nb).run_views(cell)
    assert "Cancelled" in view["status"], view


def test_cancel_button_cancels_a_blocking_local_run(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    nb = h.notebook(
        "%load_ext kjupyter",
        blocking_cell(marker),
        "from kjupyter.session import get_session\n"
        "runs = get_session().backend(get_session().config.profile()).list_runs()\n"
        "print([r.phase.value for r in runs], 'finished' in dir(), active_then)",
    )
    # a cell another client asks for while the run blocks: held, not run re-entrantly inside the blocked cell
    queued = "from kjupyter.session import get_session\nactive_then = [f.run_id for f in get_session().active_runs()]"
    clicked, reply = run_and_click(nb, tmp_path, marker, queue=queued)
    assert_cancelled_by_the_button(nb, clicked)
    assert reply["content"]["status"] == "ok", reply
    assert reply["content"]["execution_count"] > nb.cells[1].execution_count  # it ran after the blocked cell
    assert h.text(nb.cells[2]).strip() == "['Cancelled'] False []"  # ... when no run was active any more


@pytest.mark.parametrize("keep_warm", ["0", "default"])
def test_cancel_button_on_the_fake_cluster(tmp_path: Path, make_fake_cluster: Callable[..., Any],
                                           keep_warm: str) -> None:  # fmt: skip
    """keep_warm=0: the Job is deleted; a warm pod (a kernel's default) is kept: only the run's process dies."""
    cluster = kube_profile(tmp_path, make_fake_cluster, 'keep_warm = "0"\n' if keep_warm == "0" else "")
    marker = tmp_path / "started"  # the fake kubelet runs pods as local processes: they can write it
    nb = h.notebook("%load_ext kjupyter", blocking_cell(marker), "print('finished' in dir())")
    clicked, _ = run_and_click(nb, tmp_path, marker)
    assert_cancelled_by_the_button(nb, clicked)
    assert h.text(nb.cells[2]).strip() == "False"
    if keep_warm != "0":
        assert not cluster.requests(verb="delete", resource="jobs")
        (pod,) = cluster.objects("pods")
        assert pod["status"]["phase"] == "Running"  # warm, waiting for the next cell
        cluster.wait_for(lambda: "the run was cancelled" in cluster.logs(pod["metadata"]["name"]), 10, "its words")
        return
    deletes = cluster.requests(verb="delete", resource="jobs")
    assert deletes and all(r.status is not None and r.status < 300 for r in deletes), deletes
    cluster.wait_for(lambda: not cluster.objects("jobs") and not cluster.objects("pods"), 20, "job and pods gone")
