"""Shared helpers for the fakekube self-tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.fakekube.cluster import FakeCluster

Obj = dict[str, Any]


def py(code: str) -> list[str]:
    """A container command running `code` with the image's python (the host interpreter here)."""
    return ["python", "-c", code]


def job(name: str, code: str = "print('ok')", *, image: str = "python:3.12-slim", restart: str = "Never",
        **spec: Any) -> Obj:
    container: Obj = {"name": "main", "image": image, "command": py(code)}
    container.update(spec.pop("container", {}))
    pod_spec: Obj = {"restartPolicy": restart, "containers": [container]}
    pod_spec.update(spec.pop("pod", {}))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, **spec.pop("metadata", {})},
            "spec": {"template": {"spec": pod_spec}, **spec}}


def pod(name: str, code: str = "print('ok')", *, image: str = "python:3.12-slim", **spec: Any) -> Obj:
    container: Obj = {"name": "main", "image": image, "command": py(code)}
    container.update(spec.pop("container", {}))
    pod_spec: Obj = {"restartPolicy": "Never", "containers": [container]}
    pod_spec.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}


def raw(cluster: FakeCluster, method: str, path: str, body: Any = None, *, token: str | None = "auto", scheme: str = "Bearer",
        content_type: str = "application/json") -> tuple[int, Any, dict[str, str]]:
    """A plain urllib request (bypassing the client's own validation): (status, parsed body, headers)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(cluster.url + path, data=data, method=method)
    if token == "auto":
        token = cluster.token
    if token:
        req.add_header("Authorization", f"{scheme} {token}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
            return resp.status, _parse(text), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, _parse(e.read()), dict(e.headers)


def _parse(text: bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text.decode()


def job_status(cluster: FakeCluster, name: str, ns: str = "default") -> Obj:
    obj = cluster.get("jobs", name, ns)
    return (obj or {}).get("status") or {}


def has_condition(obj: Obj | None, ctype: str, status: str = "True") -> bool:
    return any(c.get("type") == ctype and c.get("status") == status
               for c in ((obj or {}).get("status") or {}).get("conditions") or [])


def job_finished(cluster: FakeCluster, name: str, ns: str = "default") -> str | None:
    obj = cluster.get("jobs", name, ns)
    for ctype in ("Complete", "Failed"):
        if has_condition(obj, ctype):
            return ctype
    return None


def pods_of(cluster: FakeCluster, job_name: str, ns: str = "default") -> list[Obj]:
    return [p for p in cluster.objects("pods", ns)
            if p["metadata"].get("labels", {}).get("job-name") == job_name]


def waiting_reason(p: Obj | None, container: int = 0) -> str | None:
    statuses = ((p or {}).get("status") or {}).get("containerStatuses") or []
    if len(statuses) <= container:
        return None
    return (statuses[container].get("state", {}).get("waiting") or {}).get("reason")


def terminated(p: Obj | None, container: int = 0) -> Obj | None:
    statuses = ((p or {}).get("status") or {}).get("containerStatuses") or []
    if len(statuses) <= container:
        return None
    result: Obj | None = statuses[container].get("state", {}).get("terminated")
    return result
