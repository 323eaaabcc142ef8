"""Which cluster a run goes to when it names none: one precedence, written in one place.

The first of these that applies wins:

1. ``cluster=`` on the call (``--cluster`` on the command line);
2. ``%kube use NAME`` in this kernel;
3. the cluster chosen in JupyterLab's status bar, for the kernels of that lab only;
4. ``KJUPYTER_CLUSTER``;
5. ``default`` in the configuration;
6. the built-in ``local``.

The lab's choice belongs to one Jupyter server. The server keeps it in a file of its own (in its
runtime directory, named after its port) and gives that file's path to the kernels it starts, in
:data:`ENV`. A kernel reads the file at each run, so a switch in the lab applies to kernels already
open. Any other process ignores it, even one that inherited the variable (a script in a terminal,
``kjupyter`` run in a lab terminal, a subprocess of a kernel): for them ``KJUPYTER_CLUSTER`` and the
configuration decide, as they do everywhere else.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kjupyter.config import Config

ENV = "KJUPYTER_LAB_CLUSTER_FILE"
PRECEDENCE = (
    "cluster= on the call (--cluster)",
    "%kube use NAME in the kernel",
    "the cluster chosen in JupyterLab's status bar (that lab's kernels only)",
    "KJUPYTER_CLUSTER",
    "`default` in the configuration",
    "the built-in local",
)
NAMED, KUBE_USE, LAB = "named on the call", "`%kube use` in this kernel", "chosen in JupyterLab's status bar"


@dataclass(frozen=True)
class Choice:
    """The cluster a run that names none goes to, and what chose it (a phrase such as ``KJUPYTER_CLUSTER=gpu``)."""

    name: str
    source: str
    ignored_lab_choice: str | None = None  # a lab choice that names no configured cluster (said once by the caller)


def in_kernel() -> bool:
    """Whether this process is a running IPython kernel (ipykernel's application was started)."""
    kernelapp = sys.modules.get("ipykernel.kernelapp")
    return kernelapp is not None and bool(kernelapp.IPKernelApp.initialized())


def lab_file(env: Mapping[str, str] | None = None) -> Path | None:
    """The file of the lab that started this kernel (from :data:`ENV`), or None."""
    value = (os.environ if env is None else env).get(ENV, "")
    return Path(value) if value else None


def read_lab_choice(path: Path | None) -> str | None:
    """The name in a lab's choice file, or None when none was chosen (no file, empty or unreadable)."""
    if path is None:
        return None
    try:
        name = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name or None


def write_lab_choice(path: Path, name: str | None) -> None:
    """Choose ``name`` (None: forget the choice), atomically, so a kernel never reads half a name."""
    if name is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(name + "\n")
    os.replace(tmp, path)


def choose(config: Config, *, named: str | None = None, kube_use: str | None = None,
           env: Mapping[str, str] | None = None, kernel: bool | None = None) -> Choice:  # fmt: skip
    """Apply the precedence (module docstring); ``kernel`` defaults to :func:`in_kernel`."""
    if named:
        return Choice(named, NAMED)
    if kube_use:
        return Choice(kube_use, KUBE_USE)
    ignored = None
    if in_kernel() if kernel is None else kernel:
        path = lab_file(env)
        chosen = read_lab_choice(path)
        if chosen is not None and chosen in config.profiles:
            return Choice(chosen, f"{LAB} ({path})")
        ignored = chosen
    return Choice(config.default, config.default_source, ignored)
