"""The API resources the fake serves, keyed like the real discovery documents."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resource:
    group: str            # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    stored: bool = True   # False for virtual resources (SelfSubjectAccessReview)
    field_labels: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """"jobs.batch" / "pods": the name used in messages and as store key."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


_ALL = (
    Resource("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",), ("status",),
             field_labels=("status.phase",)),
    Resource("", "v1", "nodes", "Node", False, "node", ("no",), ("status",),
             field_labels=("spec.unschedulable",)),
    Resource("", "v1", "pods", "Pod", True, "pod", ("po",), ("status", "log", "binding", "eviction"),
             field_labels=("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                           "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName")),
    Resource("", "v1", "events", "Event", True, "event", ("ev",),
             field_labels=("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                           "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                           "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type")),
    Resource("", "v1", "secrets", "Secret", True, "secret", (), field_labels=("type",)),
    Resource("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",)),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", ("sa",)),
    Resource("", "v1", "resourcequotas", "ResourceQuota", True, "resourcequota", ("quota",), ("status",)),
    Resource("batch", "v1", "jobs", "Job", True, "job", (), ("status",), field_labels=("status.successful",)),
    Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False,
             "selfsubjectaccessreview", verbs=("create",), stored=False),
)

BY_PATH: dict[tuple[str, str, str], Resource] = {(r.group, r.version, r.plural): r for r in _ALL}
BY_KEY: dict[str, Resource] = {r.key: r for r in _ALL}


def lookup(name: str) -> Resource:
    """Find a resource by plural, key ("jobs.batch"), kind ("Job") or short name, case-insensitive."""
    low = name.lower()
    for r in _ALL:
        if low in (r.plural, r.key, r.kind.lower(), r.singular) or low in r.short_names:
            return r
    raise KeyError(f"unknown resource {name!r}")


def groups() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in _ALL:
        if r.group:
            versions = out.setdefault(r.group, [])
            if r.version not in versions:
                versions.append(r.version)
    return out


def in_group_version(group: str, version: str) -> list[Resource]:
    return [r for r in _ALL if r.group == group and r.version == version]


PODS = BY_KEY["pods"]
JOBS = BY_KEY["jobs.batch"]
EVENTS = BY_KEY["events"]
NODES = BY_KEY["nodes"]
SECRETS = BY_KEY["secrets"]
CONFIGMAPS = BY_KEY["configmaps"]
NAMESPACES = BY_KEY["namespaces"]
SERVICEACCOUNTS = BY_KEY["serviceaccounts"]
RESOURCEQUOTAS = BY_KEY["resourcequotas"]
