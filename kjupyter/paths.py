"""Where kjupyter keeps files on this machine: one root, ``$KJUPYTER_HOME``.

Default ``$XDG_DATA_HOME/kjupyter`` (``~/.local/share/kjupyter``). Below it: ``runs/`` (the local
store) and ``local/<run-id>/`` (the local backend's worker files). The cluster chosen in JupyterLab's
status bar is not here: it belongs to one Jupyter server (:mod:`kjupyter.lab_choice`).
"""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """``$KJUPYTER_HOME``, else ``$XDG_DATA_HOME/kjupyter``, else ``~/.local/share/kjupyter``."""
    base = os.environ.get("KJUPYTER_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "kjupyter"
    )
    return Path(base)
