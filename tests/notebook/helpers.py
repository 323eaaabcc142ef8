"""Run notebooks with nbclient and a real ipykernel, and read what they showed (outputs, widget state)."""

from __future__ import annotations

import contextlib
import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    return nb


def client(nb: nbformat.NotebookNode, cwd: Path, *, allow_errors: bool = False, timeout: int = 60) -> NotebookClient:
    """A client whose kernel runs in ``cwd``; it inherits os.environ (the test's KJUPYTER_HOME, set by conftest)."""
    return NotebookClient(nb, timeout=timeout, iopub_timeout=1, kernel_name="python3", allow_errors=allow_errors,
                          resources={"metadata": {"path": str(cwd)}})  # fmt: skip


def run(nb: nbformat.NotebookNode, cwd: Path, *, allow_errors: bool = False) -> nbformat.NotebookNode:
    client(nb, cwd, allow_errors=allow_errors).execute()
    return nb


@contextlib.contextmanager
def open_kernel(nb: nbformat.NotebookNode, cwd: Path) -> Iterator[NotebookClient]:
    """A client with a started kernel: run cells one by one with ``c.execute_cell(cell, index)``."""
    c = client(nb, cwd, allow_errors=True)
    with c.setup_kernel():
        yield c


def cancel_button_id(c: NotebookClient) -> str | None:
    """The comm id of a run widget's Cancel button, once the kernel has opened it (as seen on IOPub)."""
    for model_id, state in list(c.widget_state.items()):
        if state.get("_model_name") == "ButtonModel" and state.get("description") == "Cancel":
            return model_id
    return None


def wait_until_running(c: NotebookClient, marker: Path, timeout: float = 60) -> str | None:
    """Wait until the remote code wrote ``marker`` and a run widget is displayed; its Cancel button's comm id."""
    deadline = time.monotonic() + timeout

    def shown() -> bool:
        return any(WIDGET_VIEW in out.get("data", {}) for cell in c.nb.cells for out in list(cell.get("outputs", [])))

    while time.monotonic() < deadline and not (marker.exists() and shown()):
        time.sleep(0.02)  # polling for the remote code's marker file and the widget's display, not a timing assert
    return cancel_button_id(c) if marker.exists() and shown() else None


def text(cell: nbformat.NotebookNode) -> str:
    """Everything a cell printed or displayed as text, errors' tracebacks included."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
        elif out.output_type == "error":
            parts.append("\n".join(out.traceback))
    return "".join(parts)


def result(cell: nbformat.NotebookNode) -> str | None:
    for out in cell.outputs:
        if out.output_type == "execute_result":
            value: str = out.data["text/plain"]
            return value
    return None


def error(cell: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    return next((out for out in cell.outputs if out.output_type == "error"), None)


class Widgets:
    """The saved widget state of an executed notebook."""

    def __init__(self, nb: nbformat.NotebookNode) -> None:
        self.state: dict[str, Any] = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})

    def model(self, model_id: str) -> dict[str, Any]:
        return self.state[model_id]

    def run_views(self, cell: nbformat.NotebookNode) -> list[dict[str, Any]]:
        """The run widgets a cell displayed, each flattened to {status, diagnosis, log, progress, counts}."""
        views = []
        for out in cell.outputs:
            if out.output_type == "display_data" and WIDGET_VIEW in out.data:
                views.append(self.flatten(out.data[WIDGET_VIEW]["model_id"]))
        return views

    def flatten(self, model_id: str) -> dict[str, Any]:
        found: dict[str, Any] = {"html": [], "log": "", "progress": None}
        for mid in self.descendants(model_id):
            model = self.state[mid]
            name, st = model["model_name"], model["state"]
            if name == "HTMLModel" and "kjupyter-log-lines" in st.get("value", ""):
                found["log"] = html.unescape(re.sub(r"<[^>]+>", "", st["value"]))
            elif name == "HTMLModel":
                found["html"].append(st.get("value", ""))
        values = found["html"]
        for value in values:
            if "kjupyter-bar" in value:  # a map's bar: its segments' counts
                bar = {k: int(v) for k, v in re.findall(r"data-(\w+)='(\d+)'", value)}
                found["bar"] = bar
                found["progress"] = bar.get("done", 0) + bar.get("failed", 0) + bar.get("cancelled", 0)
        found["status"] = next((h for h in values if "kjupyter-status" in h), "")
        found["diagnosis"] = next((h for h in values if "kjupyter-diagnosis" in h), "")
        found["counts"] = html.unescape(
            re.sub(r"<[^>]+>", "", next((h for h in values if "kjupyter-counts" in h), ""))
        ).strip()
        found["failed"] = next((h for h in values if "kjupyter-failed" in h or "kjupyter-traceback" in h), "")
        found["cancel_shown"] = any(
            self.state[mid]["model_name"] == "ButtonModel"
            and self.state[mid]["state"].get("description") == "Cancel"
            and self.model(self.state[mid]["state"]["layout"].removeprefix("IPY_MODEL_"))["state"].get("display")
            != "none"
            for mid in self.descendants(model_id)
        )
        return found

    def descendants(self, model_id: str) -> list[str]:
        out, todo = [], [model_id]
        while todo:
            mid = todo.pop(0)
            out.append(mid)
            children = self.state[mid]["state"].get("children", [])
            todo.extend(c.removeprefix("IPY_MODEL_") for c in children)
        return out


def dump(nb: nbformat.NotebookNode) -> str:
    """For assertion messages."""
    return json.dumps([{"source": c.source, "outputs": c.get("outputs")} for c in nb.cells], indent=1)[:6000]
