"""Safe, collision-free names: run ids, Kubernetes object names and label values.

Every name kjupyter invents comes from here, so every layer agrees on what a
valid name looks like (DNS-1123 labels: lower-case alphanumerics and '-',
at most 63 characters, starting and ending with an alphanumeric).
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import uuid

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_RUN_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$")
# Room for a Job's pod suffix ("-<index>-xxxxx") inside the 63-character limit.
_PREFIX_MAX = 36

SESSION_ID = uuid.uuid4().hex[:12]


def slug(text: str, max_len: int = 63, fallback: str = "x") -> str:
    """``"Train Model_v2!"`` -> ``"train-model-v2"``: a valid DNS-1123 label or label value."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return out or fallback


def new_run_id(name: str | None) -> str:
    """A run id such as ``train-k3x9q2``: readable, unique, and a valid Job name."""
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    return f"{slug(name or 'run', _PREFIX_MAX, 'run')}-{suffix}"


def is_run_id(text: str) -> bool:
    return bool(_RUN_ID_RE.match(text))


def current_user() -> str:
    """The user label: JupyterHub's user inside a hub, else the login name."""
    user = os.environ.get("JUPYTERHUB_USER") or os.environ.get("KJUPYTER_USER")
    if not user:
        try:
            user = getpass.getuser()
        except Exception:  # no passwd entry in some containers
            user = "unknown"
    return user


def label_value(text: str) -> str:
    """A label value (may be empty; <= 63 chars; alphanumerics, '-', '_', '.')."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63]
    return out.strip("-_.")
