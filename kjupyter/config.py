"""Cluster profiles: which backend, where, with what defaults.

Read from TOML files, merged in this order (later wins):

1. ``/etc/kjupyter/config.toml`` (the hub admin's)
2. ``$XDG_CONFIG_HOME/kjupyter/config.toml`` (default ``~/.config/kjupyter/config.toml``)
3. ``./kjupyter.toml``, or ``[tool.kjupyter]`` in ``./pyproject.toml``
4. the file named by ``$KJUPYTER_CONFIG``

then ``KJUPYTER_CLUSTER`` picks the default profile and ``KJUPYTER_STORE``,
``KJUPYTER_NAMESPACE``, ``KJUPYTER_IMAGE``, ``KJUPYTER_CONTEXT`` override that
field of the default profile. With no configuration at all, the built-in
``local`` profile is used, so a fresh install runs. :attr:`Config.default_source`
says which of these chose the default; :mod:`kjupyter.lab_choice` has the whole order
(``cluster=``, ``%kube use`` and the lab's status bar come first).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kjupyter.errors import ConfigError, SpecError
from kjupyter.spec import OPTION_NAMES, RunSpec, parse_duration
from kjupyter.usage import Prices, parse_prices

SYSTEM_CONFIG = Path("/etc/kjupyter/config.toml")
BACKENDS = ("local", "kubernetes")
LOCAL = "local"
_ENV_OVERRIDES = {"KJUPYTER_STORE": "store", "KJUPYTER_NAMESPACE": "namespace",
                  "KJUPYTER_IMAGE": "image", "KJUPYTER_CONTEXT": "context"}  # fmt: skip


@dataclass(frozen=True)
class GpuType:
    """How to land on a node with this GPU: its node selector and the tolerations it needs."""

    name: str
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    resource: str = "nvidia.com/gpu"


@dataclass(frozen=True)
class Profile:
    """One cluster profile (a ``[clusters.NAME]`` table)."""

    name: str
    backend: str = "local"
    store: str | None = None
    store_options: Mapping[str, Any] = field(default_factory=dict)
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool | None = None
    namespace: str | None = None
    image: str | None = None
    service_account: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    gpus: Mapping[str, GpuType] = field(default_factory=dict)
    pending_timeout: float = 600.0
    failover_after: float | None = None  # a GPU fallback list moves on from a run still pending this long here
    ttl_after_finished: float = 86400.0
    defaults: RunSpec = field(default_factory=RunSpec)
    labels: Mapping[str, str] = field(default_factory=dict)
    max_warm: int = 2  # warm workers one session may keep on this cluster
    prices: Prices = field(default_factory=Prices)  # per hour, for the estimated cost of runs (kjupyter.usage)
    source: str = "built-in"

    def offers_gpu(self, gpu_type: str) -> bool:
        return gpu_type in self.gpus

    @property
    def where(self) -> str:
        """Where its runs go, as ``kjupyter clusters`` and the lab show it: ``context/namespace``."""
        if self.backend != "kubernetes":
            return "this machine"
        return (
            f"{self.context or ('in-cluster' if self.in_cluster else 'current context')}/{self.namespace or 'default'}"
        )


@dataclass(frozen=True)
class Config:
    default: str
    profiles: Mapping[str, Profile]
    sources: tuple[str, ...] = ()
    default_source: str = "the built-in default"  # what picked ``default``: KJUPYTER_CLUSTER=..., a file, built in

    def profile(self, name: str | None = None) -> Profile:
        """The named profile (or the default); an unknown name lists the known ones."""
        key = name or self.default
        if key not in self.profiles:
            known = ", ".join(sorted(self.profiles)) or "(none)"
            where = f" (configuration read from {', '.join(self.sources)})" if self.sources else ""
            raise ConfigError(f"unknown cluster {key!r}; the known clusters are: {known}{where}")
        return self.profiles[key]

    def profiles_offering_gpu(self, gpu_type: str) -> list[Profile]:
        return [p for p in self.profiles.values() if p.offers_gpu(gpu_type)]


_PROFILE_KEYS = {
    "backend", "store", "store_options", "kubeconfig", "context", "in_cluster", "namespace", "image",
    "service_account", "image_pull_secrets", "secrets", "gpus", "pending_timeout",
    "failover_after", "ttl_after_finished", "defaults", "labels", "keep_warm", "max_warm", "prices",
}  # fmt: skip


def config_files(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()
    user_dir = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kjupyter"
    files = [SYSTEM_CONFIG, user_dir / "config.toml"]
    files.append(cwd / "kjupyter.toml" if (cwd / "kjupyter.toml").exists() else cwd / "pyproject.toml")
    if env.get("KJUPYTER_CONFIG"):
        extra = Path(env["KJUPYTER_CONFIG"]).expanduser()
        if not extra.exists():
            raise ConfigError(f"KJUPYTER_CONFIG names {extra}, which does not exist")
        files.append(extra)
    return files


def load_config(files: list[Path] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Merge every configuration file and the environment into a :class:`Config`."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    sources: list[str] = []
    origin: dict[str, str] = {}
    default_file = ""
    for path in config_files(env=env) if files is None else files:
        data = _read_toml(path)
        if data:
            sources.append(str(path))
            for name in data.get("clusters", {}):
                origin[name] = str(path)
            if "default" in data:
                default_file = str(path)
            _deep_merge(merged, data)
    unknown = set(merged) - {"default", "clusters"}
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s) {sorted(unknown)} in {', '.join(sources)}; expected 'default' and [clusters.NAME] tables"
        )
    raw_profiles: dict[str, Any] = {LOCAL: {"backend": "local"}}
    _deep_merge(raw_profiles, merged.get("clusters", {}))
    default = env.get("KJUPYTER_CLUSTER") or merged.get("default") or LOCAL
    default_source = (f"KJUPYTER_CLUSTER={default}" if env.get("KJUPYTER_CLUSTER")
                      else f"`default` in {default_file}" if merged.get("default") else "the built-in default")  # fmt: skip
    if default in raw_profiles:
        for var, key in _ENV_OVERRIDES.items():
            if env.get(var):
                raw_profiles[default][key] = env[var]
    # On a JupyterHub, the notebook's own image (which has kjupyter) is the pods' natural default.
    hub_image = env.get("JUPYTER_IMAGE_SPEC") or env.get("JUPYTER_IMAGE")
    if hub_image:
        for raw in raw_profiles.values():
            if isinstance(raw, dict) and raw.get("backend") == "kubernetes" and not raw.get("image"):
                raw["image"] = hub_image
    profiles = {name: _profile(name, raw, origin.get(name, "built-in")) for name, raw in raw_profiles.items()}
    config = Config(default=default, profiles=profiles, sources=tuple(sources), default_source=default_source)
    config.profile(default)  # an unknown default is an error now, not at the first run
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if path.name == "pyproject.toml":
        section: dict[str, Any] = data.get("tool", {}).get("kjupyter", {})
        return section
    return data


def _deep_merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _profile(name: str, raw: Mapping[str, Any], source: str) -> Profile:
    where = f"[clusters.{name}] in {source}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(raw) - _PROFILE_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; known keys: {', '.join(sorted(_PROFILE_KEYS))}")
    backend = raw.get("backend", "local")
    if backend not in BACKENDS:
        raise ConfigError(f"{where}: backend = {backend!r} is not one of {', '.join(BACKENDS)}")
    try:
        defaults = RunSpec.build(**_defaults(raw.get("defaults", {}), where))
        if "keep_warm" in raw:  # (a profile's keep_warm is one of its run defaults)
            defaults = defaults.with_options(keep_warm=raw["keep_warm"])
        gpus = {g: _gpu(g, spec, where) for g, spec in raw.get("gpus", {}).items()}
        return Profile(
            name=name,
            backend=backend,
            store=_opt_str(raw, "store", where),
            store_options=dict(raw.get("store_options", {})),
            kubeconfig=_opt_str(raw, "kubeconfig", where),
            context=_opt_str(raw, "context", where),
            in_cluster=raw.get("in_cluster"),
            namespace=_opt_str(raw, "namespace", where),
            image=_opt_str(raw, "image", where),
            service_account=_opt_str(raw, "service_account", where),
            image_pull_secrets=tuple(raw.get("image_pull_secrets", ())),
            secrets=tuple(raw.get("secrets", ())),
            gpus=gpus,
            pending_timeout=parse_duration(raw.get("pending_timeout", 600), "pending_timeout"),
            failover_after=(
                parse_duration(raw["failover_after"], "failover_after")
                if raw.get("failover_after") is not None
                else None
            ),
            ttl_after_finished=parse_duration(raw.get("ttl_after_finished", 86400), "ttl_after_finished"),
            defaults=defaults,
            labels=dict(raw.get("labels", {})),
            max_warm=_max_warm(raw.get("max_warm", 2), where),
            prices=parse_prices(raw.get("prices"), where, gpus),
            source=source,
        )
    except SpecError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _max_warm(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ConfigError(f"{where}: max_warm = {raw!r} must be a whole number >= 0 (0: no warm workers)")
    return raw


def _defaults(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: defaults must be a table of run options")
    bad = sorted(set(raw) - set(OPTION_NAMES) - {"cluster"})
    if bad:
        raise ConfigError(f"{where}: unknown default option(s) {bad}; options are {', '.join(OPTION_NAMES)}")
    return dict(raw)


def _gpu(name: str, raw: Any, where: str) -> GpuType:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: gpus.{name} must be a table with node_selector and tolerations")
    extra = sorted(set(raw) - {"node_selector", "tolerations", "resource"})
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {extra} in gpus.{name}")
    return GpuType(
        name=name,
        node_selector={str(k): str(v) for k, v in raw.get("node_selector", {}).items()},
        tolerations=tuple(dict(t) for t in raw.get("tolerations", ())),
        resource=str(raw.get("resource", "nvidia.com/gpu")),
    )


def _opt_str(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    return value
