"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

Strategic merge patch is applied as a plain merge patch: lists are replaced,
not merged by key (a documented simplification).
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError, bad_request, unsupported_media_type
from .util import deep

MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
JSON_PATCH = "application/json-patch+json"


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return deep(patch)
    result = deep(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"the server rejected our request due to an error in our request: invalid path {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Any, parts: list[str]) -> tuple[Any, str]:
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, list):
            cur = cur[int(p)]
        elif isinstance(cur, dict) and p in cur:
            cur = cur[p]
        else:
            raise _missing("/".join(parts))
    return cur, parts[-1]


def _missing(path: str) -> ApiError:
    return ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: "
                    f"doc is missing path: \"/{path}\": missing value")


def _get(doc: Any, path: str) -> Any:
    cur = doc
    for p in _pointer(path):
        try:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        except (KeyError, IndexError, ValueError, TypeError):
            raise _missing(path.lstrip("/")) from None
    return cur


def _remove(doc: Any, path: str) -> Any:
    parent, key = _container(doc, _pointer(path))
    try:
        return parent.pop(int(key)) if isinstance(parent, list) else parent.pop(key)
    except (KeyError, IndexError, ValueError):
        raise _missing(path.lstrip("/")) from None


def _add(doc: Any, path: str, value: Any, replace: bool = False) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, key = _container(doc, parts)
    if isinstance(parent, list):
        if key == "-":
            parent.append(value)
        elif replace:
            parent[int(key)] = value
        else:
            parent.insert(int(key), value)
    elif isinstance(parent, dict):
        if replace and key not in parent:
            raise _missing(path.lstrip("/"))
        parent[key] = value
    else:
        raise _missing(path.lstrip("/"))
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = deep(target)
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        if kind == "add":
            doc = _add(doc, path, deep(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            doc = _add(doc, path, deep(op.get("value")), replace=True)
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, deep(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: "
                               f"testing value {path} failed: test failed")
        else:
            raise bad_request(f"Unexpected kind: {kind}")
    return doc


def apply_patch(content_type: str, target: Any, patch: Any) -> Any:
    ct = content_type.split(";")[0].strip().lower()
    if ct in MERGE_TYPES:
        if not isinstance(patch, dict):
            raise bad_request("the body of the request was in an unknown format: a merge patch must be an object")
        return merge_patch(target, patch)
    if ct == JSON_PATCH:
        return json_patch(target, patch)
    raise unsupported_media_type(ct)
