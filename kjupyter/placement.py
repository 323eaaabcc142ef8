"""Where a GPU run can go: a fallback list matched across the configured clusters, and what is free.

``gpu=["H100:1", "A100:1", "L4:2"]`` is an ordered preference list: each GPU type, in order,
on every configured cluster (profile) that offers it (``[clusters.NAME.gpus.TYPE]``), the
session's cluster first. :func:`candidates` turns it into that ordered list of places;
:mod:`kjupyter.failover` moves a pending run along it. :func:`advice` and :func:`gpus_table`
turn the clusters' :class:`~kjupyter.backends.base.GpuReport` into what ``kjupyter gpus`` and the
diagnosis of a GPU run that cannot be scheduled say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kjupyter.backends.base import GpuReport
from kjupyter.config import Config, Profile
from kjupyter.errors import ConfigError
from kjupyter.spec import RunSpec


@dataclass(frozen=True)
class Place:
    """One entry of a fallback list: a cluster, a GPU type and count there, and the run's spec on it."""

    profile: Profile
    gpu_type: str
    count: int
    spec: RunSpec = field(default_factory=RunSpec)

    @property
    def gpu(self) -> str:
        return f"{self.gpu_type}:{self.count}"

    @property
    def label(self) -> str:
        return f"{self.profile.name} ({self.gpu_type})"


def offered(config: Config) -> dict[str, list[str]]:
    """GPU type -> the profiles that offer it, in configuration order."""
    out: dict[str, list[str]] = {}
    for profile in config.profiles.values():
        for gpu_type in profile.gpus:
            out.setdefault(gpu_type, []).append(profile.name)
    return out


def offered_text(config: Config) -> str:
    """``A100 (gpu-east, gpu-west), L4 (gpu-west)``, or ``none``."""
    return ", ".join(f"{t} ({', '.join(where)})" for t, where in sorted(offered(config).items())) or "none"


def candidates(config: Config, choices: Sequence[tuple[int, str]], *, cluster: str | None = None,
               first: str | None = None) -> list[Place]:  # fmt: skip
    """Every (cluster, GPU type) of the preference list, in order; ``cluster``: only there; ``first``: asked first.

    An unknown type (offered by no configured cluster) is a ConfigError naming what is offered, and where.
    """
    wanted = ", ".join(f"{t}:{n}" for n, t in choices)
    known = offered(config)
    unknown = [t for _, t in choices if t not in known]
    if unknown:
        raise ConfigError(
            f"no configured cluster offers {' or '.join(dict.fromkeys(unknown))} GPUs (gpu=[{wanted}]); the GPU "
            f"types offered are {offered_text(config)}: fix the list, or describe those nodes in a profile's "
            "[clusters.NAME.gpus.TYPE] table"
        )
    profiles = list(config.profiles.values())
    if cluster:
        profiles = [config.profile(cluster)]
    elif first in config.profiles:
        profiles.sort(key=lambda p: p.name != first)  # (stable: the others keep the configuration's order)
    places = [Place(p, t, n) for n, t in choices for p in profiles if p.offers_gpu(t)]
    if not places:
        only = profiles[0]
        raise ConfigError(
            f"cluster {only.name!r} offers none of gpu=[{wanted}] (its GPU types: {', '.join(only.gpus) or 'none'}); "
            f"name another cluster, or none, so the list is matched on every cluster ({offered_text(config)})"
        )
    return places


def advice(reports: Sequence[GpuReport], gpu_type: str, count: int, cluster: str) -> str:
    """ "No A100 free on gpu-east; gpu-west has 3 L4 free: `cluster='gpu-west', gpu='L4:1'`." from the reports."""
    here = next((r for r in reports if r.cluster == cluster), None)
    free_here = here.free(gpu_type) if here is not None else None
    if free_here is None:
        why = here.note if here is not None and here.note else "it could not be asked"
        head = f"The free {gpu_type} GPUs on {cluster} are not known ({why})"
    else:
        head = f"No {gpu_type} free on {cluster}" if free_here < count else f"{free_here} {gpu_type} free on {cluster}"
    options = [(c.free, r.cluster, c.gpu_type) for r in reports for c in r.counts or ()
               if c.free is not None and c.free >= count and (r.cluster, c.gpu_type) != (cluster, gpu_type)]  # fmt: skip
    if options:
        free, where, kind = max(options, key=lambda o: o[0])
        return f"{head}; {where} has {free} {kind} free: `cluster='{where}', gpu='{kind}:{count}'`."
    unknown = [r.cluster for r in reports if r.counts is None and r.configured and r.cluster != cluster]
    rest = f" (not counted: {', '.join(unknown)})" if unknown else ""
    return f"{head}; no other configured cluster has {count} GPU(s) of a type it offers free right now{rest}."


def gpus_table(reports: Sequence[GpuReport]) -> str:
    """``kjupyter gpus`` / ``%kube gpus``: one row per profile and GPU type, then one line per note."""
    rows = [["PROFILE", "GPU", "NODES", "ALLOCATABLE", "FREE"]]
    notes = []
    for r in reports:
        if r.counts:
            rows += [[r.cluster, c.gpu_type, str(c.nodes), str(c.allocatable), "?" if c.free is None else str(c.free)]
                     for c in r.counts]  # fmt: skip
        else:
            rows.append([r.cluster, ",".join(r.configured) or "-", "?" if r.configured else "-",
                         "?" if r.configured else "-", "?" if r.configured else "-"])  # fmt: skip
        if r.note:
            notes.append(f"{r.cluster}: {r.note}.")
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines + notes)
