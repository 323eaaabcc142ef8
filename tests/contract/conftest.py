"""Captures the real KUBECONFIG at import, before the autouse fixture removes it from the environment."""

from __future__ import annotations

import os

REAL_KUBECONFIG = os.environ.get("KUBECONFIG", "")
