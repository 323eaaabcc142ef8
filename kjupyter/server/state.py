"""The cluster chosen in JupyterLab's status bar, kept in one small per-user file.

JupyterLab writes it through ``PUT /kjupyter/cluster``; kernels read it as
their default cluster (after ``cluster=`` and ``%kube use``, before the
configuration's ``default``). The file holds one profile name and a newline:
``$KJUPYTER_HOME/current-cluster``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FILE_NAME = "current-cluster"


def home() -> Path:
    base = os.environ.get("KJUPYTER_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "kjupyter"
    )
    return Path(base)


def state_file() -> Path:
    return home() / FILE_NAME


def read_current() -> str | None:
    """The chosen cluster, or None when none was chosen (or the file is unreadable)."""
    try:
        name = state_file().read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return name or None


def write_current(name: str | None) -> None:
    """Choose ``name`` (None: forget the choice), atomically, so a kernel never reads half a name."""
    path = state_file()
    if name is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".current-cluster-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(name + "\n")
    os.replace(tmp, path)
