"""The cluster chosen in JupyterLab's status bar: one choice per Jupyter server, for its kernels.

The server keeps it in a file of its own, ``<runtime dir>/kjupyter-cluster-<port>``, and gives the
file's path to every kernel it starts (``KJUPYTER_LAB_CLUSTER_FILE`` in the kernel's environment,
added where the server's session manager builds that environment). Kernels read it at each run
(:func:`kjupyter.lab_choice.choose`); nothing else reads it, so a script in a terminal or another
lab is not affected. Keyed by the port, a lab restarted on the same port keeps its choice; two labs
running side by side each keep their own.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kjupyter.lab_choice import ENV, read_lab_choice, write_lab_choice


class LabChoice:
    """One server's choice file (its path is fixed at first use: a server may change port when it binds)."""

    def __init__(self, path: Path | Callable[[], Path]) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        if callable(self._path):
            self._path = self._path()
        return self._path

    @classmethod
    def for_server(cls, server_app: Any) -> LabChoice:
        def path() -> Path:  # (a server on a unix socket has no port: its pid names the file)
            key = server_app.port or f"pid{os.getpid()}"
            return Path(server_app.runtime_dir) / f"kjupyter-cluster-{key}"

        return cls(path)

    def read(self) -> str | None:
        """The chosen cluster, or None when none was chosen (or the file is unreadable)."""
        return read_lab_choice(self.path)

    def write(self, name: str | None) -> None:
        write_lab_choice(self.path, name)

    def kernel_env(self) -> dict[str, str]:
        return {ENV: str(self.path)}


def pass_to_kernels(session_manager: Any, choice: LabChoice) -> None:
    """Make the server's session manager add the choice file to the environment of each kernel it starts.

    jupyter_server (2.0 and later) builds a kernel's environment in ``SessionManager.get_kernel_env``
    (it adds ``JPY_SESSION_NAME`` there); this wraps that method of this server's instance only, sync
    or async as it is, so the variable never enters the server's own environment or another server's.
    """
    original = getattr(session_manager, "get_kernel_env", None)
    if original is None:
        raise RuntimeError(
            f"this jupyter_server's session manager ({type(session_manager).__name__}) has no get_kernel_env, "
            "so kernels cannot be told the cluster chosen in the lab; kjupyter needs jupyter_server 2.0 or later"
        )
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def get_kernel_env_async(*args: Any, **kwargs: Any) -> dict[str, str]:
            return {**(await original(*args, **kwargs)), **choice.kernel_env()}

        session_manager.get_kernel_env = get_kernel_env_async
        return

    @functools.wraps(original)
    def get_kernel_env(*args: Any, **kwargs: Any) -> dict[str, str]:
        return {**original(*args, **kwargs), **choice.kernel_env()}

    session_manager.get_kernel_env = get_kernel_env
