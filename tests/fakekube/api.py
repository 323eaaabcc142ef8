"""API semantics over the store: create/get/list/update/patch/delete with
generateName, defaults, validation, status subresources, generation,
optimistic concurrency, graceful deletion and finalizers.

Used by the HTTP server, by the controllers and by the Python test API alike.
"""

from __future__ import annotations

import base64
import builtins
import json
import time
from collections.abc import Callable
from typing import Any

from . import errors
from .defaults import apply_defaults
from .patch import apply_patch
from .resources import NAMESPACES, PODS, Resource
from .selection import FieldRequirement, Requirement, fields_match, labels_match
from .store import Exists, Store
from .util import Obj, deep, generate_name, get_path, iso_seconds, new_uid
from .validate import immutable_job_fields, schema_errors, validate_object

# Fields of metadata the server owns.
_SERVER_META = ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                "generation", "managedFields", "selfLink")
ORPHAN_WARNING = ('299 - "child pods are preserved by default when jobs are deleted; set '
                  'propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress '
                  'this warning"')


class Api:
    def __init__(self, store: Store, k8s_version: str = "1.33.0", validate: bool = True) -> None:
        self.store = store
        self.k8s_version = k8s_version
        self.validate = validate
        # Validating admission (ResourceQuota, webhooks): called with the defaulted, named object; raises ApiError.
        self.admit: Callable[[Resource, Obj], None] | None = None

    # -- helpers ------------------------------------------------------------------------
    def _check_namespace(self, res: Resource, namespace: str | None) -> None:
        if res.namespaced and namespace is not None and self.store.get(NAMESPACES.key, "", namespace) is None:
            raise errors.namespace_not_found(namespace)

    # -- create -------------------------------------------------------------------------
    def create(self, res: Resource, body: Any, namespace: str | None = None, *, validate: bool = True,
               dry_run: bool = False) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was in an unknown format - accepted media types "
                                     "include: application/json, application/yaml")
        obj = deep(body)
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        if obj["kind"] != res.kind or obj["apiVersion"] != res.api_version:
            raise errors.bad_request(f"the API version in the data ({obj['apiVersion']}) does not match the "
                                     f"expected API version ({res.api_version})")
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if namespace is None:
                namespace = meta.get("namespace") or "default"
            if meta.get("namespace") not in (None, "", namespace):
                raise errors.bad_request("the namespace of the provided object does not match the namespace "
                                         "sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        if validate and self.validate:
            causes = schema_errors(obj, self.k8s_version)
            if causes:
                raise errors.invalid(res, meta.get("name") or meta.get("generateName") or "", causes)
        for k in _SERVER_META:
            meta.pop(k, None)
        if validate and "status" in res.subresources and res.plural != "namespaces":
            obj.pop("status", None)
        self._check_namespace(res, namespace)
        prefix = meta.get("generateName")
        for _attempt in range(8):
            if not meta.get("name") and prefix:
                meta["name"] = generate_name(prefix)
            attempt: Obj = deep(obj)
            attempt["metadata"]["uid"] = new_uid()
            if validate:
                validate_object(res, attempt, self.k8s_version, schema=False)
            apply_defaults(res.plural, attempt)
            if res.plural == "jobs":
                attempt["metadata"]["generation"] = 1
            try:
                with self.store.lock:   # admission (quota usage) and insert as one step
                    if self.admit is not None:
                        self.admit(res, attempt)
                    if dry_run:
                        return attempt
                    return self.store.insert(res.key, attempt)
            except Exists:
                if not prefix or body.get("metadata", {}).get("name"):
                    raise errors.already_exists(res, meta["name"]) from None
                meta["name"] = ""
        raise errors.already_exists(res, meta["name"])

    # -- reads --------------------------------------------------------------------------
    def get(self, res: Resource, namespace: str | None, name: str) -> Obj:
        obj = self.store.get(res.key, namespace or "", name)
        if obj is None:
            raise errors.not_found(res, name)
        return obj

    def list(self, res: Resource, namespace: str | None, labels: list[Requirement] | None = None,
             fields: list[FieldRequirement] | None = None, limit: int = 0, cont: str | None = None) -> Obj:
        if namespace is not None:
            self._check_namespace(res, namespace)
        items, rv = self.store.list(res.key, namespace,
                                    where=lambda o: labels_match(labels or [], o) and fields_match(fields or [], o))
        meta: Obj = {"resourceVersion": str(rv)}
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode()))
                start = tuple(token["start"])
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                                         "(version meta.k8s.io/v1)") from None
            items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start]
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            token = {"rv": rv, "start": [last.get("namespace", ""), last["name"]]}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        for o in items:
            o.pop("kind", None)
            o.pop("apiVersion", None)
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": items}

    # -- updates ------------------------------------------------------------------------
    def update(self, res: Resource, namespace: str | None, name: str, body: Any,
               subresource: str | None = None) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was in an unknown format")
        with self.store.lock:
            current = self.get(res, namespace, name)
            if get_path(body, "metadata", "name") not in (None, name):
                raise errors.bad_request(f'the name of the object ({body["metadata"]["name"]}) does not match '
                                         f"the name on the URL ({name})")
            rv = get_path(body, "metadata", "resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(res, name)
            new = self._merge_update(res, current, deep(body), subresource)
            return self._commit(res, current, new, validate=subresource is None)

    def patch(self, res: Resource, namespace: str | None, name: str, content_type: str, body: Any,
              subresource: str | None = None) -> Obj:
        with self.store.lock:
            current = self.get(res, namespace, name)
            patched = apply_patch(content_type, current, body)
            if not isinstance(patched, dict):
                raise errors.bad_request("the patch did not produce an object")
            rv = get_path(patched, "metadata", "resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(res, name)
            new = self._merge_update(res, current, patched, subresource)
            return self._commit(res, current, new, validate=subresource is None)

    def _merge_update(self, res: Resource, current: Obj, body: Obj, subresource: str | None) -> Obj:
        if subresource == "status":
            new: Obj = deep(current)
            new["status"] = body.get("status", {})
            return new
        if subresource is not None:
            raise errors.method_not_allowed()
        body.setdefault("apiVersion", current.get("apiVersion"))
        body.setdefault("kind", current.get("kind"))
        meta = body.setdefault("metadata", {})
        for k in (*_SERVER_META, "name", "namespace"):
            if k in current["metadata"]:
                meta[k] = current["metadata"][k]
            else:
                meta.pop(k, None)
        if res.subresources and "status" in res.subresources and "status" in current:
            body["status"] = current["status"]
        if "generation" in current["metadata"] and body.get("spec") != current.get("spec"):
            meta["generation"] = current["metadata"]["generation"] + 1
        if res.plural == "jobs":
            immutable_job_fields(current, body)
        if res.plural == "secrets":
            apply_defaults("secrets", body)
        return body

    def _commit(self, res: Resource, current: Obj, new: Obj, validate: bool) -> Obj:
        if new == current:
            return current
        if validate and self.validate:
            check = deep(new)
            for k in _SERVER_META:
                check["metadata"].pop(k, None)
            validate_object(res, check, self.k8s_version)
        elif validate:
            validate_object(res, new, self.k8s_version, schema=False)
        if self._removable(res, new):
            removed = self.store.remove(res.key, new["metadata"].get("namespace", ""), new["metadata"]["name"])
            return removed or new
        return self.store.replace(res.key, new)

    @staticmethod
    def _removable(res: Resource, obj: Obj) -> bool:
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return False
        return res.plural != "pods" or meta.get("deletionGracePeriodSeconds") == 0

    def mutate(self, res: Resource, namespace: str | None, name: str, fn: Callable[[Obj], Any],
               uid: str | None = None) -> Obj | None:
        """Controller-side read-modify-write (no validation); finishes deletions whose finalizers are gone."""
        with self.store.lock:
            obj = self.store.mutate(res.key, namespace or "", name, fn, uid=uid)
            if obj is not None and self._removable(res, obj):
                return self.store.remove(res.key, namespace or "", name)
            return obj

    # -- delete -------------------------------------------------------------------------
    def delete(self, res: Resource, namespace: str | None, name: str, *, grace: int | None = None,
               propagation: str | None = None, uid: str | None = None, rv: str | None = None,
               ) -> tuple[Obj, builtins.list[str]]:
        """Returns (response body, warnings)."""
        warnings: builtins.list[str] = []
        with self.store.lock:
            current = self.get(res, namespace, name)
            meta = current["metadata"]
            if uid and uid != meta["uid"]:
                raise errors.ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {uid}, "
                                      f"UID in object meta: {meta['uid']}", {"name": name, "kind": res.plural})
            if rv and rv != meta["resourceVersion"]:
                raise errors.ApiError(409, "Conflict", f"Precondition failed: ResourceVersion in precondition: "
                                      f"{rv}, ResourceVersion in object meta: {meta['resourceVersion']}",
                                      {"name": name, "kind": res.plural})
            if propagation is None:
                propagation = "Orphan" if res.plural == "jobs" else "Background"
                if res.plural == "jobs":
                    warnings.append(ORPHAN_WARNING)
            if propagation not in ("Orphan", "Background", "Foreground"):
                raise errors.bad_request(f'Unsupported value: "{propagation}": supported values: '
                                         '"Foreground", "Background", "Orphan"')
            new = deep(current)
            nmeta = new["metadata"]
            finalizers = list(nmeta.get("finalizers") or [])
            if propagation == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers = [f for f in finalizers if f != "orphan"] + ["foregroundDeletion"]
            elif propagation == "Orphan" and "orphan" not in finalizers and not meta.get("deletionTimestamp"):
                finalizers.append("orphan")
            g = 0
            terminal = get_path(current, "status", "phase") in ("Succeeded", "Failed")
            if res is PODS and get_path(current, "spec", "nodeName") and not terminal:
                default = get_path(current, "spec", "terminationGracePeriodSeconds", default=30)
                g = max(0, grace if grace is not None else default)
            if finalizers:
                nmeta["finalizers"] = finalizers
            if meta.get("deletionTimestamp"):
                if res is PODS and g < meta.get("deletionGracePeriodSeconds", 0):
                    nmeta["deletionGracePeriodSeconds"] = g
                    nmeta["deletionTimestamp"] = iso_seconds(time.time() + g)
                return self._commit(res, current, new, validate=False), warnings
            if g > 0 or finalizers:
                nmeta["deletionTimestamp"] = iso_seconds(time.time() + g)
                nmeta["deletionGracePeriodSeconds"] = g
                return self.store.replace(res.key, new), warnings
            removed = self.store.remove(res.key, namespace or "", name)
            assert removed is not None
            if res is PODS:
                return removed, warnings
            return errors.success_status(res, name, meta["uid"]), warnings

    def delete_collection(self, res: Resource, namespace: str | None, labels: builtins.list[Requirement],
                          fields: builtins.list[FieldRequirement], grace: int | None, propagation: str | None) -> Obj:
        body = self.list(res, namespace, labels, fields)
        for item in body["items"]:
            try:
                self.delete(res, item["metadata"].get("namespace"), item["metadata"]["name"], grace=grace,
                            propagation=propagation or "Background")
            except errors.ApiError as e:
                if e.code != 404:
                    raise
        return body
