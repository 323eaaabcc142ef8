"""`Status` error bodies shaped exactly like the real kube-apiserver's."""

from __future__ import annotations

from typing import Any

from .resources import Resource

Obj = dict[str, Any]


class ApiError(Exception):
    """An error answered as a `Status` body (kind Status, status Failure)."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": self.message, "reason": self.reason}
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(res: Resource, name: str | None = None, kind: str | None = None) -> Obj:
    d: Obj = {}
    if name:
        d["name"] = name
    if res.group:
        d["group"] = res.group
    d["kind"] = kind or res.plural
    return d


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.key} "{name}" not found', _details(res, name))


def namespace_not_found(name: str) -> ApiError:
    return ApiError(404, "NotFound", f'namespaces "{name}" not found', {"name": name, "kind": "namespaces"})


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{res.key} "{name}" already exists', _details(res, name))


def conflict(res: Resource, name: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {res.key} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again", _details(res, name))


def invalid(res: Resource, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """causes: (field, reason, message) with reason like FieldValueInvalid / FieldValueRequired."""
    kind = f"{res.kind}.{res.group}" if res.group else res.kind
    texts = [f"{field}: {msg}" if field else msg for field, _reason, msg in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = _details(res, name, res.kind)
    details["causes"] = [{"reason": reason, "message": msg, "field": field} for field, reason, msg in causes]
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {joined}', details)


def forbidden(res: Resource, verb: str, user: str, namespace: str | None, name: str | None = None,
              subresource: str | None = None) -> ApiError:
    what = f'{res.key} "{name}"' if name else res.key
    resource = f"{res.plural}/{subresource}" if subresource else res.plural
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    msg = (f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
           f'in API group "{res.group}" {scope}')
    return ApiError(403, "Forbidden", msg, _details(res, name))


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, {})


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted "
                    f"media types include: application/json-patch+json, application/merge-patch+json, "
                    f"application/strategic-merge-patch+json (got {content_type})")


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(429, "TooManyRequests", "Too many requests, please try again later.",
                    {"retryAfterSeconds": retry_after}, {"Retry-After": str(retry_after)})


def internal_error(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}",
                    {"causes": [{"message": message}]})


def service_unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


def generic(code: int, message: str) -> ApiError:
    reasons = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
               410: "Expired", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
               503: "ServiceUnavailable", 504: "Timeout"}
    return ApiError(code, reasons.get(code, "Unknown"), message)


def success_status(res: Resource, name: str, uid: str) -> Obj:
    details = _details(res, name)
    details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
