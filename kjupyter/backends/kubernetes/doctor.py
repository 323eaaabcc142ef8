"""``kjupyter doctor``: reachability, namespace, store and RBAC of a kubernetes profile."""

from __future__ import annotations

import json
import secrets
from typing import Any

from kjupyter import store as st
from kjupyter.backends.base import Check
from kjupyter.backends.kubernetes.client import Kube
from kjupyter.config import Profile
from kjupyter.errors import ApiError, KjupyterError

# (api group, resource, subresource, verbs): what examples/rbac.yaml grants (jobs: patch marks a cancelled Job).
NEEDED: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("batch", "jobs", "", ("create", "get", "list", "watch", "patch", "delete")),
    ("", "pods", "", ("get", "list", "watch")),
    ("", "pods", "log", ("get",)),
    ("", "events", "", ("list",)),
    ("", "secrets", "", ("create", "get", "patch", "delete")),
)


def missing_role(namespace: str, missing: list[tuple[str, str, str, str]]) -> dict[str, Any]:
    rules: dict[tuple[str, str], list[str]] = {}
    for group, resource, sub, verb in missing:
        rules.setdefault((group, f"{resource}/{sub}" if sub else resource), []).append(verb)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "kjupyter", "namespace": namespace},
        "rules": [{"apiGroups": [g], "resources": [r], "verbs": v} for (g, r), v in rules.items()],
    }  # fmt: skip


def doctor(profile: Profile) -> list[Check]:
    checks: list[Check] = []
    try:
        kube = Kube(profile)
    except KjupyterError as exc:
        return [Check("credentials", False, str(exc))]
    try:
        from kubernetes import client

        version = kube.call("reach the API server", client.VersionApi(kube.api_client).get_code)
        checks.append(Check("API server", True, f"{kube.server} answers: Kubernetes {version.get('gitVersion')}"))
    except KjupyterError as exc:
        return [*checks, Check("API server", False, str(exc))]
    try:
        kube.call(f"read namespace {kube.namespace}", kube.core.read_namespace, kube.namespace)
        checks.append(Check("namespace", True, kube.namespace))
    except ApiError as exc:
        ok = exc.status == 403  # not allowed to read namespaces: fine, the Role is namespaced
        checks.append(Check("namespace", ok, kube.namespace + ("" if ok else f": {exc}")))
    checks.append(_store(profile))
    missing: list[tuple[str, str, str, str]] = []
    for group, resource, sub, verbs in NEEDED:
        for verb in verbs:
            attrs = {"namespace": kube.namespace, "group": group, "resource": resource, "verb": verb}
            if sub:
                attrs["subresource"] = sub
            body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": attrs}}  # fmt: skip
            try:
                review = kube.call("check permissions", kube.auth.create_self_subject_access_review, body)
                allowed = bool(review.get("status", {}).get("allowed"))
            except KjupyterError:
                allowed = False
            if not allowed:
                missing.append((group, resource, sub, verb))
    if missing:
        role = json.dumps(missing_role(kube.namespace, missing), indent=1)
        checks.append(Check("RBAC", False, f"missing permissions; this Role (bound to you) grants them:\n{role}"))
    else:
        checks.append(Check("RBAC", True, "jobs, pods, pods/log, events, secrets"))
    kube.close()
    return checks


def _store(profile: Profile) -> Check:
    if not profile.store:
        return Check("store", True, "none: payloads and results up to 1 MiB travel inline")
    try:
        run = st.RunStore(profile.store, dict(profile.store_options)).run("doctor", f"probe-{secrets.token_hex(4)}")
        run.write_bytes("probe", b"ok")
        ok = run.read_bytes("probe") == b"ok"
        run.delete()
        return Check("store", ok, profile.store)
    except KjupyterError as exc:
        return Check("store", False, str(exc))


def describe(kube: Kube) -> dict[str, Any]:
    """Whether the API server answers, and its version (``kjupyter clusters``, the lab's cluster picker)."""
    from kubernetes import client

    version = kube.call("reach the API server", client.VersionApi(kube.api_client).get_code)
    return {"reachable": True, "detail": f"Kubernetes {version.get('gitVersion', '?')}, namespace {kube.namespace}"}
