"""Discovery documents (/version, /api, /apis, APIResourceLists) and request-info resolution."""

from __future__ import annotations

from .faults import RequestInfo
from .resources import groups, in_group_version
from .util import Obj

_NAMESPACE_SUBRESOURCES = {"status", "finalize"}


def version_doc(k8s_version: str) -> Obj:
    major, minor, *_ = k8s_version.lstrip("v").split(".")
    return {"major": major, "minor": minor, "emulationMajor": major, "emulationMinor": minor,
            "gitVersion": f"v{k8s_version.lstrip('v')}", "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0",
            "compiler": "gc", "platform": "linux/amd64"}


def api_versions(address: str) -> Obj:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}


def _group(name: str, versions: list[str]) -> Obj:
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": vs, "preferredVersion": vs[0]}


def api_group_list() -> Obj:
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(name, versions) for name, versions in sorted(groups().items())]}


def api_group(name: str) -> Obj | None:
    versions = groups().get(name)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def resource_list(group: str, version: str) -> Obj | None:
    resources = in_group_version(group, version)
    if not resources:
        return None
    items: list[Obj] = []
    for r in resources:
        items.append({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
                      "verbs": list(r.verbs), **({"shortNames": list(r.short_names)} if r.short_names else {})})
        for sub in r.subresources:
            verbs = ["get"] if sub == "log" else (["create"] if sub in ("binding", "eviction") else
                                                  ["get", "patch", "update"])
            kind = {"binding": "Binding", "eviction": "Eviction"}.get(sub, r.kind)
            items.append({"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                          "kind": kind, "verbs": verbs})
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items}


def resolve(method: str, path: str, query: dict[str, str]) -> RequestInfo:
    """The apiserver's RequestInfoFactory, reduced to what the fake serves."""
    info = RequestInfo(method, path, query)
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        info.verb = method.lower()
        return info
    if parts[0] == "api":
        if len(parts) < 3:
            info.verb = "get"
            return info
        group, rest = "", parts[2:]
    else:
        if len(parts) < 4:
            info.verb = "get"
            return info
        group, rest = parts[1], parts[3:]
    info.resource_request = True
    info.group = group
    if rest[0] == "namespaces" and len(rest) > 1:
        info.namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    info.resource = rest[0]
    info.name = rest[1] if len(rest) > 1 else ""
    info.subresource = rest[2] if len(rest) > 2 else ""
    watch = query.get("watch", "").lower() in ("1", "true")
    if method == "GET":
        info.verb = "get" if info.name else ("watch" if watch else "list")
        if info.name and info.subresource == "log":
            info.verb = "get"
    else:
        info.verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                     "DELETE": "delete" if info.name else "deletecollection"}.get(method, method.lower())
    return info
