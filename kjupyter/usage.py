"""What a run used, and what that is estimated to cost: resource-seconds, GPU-hours, prices.

A run's usage is a mapping of resource-seconds, summed over its pods (or local task processes):

- ``cpu``: core-seconds of the cpu requested, ``memory_gib``: GiB-seconds of the memory requested;
- ``gpu.<TYPE>``: GPU-seconds of GPUs of that type (``gpu`` alone: GPUs of no named type).

A profile may declare prices per hour (``prices = { gpu.A100 = 3.67, cpu = 0.04, memory_gib = 0.005 }``,
optionally ``currency = "EUR"``, default ``USD``): :func:`parse_prices` checks them, :func:`estimate`
turns usage into an estimated cost and says which resources used had no price. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kjupyter.errors import ConfigError

RESOURCES = ("cpu", "memory_gib", "gpu")
DEFAULT_CURRENCY = "USD"


@dataclass(frozen=True)
class Prices:
    """Prices per hour of one resource unit (``gpu.A100``: one A100 GPU for an hour)."""

    per_hour: Mapping[str, float] = field(default_factory=dict)
    currency: str = DEFAULT_CURRENCY

    def __bool__(self) -> bool:
        return bool(self.per_hour)


def parse_prices(raw: Any, where: str, gpu_types: Mapping[str, Any]) -> Prices:
    """Check a profile's ``prices`` table (``where`` names it for errors); the GPU types must be the profile's."""
    if raw is None:
        return Prices()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: prices must be a table, e.g. prices = {{ gpu.A100 = 3.67, cpu = 0.04 }}")
    out: dict[str, float] = {}
    currency = raw.get("currency", DEFAULT_CURRENCY)
    if not isinstance(currency, str) or not currency.strip():
        raise ConfigError(f'{where}: prices.currency must be a name such as "USD", got {currency!r}')
    for key, value in raw.items():
        if key == "currency":
            continue
        if key == "gpu" and isinstance(value, Mapping):
            for kind, price in value.items():
                if kind not in gpu_types:
                    raise ConfigError(
                        f"{where}: prices.gpu.{kind} names a GPU type this cluster does not offer (its GPU types: "
                        f"{', '.join(sorted(gpu_types)) or 'none'}); describe it in [gpus.{kind}] or remove the price"
                    )
                out[f"gpu.{kind}"] = _price(f"gpu.{kind}", price, where)
        elif key in RESOURCES:
            out[key] = _price(key, value, where)
        else:
            raise ConfigError(
                f"{where}: unknown price {key!r}; prices are per hour of cpu (a core), memory_gib (a GiB), "
                "gpu (any GPU) or gpu.TYPE (a GPU of that type), and currency"
            )
    return Prices(out, currency.strip())


def _price(key: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where}: prices.{key} must be a number of at least 0 (per hour), got {value!r}")
    return float(value)


def gpu_hours(usage: Mapping[str, float]) -> float:
    """GPU-hours of every type together."""
    return sum(v for k, v in usage.items() if k == "gpu" or k.startswith("gpu.")) / 3600


def estimate(usage: Mapping[str, float], prices: Prices) -> tuple[float | None, list[str]]:
    """``(cost, unpriced)``: the estimated cost (None without prices) and the resources used that have no price.

    A GPU of a type without its own price takes the ``gpu`` price when there is one.
    """
    if not prices:
        return None, []
    total, unpriced = 0.0, []
    for key, seconds in sorted(usage.items()):
        if seconds <= 0:
            continue
        price = prices.per_hour.get(key)
        if price is None and key.startswith("gpu."):
            price = prices.per_hour.get("gpu")
        if price is None:
            unpriced.append(key)
            continue
        total += price * seconds / 3600
    return total, unpriced


def summary(usage: Mapping[str, float] | None, prices: Prices) -> dict[str, Any]:
    """The fields ``kjupyter jobs --json`` and the lab show: GPU-hours, cost, currency, unpriced resources."""
    if not usage:
        return {"gpu_hours": None, "cost": None, "currency": None, "unpriced": []}
    cost, unpriced = estimate(usage, prices)
    return {
        "gpu_hours": round(gpu_hours(usage), 6),
        "cost": None if cost is None else round(cost, 6),
        "currency": prices.currency if cost is not None else None,
        "unpriced": unpriced,
    }


def table_cells(row: Mapping[str, Any]) -> list[str]:
    """GPU-H and COST of a :func:`summary` in ``kjupyter jobs``: ``0.52``, ``1.93`` (the currency is in the header);
    ``-`` where nothing was recorded or there are no prices; a ``+`` after a cost when a resource used has no price."""
    hours = "-" if row["gpu_hours"] is None else f"{row['gpu_hours']:.2f}"
    cost = "-" if row["cost"] is None else f"{row['cost']:.2f}" + ("+" if row["unpriced"] else "")
    return [hours, cost]


def describe(usage: Mapping[str, float] | None, prices: Prices) -> str:
    """One short line: ``GPU-h 0.52 (A100) · est. cost 1.93 USD`` (empty when nothing was recorded)."""
    if not usage:
        return ""
    kinds = sorted(k.partition(".")[2] or "any" for k, v in usage.items() if k.startswith("gpu") and v > 0)
    parts = [f"GPU-h {gpu_hours(usage):.2f}" + (f" ({', '.join(kinds)})" if kinds else "")]
    cpu = usage.get("cpu", 0.0)
    if cpu:
        parts.append(f"cpu-h {cpu / 3600:.2f}")
    cost, unpriced = estimate(usage, prices)
    if cost is not None:
        parts.append(
            f"est. cost {cost:.2f} {prices.currency}" + (f" ({', '.join(unpriced)} unpriced)" if unpriced else "")
        )
    return " · ".join(parts)
