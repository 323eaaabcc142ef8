"""What a container sees, made on the host: env, volumes, command and the
translation of in-container paths to host paths.

Path translation: every volumeMount's mountPath (and the container's
terminationMessagePath) that occurs in a command/args element, an env value or
workingDir at a path boundary (not inside a longer path component) is replaced
by the host directory where the volume was materialised.
"""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from .resources import CONFIGMAPS, SECRETS
from .util import Obj, get_path, parse_quantity

Lookup = Callable[[str, str, str], "Obj | None"]   # (resource key, namespace, name) -> object
_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")


class ConfigError(Exception):
    """CreateContainerConfigError: message like `secret "x" not found`."""


class MountError(Exception):
    """FailedMount: message like `MountVolume.SetUp failed for volume "v" : secret "x" not found`."""


# -- references ----------------------------------------------------------------------------

def field_ref(pod: Obj, path: str) -> str:
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str(get_path(pod, "metadata", m.group(1), default={}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        d = get_path(pod, *path.split("."), default={})
        return "".join(f'{k}="{d[k]}"\n' for k in sorted(d))
    simple = {"metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName",
              "status.podIP", "status.hostIP"}
    if path in simple:
        return str(get_path(pod, *path.split("."), default=""))
    if path in ("status.podIPs", "status.hostIPs"):
        return ",".join(i["ip"] for i in get_path(pod, *path.split("."), default=[]))
    raise ConfigError(f'unsupported fieldPath: "{path}"')


def resource_ref(pod: Obj, ref: Obj, default_container: str, node_alloc: dict[str, str]) -> str:
    cname = ref.get("containerName") or default_container
    containers: list[Obj] = get_path(pod, "spec", "containers", default=[])
    container: Obj = next((c for c in containers if c.get("name") == cname), {})
    kind, _, res = str(ref.get("resource", "")).partition(".")
    value = get_path(container, "resources", kind, res, default=None)
    if value is None and kind == "requests":
        value = get_path(container, "resources", "limits", res, default=None)
    if value is None:
        value = node_alloc.get(res, "0") if kind == "limits" else "0"
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(parse_quantity(value) / divisor))


def _data(obj: Obj, binary_key: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if obj.get("kind") == "Secret":
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v)
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = str(v).encode()
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = str(v).encode()
        for k, v in (obj.get(binary_key) or {}).items():
            out[k] = base64.b64decode(v)
    return out


def _source(lookup: Lookup, kind: str, ns: str, name: str) -> Obj | None:
    return lookup(SECRETS.key if kind == "Secret" else CONFIGMAPS.key, ns, name)


def _not_found(kind: str, name: str) -> str:
    return f'{"secret" if kind == "Secret" else "configmap"} "{name}" not found'


# -- env -------------------------------------------------------------------------------------

def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion; $$ escapes; unknown references are left as they are."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, text)


def container_env(pod: Obj, container: Obj, lookup: Lookup, node_alloc: dict[str, str]) -> dict[str, str]:
    """envFrom then env, as the kubelet resolves them; raises ConfigError."""
    ns = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = src.get(key)
            if not ref:
                continue
            obj = _source(lookup, kind, ns, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(_not_found(kind, ref["name"]))
            for k, v in _data(obj, "binaryData").items():
                env[prefix + k] = v.decode(errors="replace")
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        vf = var["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_ref(pod, vf["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in vf:
            env[name] = resource_ref(pod, vf["resourceFieldRef"], container["name"], node_alloc)
        else:
            kind, ref = ("Secret", vf["secretKeyRef"]) if "secretKeyRef" in vf else ("ConfigMap", vf["configMapKeyRef"])
            obj = _source(lookup, kind, ns, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(_not_found(kind, ref["name"]))
            data = _data(obj, "binaryData")
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f"couldn't find key {ref['key']} in {kind} {ns}/{ref['name']}")
            env[name] = data[ref["key"]].decode(errors="replace")
    return env


# -- volumes ---------------------------------------------------------------------------------

def _write_items(target: Path, data: dict[str, bytes], items: list[Obj] | None, mode: int, vol: str,
                 kind: str, name: str) -> None:
    if items:
        for it in items:
            if it["key"] not in data:
                raise MountError(f'MountVolume.SetUp failed for volume "{vol}" : configmap references non-existent '
                                 f'config key: {it["key"]}' if kind == "ConfigMap" else
                                 f'MountVolume.SetUp failed for volume "{vol}" : references non-existent secret '
                                 f'key: {it["key"]}')
            _write(target / it["path"], data[it["key"]], it.get("mode", mode))
    else:
        for k, v in data.items():
            _write(target / k, v, mode)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def _fill_volume(vol: Obj, target: Path, pod: Obj, lookup: Lookup, node_alloc: dict[str, str]) -> None:
    ns, vname = pod["metadata"]["namespace"], vol["name"]
    sources: list[tuple[str, Obj]] = []
    if "projected" in vol:
        for s in vol["projected"].get("sources") or []:
            for k in ("secret", "configMap", "downwardAPI"):
                if k in s:
                    sources.append((k, {**s[k], "defaultMode": vol["projected"].get("defaultMode", 0o644)}))
    else:
        sources = [(k, vol[k]) for k in ("secret", "configMap", "downwardAPI") if k in vol]
    for kind_key, src in sources:
        mode = src.get("defaultMode", 0o644)
        if kind_key == "downwardAPI":
            for it in src.get("items") or []:
                if "fieldRef" in it:
                    value = field_ref(pod, it["fieldRef"]["fieldPath"])
                else:
                    value = resource_ref(pod, it["resourceFieldRef"], "", node_alloc)
                _write(target / it["path"], value.encode(), it.get("mode", mode))
            continue
        kind = "Secret" if kind_key == "secret" else "ConfigMap"
        name = src.get("secretName") if kind == "Secret" else src.get("name")
        obj = _source(lookup, kind, ns, name or "")
        if obj is None:
            if src.get("optional"):
                continue
            raise MountError(f'MountVolume.SetUp failed for volume "{vname}" : {_not_found(kind, name or "")}')
        _write_items(target, _data(obj, "binaryData"), src.get("items"), mode, vname, kind, name or "")


def materialise_volumes(pod: Obj, root: Path, lookup: Lookup, node_alloc: dict[str, str]) -> dict[str, Path]:
    """Create every volume under root/volumes; returns volume name -> host directory. Raises MountError."""
    out: dict[str, Path] = {}
    for vol in get_path(pod, "spec", "volumes", default=[]):
        if "hostPath" in vol:
            out[vol["name"]] = Path(vol["hostPath"]["path"])   # node == host
            continue
        target = root / "volumes" / vol["name"]
        target.mkdir(parents=True, exist_ok=True)
        _fill_volume(vol, target, pod, lookup, node_alloc)     # emptyDir and unknown kinds stay empty dirs
        out[vol["name"]] = target
    return out


def mounts_for(container: Obj, volumes: dict[str, Path], termination_file: Path) -> list[tuple[str, str]]:
    """(in-container path, host path) pairs, longest first."""
    pairs = [(container.get("terminationMessagePath") or "/dev/termination-log", str(termination_file))]
    for m in container.get("volumeMounts") or []:
        host = volumes.get(m["name"])
        if host is None:
            continue
        if m.get("subPath"):
            host = host / m["subPath"]
            if not host.exists():
                host.mkdir(parents=True, exist_ok=True)
        pairs.append((m["mountPath"].rstrip("/") or "/", str(host)))
    return sorted(pairs, key=lambda p: -len(p[0]))


def translate(text: str, mounts: list[tuple[str, str]]) -> str:
    for inside, host in mounts:
        if inside == "/":
            continue
        pattern = r"(?<![\w./-])" + re.escape(inside) + r"(?=/|$|[^\w.-])"
        text = re.sub(pattern, lambda _m, h=host: h, text)  # type: ignore[misc]
    return text


def build_command(container: Obj, env: dict[str, str], mounts: list[tuple[str, str]]) -> list[str] | None:
    """The argv to run on the host; None when the container names no command at all."""
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if not argv:
        return None
    argv = [translate(expand(str(a), env), mounts) for a in argv]
    exe = argv[0]
    if _PYTHON.match(os.path.basename(exe)):
        argv[0] = sys.executable
    elif "/" not in exe:
        found = shutil.which(exe, path=env.get("PATH"))
        argv[0] = found or exe
    return argv
