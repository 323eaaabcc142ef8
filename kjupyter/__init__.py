"""kjupyter: run a notebook cell or a Python function as a Kubernetes Job.

>>> from kjupyter import remote
>>> @remote(memory="4Gi")
... def square(x): return x * x
>>> square.map(range(4))   # doctest: +SKIP
[0, 1, 4, 9]

Heavy parts (cloudpickle, backends, widgets, the kubernetes client) load on
first use, so ``import kjupyter`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kjupyter.errors import (
    ApiError,
    BackendError,
    ConfigError,
    FileError,
    IntegrityError,
    KjupyterError,
    RemoteError,
    RemoteTraceback,
    RequestTimedOut,
    RunCancelled,
    RunFailed,
    RunTimeout,
    SerializationError,
    SpecError,
    StoreError,
    UnknownOptionError,
    VersionMismatchError,
)
from kjupyter.retry import Retry

__version__ = "0.1.0"
__all__ = [
    "ApiError",
    "BackendError",
    "ConfigError",
    "FileError",
    "IntegrityError",
    "KjupyterError",
    "RemoteError",
    "RemoteTraceback",
    "RequestTimedOut",
    "Retry",
    "RunCancelled",
    "RunFailed",
    "RunTimeout",
    "SerializationError",
    "SpecError",
    "StoreError",
    "UnknownOptionError",
    "VersionMismatchError",
    "__version__",
    "attach",
    "load_ipython_extension",
    "remote",
    "whoami",
]  # fmt: skip

if TYPE_CHECKING:
    from kjupyter.decorator import remote
    from kjupyter.futures import RunFuture
    from kjupyter.identity import whoami


def __getattr__(name: str) -> Any:
    if name == "remote":
        from kjupyter.decorator import remote

        return remote
    if name == "whoami":
        from kjupyter.identity import whoami

        return whoami
    raise AttributeError(f"module 'kjupyter' has no attribute {name!r}")


def attach(run_id: str, cluster: str | None = None) -> RunFuture:
    """A future for a run started earlier (for example with ``--detach``), from any process."""
    from kjupyter.session import get_session

    return get_session().attach(run_id, cluster)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension, ``kjupyter/labextension`` (``jupyter labextension develop .``).

    A wheel also installs it as shared data in ``share/jupyter/labextensions/kjupyter``.
    """
    return [{"src": "labextension", "dest": "kjupyter"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The Jupyter server extension (REST routes under ``/kjupyter/``) lives in :mod:`kjupyter.server`."""
    return [{"module": "kjupyter.server"}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext kjupyter``: registers ``%%kube`` and ``%kube``."""
    from kjupyter.notebook.magics import register

    register(ipython)
