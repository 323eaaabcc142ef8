"""``Retry``: how often a run (or a map's item) is tried again, and whether it gets more memory.

``retries=2`` retries a failed task twice with the same resources, in place (the Job's
backoff limit, or a worker pod's own loop). ``retries=Retry(2, grow_memory=2.0, max_memory="64Gi")``
also retries twice, but a task killed for running out of memory (OOMKilled) is rerun with its
memory multiplied by ``grow_memory`` (never above ``max_memory``), in a new Job of its own
(``<run>-a2``, ``<run>-a3``...) once the others have settled; in a map only the failed items
go there (:mod:`kjupyter.reruns`). Values are checked here (pure) and parsed by
:meth:`kjupyter.spec.RunSpec.with_options`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kjupyter.errors import SpecError


@dataclass(frozen=True)
class Retry:
    """``Retry(2)`` is ``retries=2``; ``Retry(2, grow_memory=2.0, max_memory="64Gi")`` grows memory on OOM."""

    retries: int = 0
    grow_memory: float | None = None
    max_memory: str | int | None = None

    def __post_init__(self) -> None:
        example = 'Retry(2, grow_memory=2.0, max_memory="64Gi")'
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise SpecError("retries", self.retries, example, "must be a whole number >= 0")
        grow = self.grow_memory
        if grow is not None:
            if isinstance(grow, bool) or not isinstance(grow, int | float) or not math.isfinite(grow):
                raise SpecError("grow_memory", grow, "2.0", "must be a number greater than 1")
            if grow <= 1:
                raise SpecError("grow_memory", grow, "2.0",
                                "must be greater than 1 (it multiplies the memory of a task that ran out of it)")  # fmt: skip
            if self.retries < 1:
                raise SpecError("retries", self.retries, example, "grow_memory needs at least one retry to grow into")
        elif self.max_memory is not None:
            raise SpecError(
                "max_memory", self.max_memory, '"64Gi"', f"it caps grow_memory: give grow_memory too, as in {example}"
            )
