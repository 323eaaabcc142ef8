"""Validation of created/updated objects: the official OpenAPI schemas through
`kubernetes_validate` (strict, so misspelled fields are caught) plus the few
semantic rules of the real apiserver that clients most often trip over
(names, label values, images, restart policy of Job templates)."""

from __future__ import annotations

import re
import threading
from typing import Any

from . import errors
from .resources import Resource
from .util import Obj, get_path

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")

Cause = tuple[str, str, str]
_warm_lock = threading.Lock()
_warmed: set[str] = set()


def warm_up(version: str) -> None:
    """Load the schemas once in the background (the first validation costs ~0.3 s)."""
    with _warm_lock:
        if version in _warmed:
            return
        _warmed.add(version)

    def run() -> None:
        try:
            schema_errors({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, version)
        except Exception:
            pass

    threading.Thread(target=run, name="fakekube-validate-warmup", daemon=True).start()


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def schema_errors(obj: Obj, version: str) -> list[Cause]:
    import kubernetes_validate  # type: ignore[import-untyped]

    try:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.utils.VersionNotSupportedError:   # newer than the installed schemas
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.utils.SchemaNotFoundError:
        return []
    except kubernetes_validate.utils.ValidationError as e:
        field = _path(e.path)
        m = re.search(r"\('([^']+)' was unexpected\)|\(('[^)]+') were unexpected\)", e.message)
        if m and m.group(1):
            field = f"{field}.{m.group(1)}" if field else m.group(1)
        return [(field, "FieldValueInvalid", e.message)]
    return []


def _name_causes(obj: Obj, res: Resource) -> list[Cause]:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    causes: list[Cause] = []
    if not name and not meta.get("generateName"):
        return [("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")]
    if name:
        pattern = _LABEL if res.plural == "namespaces" else _SUBDOMAIN
        kind = "RFC 1123 label" if res.plural == "namespaces" else "RFC 1123 subdomain"
        if not pattern.fullmatch(name):
            causes.append(("metadata.name", "FieldValueInvalid",
                           f'Invalid value: "{name}": a lowercase {kind} must consist of lower case alphanumeric '
                           "characters, '-' or '.', and must start and end with an alphanumeric character "
                           f"(e.g. 'example.com', regex used for validation is '{pattern.pattern}')"))
        limit = 63 if res.plural in ("namespaces", "jobs") and not get_path(obj, "spec", "manualSelector") else 253
        if len(name) > limit:
            causes.append(("metadata.name", "FieldValueInvalid",
                           f'Invalid value: "{name}": must be no more than {limit} characters'))
    causes += _label_causes(meta.get("labels"), "metadata.labels")
    return causes


def _label_causes(labels: Any, field: str) -> list[Cause]:
    causes: list[Cause] = []
    for k, v in (labels or {}).items():
        prefix, _, local = k.rpartition("/")
        if not _QUALIFIED.fullmatch(local) or len(local) > 63 or (prefix and not _SUBDOMAIN.fullmatch(prefix)):
            causes.append((field, "FieldValueInvalid",
                           f'Invalid value: "{k}": name part must consist of alphanumeric characters, \'-\', \'_\' '
                           "or '.', and must start and end with an alphanumeric character"))
        if not isinstance(v, str) or len(v) > 63:
            causes.append((field, "FieldValueInvalid", f'Invalid value: "{v}": must be no more than 63 characters'))
        elif not _LABEL_VALUE.fullmatch(v):
            causes.append((field, "FieldValueInvalid",
                           f'Invalid value: "{v}": a valid label must be an empty string or consist of alphanumeric '
                           "characters, '-', '_' or '.', and must start and end with an alphanumeric character"))
    return causes


def _pod_spec_causes(spec: Obj | None, field: str, *, job: bool) -> list[Cause]:
    if spec is None:
        return [(field, "FieldValueRequired", "Required value")]
    causes: list[Cause] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append((f"{field}.containers", "FieldValueRequired", "Required value"))
    volumes = {v.get("name") for v in spec.get("volumes") or []}
    seen: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            cf = f"{field}.{kind}[{i}]"
            name = c.get("name") or ""
            if not _LABEL.fullmatch(name) or len(name) > 63:
                causes.append((f"{cf}.name", "FieldValueInvalid", f'Invalid value: "{name}": a lowercase RFC 1123 '
                               "label must consist of lower case alphanumeric characters or '-', and must start "
                               "and end with an alphanumeric character"))
            elif name in seen:
                causes.append((f"{cf}.name", "FieldValueDuplicate", f'Duplicate value: "{name}"'))
            seen.add(name)
            if not c.get("image"):
                causes.append((f"{cf}.image", "FieldValueRequired", "Required value"))
            for j, m in enumerate(c.get("volumeMounts") or []):
                if m.get("name") not in volumes:
                    causes.append((f"{cf}.volumeMounts[{j}].name", "FieldValueNotFound",
                                   f'Not found: "{m.get("name")}"'))
    restart = spec.get("restartPolicy")
    if job and restart not in ("Never", "OnFailure"):
        if restart is None:
            causes.append((f"{field}.restartPolicy", "FieldValueRequired",
                           'Required value: valid values: "OnFailure", "Never"'))
        else:
            causes.append((f"{field}.restartPolicy", "FieldValueNotSupported",
                           f'Unsupported value: "{restart}": supported values: "OnFailure", "Never"'))
    return causes


def _job_causes(obj: Obj) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes = _label_causes(get_path(spec, "template", "metadata", "labels"), "spec.template.metadata.labels")
    causes += _pod_spec_causes(get_path(spec, "template", "spec"), "spec.template.spec", job=True)
    for key in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished",
                "backoffLimitPerIndex", "maxFailedIndexes"):
        v = spec.get(key)
        if isinstance(v, int) and (v < 0 or (key == "activeDeadlineSeconds" and v == 0)):
            what = "greater than 0" if key == "activeDeadlineSeconds" else "greater than or equal to 0"
            causes.append((f"spec.{key}", "FieldValueInvalid", f"Invalid value: {v}: must be {what}"))
    indexed = spec.get("completionMode") == "Indexed"
    if indexed and spec.get("completions") is None:
        causes.append(("spec.completions", "FieldValueRequired", "Required value: when completion mode is Indexed"))
    if not indexed and spec.get("backoffLimitPerIndex") is not None:
        causes.append(("spec.backoffLimitPerIndex", "FieldValueInvalid",
                       "Invalid value: requires indexed completion mode"))
    return causes


def validate_object(res: Resource, obj: Obj, version: str, *, schema: bool = True) -> None:
    """Raise ApiError 422 Invalid when obj is not acceptable."""
    causes = schema_errors(obj, version) if schema else []
    if not causes:
        causes = _name_causes(obj, res)
        if res.plural == "jobs":
            causes += _job_causes(obj)
        elif res.plural == "pods":
            causes += _pod_spec_causes(obj.get("spec"), "spec", job=False)
    if causes:
        name = get_path(obj, "metadata", "name") or get_path(obj, "metadata", "generateName") or ""
        raise errors.invalid(res, name, causes)


def immutable_job_fields(old: Obj, new: Obj) -> None:
    """A Job's selector and pod template cannot change (suspended-job exceptions are not emulated)."""
    from .resources import JOBS

    causes: list[Cause] = []
    for key in ("selector", "template", "completionMode"):
        if get_path(old, "spec", key) != get_path(new, "spec", key):
            causes.append((f"spec.{key}", "FieldValueInvalid", "Invalid value: field is immutable"))
    if causes:
        raise errors.invalid(JOBS, new["metadata"]["name"], causes)
