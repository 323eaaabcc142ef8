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

# One definition of the file for both sides: kernels read it in Session.default_profile.
from kjupyter.session import lab_cluster_file, read_lab_cluster


def state_file() -> Path:
    return lab_cluster_file()


def read_current() -> str | None:
    """The chosen cluster, or None when none was chosen (or the file is unreadable)."""
    return read_lab_cluster()


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
