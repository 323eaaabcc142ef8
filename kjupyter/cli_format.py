"""How the command line prints things: tables, times, durations, rendered objects (pure: no I/O)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

from kjupyter.backends.base import RunInfo


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _when(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def format_elapsed(seconds: float | None) -> str:
    """A run's duration as ``kjupyter jobs`` shows it: ``12s``, ``3m04s``, ``2h05m``, ``3d04h`` (``-``: unknown)."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def run_duration(run: RunInfo, now: float) -> float | None:
    """Created to finished; for a run still going, created to ``now``; None when not known."""
    if not run.created:
        return None
    if run.finished:
        return max(0.0, run.finished - run.created)
    if run.phase.finished:  # ended without saying when (the process that ran it died)
        return None
    return max(0.0, now - run.created)  # (a cluster's clock may be a little ahead of ours)


def render_text(objects: list[dict[str, Any]], *, as_json: bool = False) -> str:
    """Rendered objects as ``kjupyter render`` prints them: YAML documents separated by ``---``, or JSON.

    JSON keeps the earlier shape: one object alone, several as a list.
    """
    if as_json:
        return json.dumps(objects if len(objects) > 1 else objects[0], indent=2)
    import yaml

    # A class of its own (yaml.SafeDumper stays as it is), with no &anchors for objects the manifests share.
    dumper: Any = type("Dumper", (yaml.SafeDumper,), {"ignore_aliases": lambda self, data: True})

    def text(representer: Any, value: str) -> Any:
        return representer.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    dumper.add_representer(str, text)  # multi-line strings (scripts) as literal blocks, as one writes them
    out: str = yaml.dump_all(objects, Dumper=dumper, sort_keys=False, default_flow_style=False, width=120)
    return out.rstrip("\n")


def map_counts(r: RunInfo) -> str:
    """A map's items as the widget counts them: ``27/30 (3 failed)``, ``6/30 (1 failed, 23 cancelled)``."""
    extra = [f"{n} {what}" for n, what in ((r.failed, "failed"), (r.cancelled, "cancelled")) if n]
    return f"{r.succeeded}/{r.total}" + (f" ({', '.join(extra)})" if extra else "")
