"""The failure-first parts of a map's view: its status words, a bar split by outcome, the failed items.

Pure HTML (no front-end code): it renders the same in a live notebook and in a saved one. The status
reads "27 ok · 3 raised (returned)" or "stopped at item 7: ValueError"; the bar has one segment each
for done, failed, cancelled and running items; the failed items are listed (index, a short summary of
the input, the exception line), each a ``<details>`` that opens on that item's own log lines and
its traceback (the user's frames).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable

from kjupyter import failure_text as ft
from kjupyter.futures import MapFuture, RunFuture
from kjupyter.notebook.text_view import map_status

FAILED_SHOWN = 20  # failed items listed in the widget
ITEM_LOG_LINES = 40  # log lines of each failed item in its <details>

# JupyterLab's theme variables (light and dark), with fallbacks for other front ends.
COLOURS = {
    "done": "var(--jp-success-color1, #2e7d32)",
    "failed": "var(--jp-error-color1, #d32f2f)",
    "cancelled": "var(--jp-layout-color3, #9e9e9e)",
    "running": "var(--jp-brand-color1, #1976d2)",
}


def counts(future: RunFuture) -> dict[str, int]:
    """Settled items by outcome (cancelled items are not failures), with ``total``."""
    found = getattr(future, "counts", None)
    return dict(found) if found else {"total": future.total, "succeeded": 0, "failed": 0, "cancelled": 0}


def bar_html(c: dict[str, int], running: int = 0) -> str:
    """A bar in segments: done, failed, cancelled, running (failed items do not turn the whole bar red)."""
    total = max(c["total"], 1)
    widths = {"done": c["succeeded"], "failed": c["failed"], "cancelled": c["cancelled"], "running": running}
    segments = "".join(
        f"<span class='kjupyter-bar-{name}' title='{n} {name}' style='display:inline-block;height:100%;"
        f"width:{100 * n / total:.3f}%;background:{COLOURS[name]}'></span>"
        for name, n in widths.items()
        if n
    )
    data = " ".join(f"data-{name}='{n}'" for name, n in widths.items())
    return (
        f"<div class='kjupyter-bar' {data} style='width:40%;min-width:10em;height:0.8em;display:inline-block;"
        f"vertical-align:middle;background:var(--jp-layout-color2, #eee);overflow:hidden;border-radius:2px;"
        f"white-space:nowrap;font-size:0'>{segments}</div>"
    )


def counts_html(future: RunFuture, *, ended: bool, running: int = 0) -> str:
    c = counts(future)
    failing = c["failed"] > 0 or getattr(future, "stopped_at", None) is not None
    colour = COLOURS["failed"] if failing else "inherit"
    words = html.escape(map_status(future, ended=ended, running=running))
    return (f"{bar_html(c, 0 if ended else running)} <span class='kjupyter-counts' style='color:{colour}'>"
            f"{words}</span>")  # fmt: skip


def failed_html(future: RunFuture, item_log: Callable[[int], Iterable[str]]) -> str:
    """The failed items, each a <details> with the exception and the item's own log lines."""
    failures = [(i, e) for i, e in future.failures() if i is not None]
    if not failures or not isinstance(future, MapFuture):
        return ""
    rows = []
    for index, exc in failures[:FAILED_SHOWN]:
        lines = list(item_log(index))[-ITEM_LOG_LINES:]
        log = html.escape("\n".join(lines)) if lines else "(no log lines from this item)"
        remote = str(getattr(exc, "remote_traceback", "") or "")
        if remote:  # the item's own frames (the log has one line for its exception)
            log += "\n" + html.escape("\n".join(ft.clean_traceback(remote, ft.ipython_name)))
        rows.append(
            f"<details class='kjupyter-failed-item' data-index='{index}'><summary>"
            f"<b>item {index}</b> ({html.escape(future.describe(index))}): "
            f"<span style='color:{COLOURS['failed']}'>{html.escape(ft.first_line_of(exc))}</span></summary>"
            f"<pre style='margin:0 0 0 1.5em;white-space:pre-wrap'>{log}</pre></details>"
        )
    more = f"<div>… and {len(failures) - FAILED_SHOWN} more (f.failures() has them all)</div>" if len(
        failures) > FAILED_SHOWN else ""  # fmt: skip
    return f"<div class='kjupyter-failed'><div>Failed items ({len(failures)}):</div>{''.join(rows)}{more}</div>"
