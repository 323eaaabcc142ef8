"""What a run asks for, as frozen values: parsed, validated, and pure.

``RunSpec.build(cpu="500m", memory="16Gi", gpu="A100:2", timeout="1h30m")``
turns the user's friendly values into normalised numbers once, so every
later layer (manifests, the local backend, the widgets) reads the same thing.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kjupyter.errors import SpecError, UnknownOptionError
from kjupyter.retry import Retry

_MEMORY_UNITS = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_MEMORY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kMGTPE]i?)?\s*$")
_CPU_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(m?)\s*$")
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS1123_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_GPU_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_cpu(value: object, field_name: str = "cpu") -> int:
    """Return CPU as millicores: ``"500m"`` -> 500, ``2`` -> 2000, ``"1.5"`` -> 1500."""
    if isinstance(value, bool):
        raise SpecError(field_name, value, '"500m" or 2')
    if isinstance(value, int | float):
        millis = float(value) * 1000
    elif isinstance(value, str) and (m := _CPU_RE.match(value)):
        millis = float(m.group(1)) * (1 if m.group(2) else 1000)
    else:
        raise SpecError(field_name, value, '"500m" or 2', "expected cores or millicores")
    if not math.isfinite(millis) or millis < 1 or millis != int(millis):
        raise SpecError(field_name, value, '"500m" or 2', "must be at least 1m in whole millicores")
    return int(millis)


def parse_memory(value: object, field_name: str = "memory") -> int:
    """Return memory in bytes: ``"16Gi"``, ``"512Mi"``, ``"1G"`` or a number of bytes."""
    if isinstance(value, bool):
        raise SpecError(field_name, value, '"16Gi"')
    if isinstance(value, int):
        number, unit = float(value), ""
    elif isinstance(value, str) and (m := _MEMORY_RE.match(value)):
        number, unit = float(m.group(1)), m.group(2) or ""
    else:
        why = "units are Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T"
        if isinstance(value, str) and re.search(r"[0-9]\s*[kKmMgGtT][bB]$", value):
            why = "write Gi/Mi (binary) or G/M (decimal), not GB/MB"
        raise SpecError(field_name, value, '"16Gi"', why)
    total = number * _MEMORY_UNITS[unit]
    if total < 1 or total != int(total):
        raise SpecError(field_name, value, '"16Gi"', "must be a positive whole number of bytes")
    return int(total)


def parse_duration(value: object, field_name: str = "timeout") -> float:
    """Return seconds from ``90``, ``"90s"``, ``"1h30m"``, ``"2d"`` or a ``timedelta``."""
    if isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip() and (m := _DURATION_RE.match(value.strip())):
        d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = d * 86400 + h * 3600 + mi * 60 + s
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        seconds = float(value)
    else:
        raise SpecError(field_name, value, '"1h30m" or 600', "expected seconds or a duration like 45m, 2h, 1d")
    if not math.isfinite(seconds) or seconds <= 0:
        raise SpecError(field_name, value, '"1h30m" or 600', "must be positive")
    return seconds


def parse_window(value: object, field_name: str = "keep_warm") -> float:
    """Seconds a warm worker waits for its next run: ``0`` (off), ``90``, ``"2m"``; at most a day."""
    if value in (0, "0", False) or (isinstance(value, _dt.timedelta) and not value):
        return 0.0
    seconds = parse_duration(value, field_name)
    if seconds > 86400:
        raise SpecError(field_name, value, '"2m" or 0', "a warm worker waits at most a day (1d)")
    return seconds


def parse_gpu(value: object, gpu_type: str | None = None) -> tuple[int, str | None]:
    """Return ``(count, type)`` from ``1``, ``"2"``, ``"A100"`` or ``"A100:2"``."""
    example = '1 or "A100:2"'
    count: int
    if isinstance(value, bool):
        raise SpecError("gpu", value, example)
    if isinstance(value, int):
        count = value
    elif isinstance(value, str):
        text = value.strip()
        kind, _, num = text.rpartition(":") if ":" in text else ("", "", text)
        if not num.isdigit():  # "A100" means one A100
            kind, num = text, "1"
        if kind and not _GPU_TYPE_RE.match(kind):
            raise SpecError("gpu", value, example, "the GPU type must be a word like A100 or H100")
        if kind and gpu_type and kind != gpu_type:
            raise SpecError("gpu", value, example, f"conflicts with gpu_type={gpu_type!r}")
        gpu_type = kind or gpu_type
        count = int(num)
    else:
        raise SpecError("gpu", value, example)
    if count < 0:
        raise SpecError("gpu", value, example, "must not be negative")
    if gpu_type is not None and not _GPU_TYPE_RE.match(gpu_type):
        raise SpecError("gpu_type", gpu_type, '"A100"')
    if gpu_type and count == 0:
        count = 1
    return count, gpu_type


def gpu_choices(value: object) -> tuple[tuple[int, str], ...] | None:
    """An ordered GPU preference list, ``["H100:1", "A100:1"]`` or ``"H100:1,A100:1"``: ``((1, "H100"), (1, "A100"))``.

    None for a single choice (``1``, ``"A100:2"``, a list of one), which means what it always meant.
    Every choice of a list names its GPU type: a fallback is a type to fall back to.
    """
    if isinstance(value, str) and "," in value:
        value = [part for part in value.split(",")]
    if not isinstance(value, list | tuple):
        return None
    example = '["H100:1", "A100:1"]'
    if not value:
        raise SpecError("gpu", value, example, "a GPU preference list needs at least one GPU type")
    out: list[tuple[int, str]] = []
    for item in value:
        count, kind = parse_gpu(item.strip() if isinstance(item, str) else item)
        if not kind or not count or (isinstance(item, str) and re.search(r":\s*0+\s*$", item)):
            raise SpecError("gpu", item, example, "each choice of a GPU list is TYPE or TYPE:N with N >= 1")
        out.append((count, kind))
    return tuple(out) if len(out) > 1 else None


def format_cpu(millis: int) -> str:
    """Kubernetes quantity for millicores: 2000 -> "2", 500 -> "500m"."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(nbytes: int) -> str:
    """Kubernetes quantity for bytes, in the largest binary unit that divides it."""
    for unit in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        if nbytes % _MEMORY_UNITS[unit] == 0:
            return f"{nbytes // _MEMORY_UNITS[unit]}{unit}"
    return str(nbytes)


def format_duration(seconds: float) -> str:
    """Short human form: 5400 -> "1h30m", 42.5 -> "42.5s"."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((h, "h"), (m, "m"), (s, "s")) if n) or "0s"


@dataclass(frozen=True)
class Resources:
    """Compute a run asks for. ``None`` means "the profile's default"."""

    cpu_millis: int | None = None
    memory_bytes: int | None = None
    gpu: int = 0
    gpu_type: str | None = None

    @property
    def cpu(self) -> str | None:
        return None if self.cpu_millis is None else format_cpu(self.cpu_millis)

    @property
    def memory(self) -> str | None:
        return None if self.memory_bytes is None else format_memory(self.memory_bytes)


# Options a user can pass to @remote(...), .with_options(...) or %%kube.
OPTION_NAMES = (
    "cluster", "name", "cpu", "memory", "gpu", "gpu_type", "image", "timeout", "retries",
    "env", "secrets", "packages", "parallelism", "pending_timeout", "items_per_pod", "keep_warm", "cache",
)  # fmt: skip


@dataclass(frozen=True)
class RunSpec:
    """Everything a run asks for, validated. Build with :meth:`build` or :meth:`with_options`."""

    cluster: str | None = None
    name: str | None = None
    resources: Resources = field(default_factory=Resources)
    image: str | None = None
    timeout: float | None = None
    retries: int = 0
    env: tuple[tuple[str, str], ...] = ()
    secrets: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    parallelism: int | None = None
    pending_timeout: float | None = None
    items_per_pod: int | None = None  # 1: one pod per map item; None: at most ``parallelism`` worker pods
    keep_warm: float | None = None  # seconds a call's pod waits for the next compatible run; None: the profile's
    grow_memory: float | None = None  # retries=Retry(n, grow_memory=...): memory x this after an OOM kill
    max_memory_bytes: int | None = None  # ... never above this (None: no cap)
    cache: bool = False  # reuse the stored result of an identical earlier call (kjupyter.cache)

    @classmethod
    def build(cls, **options: Any) -> RunSpec:
        return cls().with_options(**options)

    def with_options(self, **options: Any) -> RunSpec:
        """A copy with ``options`` parsed and applied; ``None`` values are ignored."""
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise UnknownOptionError(unknown[0], OPTION_NAMES)
        opts = {k: v for k, v in options.items() if v is not None}
        changes: dict[str, Any] = {}
        res = self.resources
        if "cpu" in opts:
            res = dataclasses.replace(res, cpu_millis=parse_cpu(opts["cpu"]))
        if "memory" in opts:
            res = dataclasses.replace(res, memory_bytes=parse_memory(opts["memory"]))
        if "gpu" in opts or "gpu_type" in opts:
            gpu = opts.get("gpu", res.gpu)
            if isinstance(gpu, list | tuple) or (isinstance(gpu, str) and "," in gpu):
                choices = gpu_choices(gpu)  # (the session places a list: here it is checked, and its first kept)
                gpu = f"{choices[0][1]}:{choices[0][0]}" if choices else gpu[0]
            count, kind = parse_gpu(gpu, opts.get("gpu_type"))
            res = dataclasses.replace(res, gpu=count, gpu_type=kind if count else None)
        changes["resources"] = res
        if "cluster" in opts:
            changes["cluster"] = _text("cluster", opts["cluster"], '"gpu-a100"')
        if "name" in opts:
            changes["name"] = _text("name", opts["name"], '"train"')
        if "image" in opts:
            image = _text("image", opts["image"], '"python:3.11-slim"')
            if any(c.isspace() for c in image):
                raise SpecError("image", image, '"python:3.11-slim"', "must not contain spaces")
            changes["image"] = image
        if "timeout" in opts:
            changes["timeout"] = parse_duration(opts["timeout"], "timeout")
        if "pending_timeout" in opts:
            changes["pending_timeout"] = parse_duration(opts["pending_timeout"], "pending_timeout")
        if "keep_warm" in opts:
            changes["keep_warm"] = parse_window(opts["keep_warm"])
        if "retries" in opts:
            changes.update(_retries(opts["retries"]))
        if "parallelism" in opts:
            changes["parallelism"] = _count("parallelism", opts["parallelism"], minimum=1, example="50")
        if "items_per_pod" in opts:
            changes["items_per_pod"] = _count("items_per_pod", opts["items_per_pod"], minimum=1, example="1")
        if "cache" in opts:
            if not isinstance(opts["cache"], bool):
                raise SpecError("cache", opts["cache"], "True", "must be True or False")
            changes["cache"] = opts["cache"]
        if "env" in opts:
            changes["env"] = tuple(sorted({**dict(self.env), **_env(opts["env"])}.items()))
        if "secrets" in opts:
            changes["secrets"] = _names("secrets", opts["secrets"], '["aws-creds"]', _DNS1123_RE)
        if "packages" in opts:
            changes["packages"] = _names("packages", opts["packages"], '["scikit-learn==1.5"]', None)
        spec = dataclasses.replace(self, **changes)
        _check_cap(spec)
        return spec

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def summary(self) -> str:
        """One line for logs and widgets: ``cpu=2 memory=16Gi gpu=A100:1``."""
        parts = []
        r = self.resources
        if r.cpu:
            parts.append(f"cpu={r.cpu}")
        if r.memory:
            parts.append(f"memory={r.memory}")
        if r.gpu:
            parts.append(f"gpu={r.gpu_type + ':' if r.gpu_type else ''}{r.gpu}")
        if self.timeout:
            parts.append(f"timeout={format_duration(self.timeout)}")
        return " ".join(parts)


def _retries(value: object) -> dict[str, Any]:
    """``retries=2`` or ``retries=Retry(2, grow_memory=2.0, max_memory="64Gi")`` (see :mod:`kjupyter.retry`)."""
    if not isinstance(value, Retry):
        return {"retries": _count("retries", value, minimum=0, example="2"), "grow_memory": None,
                "max_memory_bytes": None}  # fmt: skip
    cap = None if value.max_memory is None else parse_memory(value.max_memory, "max_memory")
    return {"retries": value.retries, "grow_memory": value.grow_memory, "max_memory_bytes": cap}


def _check_cap(spec: RunSpec) -> None:
    memory, cap = spec.resources.memory_bytes, spec.max_memory_bytes
    if spec.grow_memory and cap is not None and memory is not None and cap < memory:
        raise SpecError("max_memory", format_memory(cap), f'"{format_memory(memory * 4)}"',
                        f"the cap is below the memory the run asks for ({format_memory(memory)}), so it could "
                        "never grow; give a max_memory at least as large as memory=")  # fmt: skip


def _text(field_name: str, value: object, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(field_name, value, example, "must be a non-empty string")
    return value.strip()


def _count(field_name: str, value: object, *, minimum: int, example: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(field_name, value, example, f"must be a whole number >= {minimum}")
    return value


def _env(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise SpecError("env", value, '{"LOG_LEVEL": "debug"}', "must be a mapping of names to strings")
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
            raise SpecError("env", key, '{"LOG_LEVEL": "debug"}', "variable names are letters, digits and _")
        if key.startswith("KJUPYTER_"):
            raise SpecError("env", key, '{"LOG_LEVEL": "debug"}', "names starting with KJUPYTER_ are reserved")
        out[key] = val if isinstance(val, str) else str(val)
    return out


def _names(field_name: str, value: object, example: str, pattern: re.Pattern[str] | None) -> tuple[str, ...]:
    items: Iterable[object] = [value] if isinstance(value, str) else value  # type: ignore[assignment]
    if not isinstance(items, Iterable):
        raise SpecError(field_name, value, example, "must be a list of strings")
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip() or (pattern and not pattern.match(item)):
            why = "Kubernetes object names are lower-case letters, digits, '-' and '.'" if pattern else ""
            raise SpecError(field_name, item, example, why or "must be a non-empty string")
        out.append(item.strip())
    return tuple(out)
