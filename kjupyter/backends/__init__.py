"""Backends own all I/O with a cluster; everything above speaks :class:`~kjupyter.backends.base.Backend`."""

from __future__ import annotations

from kjupyter.backends.base import Backend, RunInfo, SubmitRequest

__all__ = ["Backend", "RunInfo", "SubmitRequest"]
