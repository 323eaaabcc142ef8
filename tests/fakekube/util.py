"""Small helpers shared by the fake API server: times, names, quantities, copies."""

from __future__ import annotations

import copy
import datetime as _dt
import json
import random
import re
import uuid
from fractions import Fraction
from typing import Any, TypeVar

Obj = dict[str, Any]
T = TypeVar("T")

# Alphabet of the real apiserver's generateName / rand.String (no vowels, no 0/1/3).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_MAX_GENERATED_PREFIX = 63 - 5


def now_iso() -> str:
    """RFC 3339 second precision, the format of metadata timestamps."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_micro(ts: float | None = None) -> str:
    """RFC 3339 with microseconds (MicroTime, used by event.eventTime)."""
    d = _dt.datetime.fromtimestamp(ts, _dt.UTC) if ts is not None else _dt.datetime.now(_dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_nano(ts_ns: int) -> str:
    """RFC 3339 with exactly nine fraction digits (the kubelet's RFC3339NanoFixed), from epoch nanoseconds."""
    seconds, nanos = divmod(int(ts_ns), 1_000_000_000)
    d = _dt.datetime.fromtimestamp(seconds, _dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos:09d}Z"


def iso_seconds(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> float:
    """Parse an RFC 3339 timestamp (any precision) to epoch seconds."""
    v = value.strip()
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", v)
    if not m:
        raise ValueError(f"bad time {value!r}")
    base = _dt.datetime.fromisoformat(m.group(1) + (m.group(3) or "+00:00"))
    frac = float("0" + m.group(2)) if m.group(2) else 0.0
    return base.timestamp() + frac


def new_uid() -> str:
    return str(uuid.uuid4())


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_NAME_ALPHABET) for _ in range(n))


def generate_name(prefix: str) -> str:
    return prefix[:_MAX_GENERATED_PREFIX] + random_suffix()


def deep(obj: T) -> T:
    return copy.deepcopy(obj)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


_BIN = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DEC = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
        "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
        "P": Fraction(10**15), "E": Fraction(10**18)}
_QTY = re.compile(r"^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$")


def parse_quantity(value: Any) -> Fraction:
    """Parse a Kubernetes resource quantity ("500m", "16Gi", "1e3", 2) exactly."""
    if isinstance(value, (int, float)):
        return Fraction(value)
    m = _QTY.match(str(value).strip())
    if not m:
        raise ValueError(f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}")
    number = Fraction(m.group(1))
    if m.group(2):
        return number * Fraction(10) ** int(m.group(2)[1:])
    suffix = m.group(3) or ""
    if suffix in _BIN:
        return number * _BIN[suffix]
    return number * _DEC[suffix]


def format_quantity(value: Fraction, resource: str) -> str:
    """Format a quantity the way the API prints it back (good enough for cpu/memory/counts)."""
    if resource == "cpu" and value.denominator != 1:
        return f"{int(value * 1000)}m"
    if value.denominator != 1:
        return str(float(value))
    n = int(value)
    if resource != "cpu" and n and n % 2**10 == 0:
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            if n % _BIN[suffix] == 0:
                return f"{n // _BIN[suffix]}{suffix}"
    return str(n)


def get_path(obj: Any, *keys: Any, default: Any = None) -> Any:
    """obj[k1][k2]... or default when any level is missing or None."""
    cur = obj
    for k in keys:
        if isinstance(cur, dict):
            cur = cur.get(k)
        elif isinstance(cur, list) and isinstance(k, int) and -len(cur) <= k < len(cur):
            cur = cur[k]
        else:
            return default
        if cur is None:
            return default
    return cur


def set_condition(conditions: list[Obj], cond_type: str, status: str, reason: str | None = None,
                  message: str | None = None, *, probe: bool = False) -> bool:
    """Set a condition in place; lastTransitionTime only moves when status changes.

    Returns True when anything changed.
    """
    now = now_iso()
    for c in conditions:
        if c.get("type") == cond_type:
            changed = c.get("status") != status or c.get("reason") != reason or c.get("message") != message
            if c.get("status") != status:
                c["lastTransitionTime"] = now
            c["status"] = status
            _set_opt(c, "reason", reason)
            _set_opt(c, "message", message)
            if probe and changed:
                c["lastProbeTime"] = now
            return changed
    new: Obj = {"type": cond_type, "status": status, "lastTransitionTime": now}
    if probe:
        new["lastProbeTime"] = now
    _set_opt(new, "reason", reason)
    _set_opt(new, "message", message)
    conditions.append(new)
    return True


def _set_opt(d: Obj, key: str, value: Any) -> None:
    if value is None:
        d.pop(key, None)
    else:
        d[key] = value


def condition(obj: Obj, cond_type: str) -> Obj | None:
    for c in get_path(obj, "status", "conditions", default=[]):
        if c.get("type") == cond_type:
            return dict(c)
    return None


def condition_true(obj: Obj, cond_type: str) -> bool:
    c = condition(obj, cond_type)
    return bool(c and c.get("status") == "True")


def compress_indexes(indexes: set[int] | list[int]) -> str:
    """{0,1,2,3,5} -> "0-3,5" (format of Job status.completedIndexes)."""
    out: list[str] = []
    items = sorted(set(indexes))
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(out)


def parse_indexes(text: str | None) -> set[int]:
    result: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            result.update(range(int(a), int(b) + 1))
        else:
            result.add(int(part))
    return result
