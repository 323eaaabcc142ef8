"""The one seam to the Kubernetes API: credentials, error wrapping, throttling.

Every request of the Kubernetes backend goes through :meth:`Kube.call`, which
waits for the client-side rate limiter, honours ``429 Retry-After``, turns
the client's exceptions into :class:`kjupyter.errors.BackendError` with one
sentence, and returns plain JSON dicts (``_preload_content=False``), so the
rest of the backend never sees the client's model classes (which differ
between client versions).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from kjupyter.config import Profile
from kjupyter.errors import ApiError, BackendError, ConfigError, RequestTimedOut

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_MAX_429_RETRIES = 5
REQUEST_TIMEOUT = (10.0, 30.0)  # (connect, read) seconds of every request that sets none itself

# The generated client's method names -> the RBAC verb and resource they need (for a 403's sentence).
_VERBS = {"list": "list", "read": "get", "create": "create", "delete": "delete", "patch": "patch",
          "replace": "update", "get": "get"}  # fmt: skip
_RESOURCES = {"pod_log": "pods/log", "pod": "pods", "job": "jobs", "event": "events", "secret": "secrets",
              "node": "nodes", "namespace": "namespaces", "self_subject_access_review": "selfsubjectaccessreviews"}  # fmt: skip


def permission(fn: Callable[..., Any] | None, kwargs: dict[str, Any]) -> tuple[str, str]:
    """``("list", "pods")`` for ``CoreV1Api.list_namespaced_pod`` (``watch`` when watching); ("", "") if unknown."""
    name = getattr(fn, "__name__", "")
    verb_word, _, rest = name.partition("_")
    verb = "watch" if kwargs.get("watch") else _VERBS.get(verb_word, "")
    rest = rest.removeprefix("namespaced_").removeprefix("collection_namespaced_")
    resource = _RESOURCES.get(rest, "")
    return (verb, resource) if verb and resource else ("", "")


def abort(response: Any) -> None:
    """Close a streamed response (None: nothing to do) from another thread, waking a read blocked on it.

    ``close()`` alone does not interrupt a ``recv`` blocked in another thread; shutting the socket
    down does (urllib3 >= 2.3 offers ``shutdown()``; older ones are reached through the connection).
    """
    if response is None:
        return
    with contextlib.suppress(Exception):
        if hasattr(response, "shutdown"):
            response.shutdown()
        else:
            sock = getattr(getattr(response, "connection", None), "sock", None)
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        response.close()


def _date(response: Any) -> tuple[float, float] | None:
    """The API server's clock from a response's Date header, with this process's monotonic time of it."""
    import email.utils

    try:
        headers = getattr(response, "headers", None)
        stamp = headers.get("Date") if headers is not None else None
        return (email.utils.parsedate_to_datetime(stamp).timestamp(), time.monotonic()) if stamp else None
    except (TypeError, ValueError, AttributeError):
        return None


def timed_out(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if "timeout" in type(cur).__name__.lower() or isinstance(cur, TimeoutError):
            return True
        reason = getattr(cur, "reason", None)
        cur = reason if isinstance(reason, BaseException) else (cur.__cause__ or cur.__context__)
    return False


class RateLimiter:
    """A token bucket: at most ``qps`` requests a second on average, bursts of ``burst``."""

    def __init__(self, qps: float = 20.0, burst: int = 40) -> None:
        self.qps, self.burst = qps, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()
        self.paused_until = 0.0

    def pause(self, seconds: float) -> None:
        with self.lock:
            self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    def take(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.qps)
                self.stamp = now
                wait = max(self.paused_until - now, 0.0)
                if wait == 0 and self.tokens >= 1 - 1e-9:  # (float rounding must not leave 0.999... forever)
                    self.tokens = max(0.0, self.tokens - 1)
                    return
                wait = wait or (1 - self.tokens) / self.qps
            time.sleep(wait)


class Kube:
    """An API client for one profile; ``call`` is the only way requests are made."""

    def __init__(self, profile: Profile) -> None:
        from kubernetes import client

        self.profile = profile
        self.api_client, self.namespace, self.where = _load(profile)
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.auth = client.AuthorizationV1Api(self.api_client)
        self.limiter = RateLimiter()
        self.server_time: tuple[float, float] | None = None  # (the API server's Date, our monotonic time then)

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, stream: bool = False, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` as JSON (or the raw response if ``stream``), errors wrapped.

        Every request has a timeout (:data:`REQUEST_TIMEOUT`, unless the caller sets one). A 429 is
        retried after its Retry-After (at most :data:`_MAX_429_RETRIES` times). A 401 re-reads the
        credentials (a rotated token, an exec plugin's or OIDC refresh) and retries once.
        """
        from kubernetes.client.exceptions import ApiException

        kwargs["_preload_content"] = False
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        reloaded = False
        attempt = 0
        while True:
            self.limiter.take()
            try:
                response = fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status == 429 and attempt < _MAX_429_RETRIES:
                    attempt += 1
                    self.limiter.pause(_retry_after(exc))
                    continue
                if exc.status == 401 and not reloaded and self.reload_credentials():
                    reloaded = True
                    continue
                raise self.failure(what, exc, fn, kwargs) from None
            except Exception as exc:
                raise self.unreachable(what, exc) from None
            if stream:
                return response
            try:
                data = response.data
                parsed = json.loads(data) if data else {}
            except Exception as exc:
                raise self.unreachable(what, exc) from None
            if isinstance(parsed, dict):
                self.server_time = _date(response) or getattr(self, "server_time", None)
            return parsed

    def reload_credentials(self) -> bool:
        """Read the kubeconfig (or the service account's token) again; True if the credentials changed."""
        try:
            fresh, _, _ = _load(self.profile)
        except ConfigError:
            return False
        old_keys = dict(self.api_client.configuration.api_key)
        new = fresh.configuration
        self.api_client.configuration.api_key.update(new.api_key)
        self.api_client.configuration.api_key_prefix.update(new.api_key_prefix)
        for attr in ("cert_file", "key_file", "username", "password"):
            setattr(self.api_client.configuration, attr, getattr(new, attr))
        refresh = getattr(new, "refresh_api_key_hook", None)
        if refresh is not None:
            self.api_client.configuration.refresh_api_key_hook = refresh
        with contextlib.suppress(Exception):
            fresh.close()
        return dict(self.api_client.configuration.api_key) != old_keys or refresh is not None

    def failure(self, what: str, exc: Any, fn: Callable[..., Any] | None = None,
                kwargs: dict[str, Any] | None = None) -> ApiError:  # fmt: skip
        status = int(getattr(exc, "status", 0) or 0)
        message = ""
        try:
            body = json.loads(exc.body or "{}")
            message = str(body.get("message", ""))
        except (ValueError, TypeError, AttributeError):
            message = str(getattr(exc, "reason", "") or "")
        if status == 403:
            verb, resource = permission(fn, kwargs or {})
            needs = f"your account may not {verb} {resource} in namespace {self.namespace}" if verb else message
            text = (
                f"the cluster refused to {what} (403 Forbidden): {needs}. "
                f"`kjupyter doctor --cluster {self.profile.name}` prints the Role kjupyter needs"
            )
        elif status == 401:
            text = (
                f"the cluster did not accept the credentials from {self.where} (401 Unauthorized) while trying to "
                f"{what}, even after reading them again: log in again (refresh the kubeconfig's token)"
            )
        elif status == 404:
            text = f"cannot {what}: not found ({message})"
        else:
            text = f"cannot {what}: {status} {message or getattr(exc, 'reason', '')}".rstrip()
        return ApiError(text, status, _reason(exc))

    def unreachable(self, what: str, exc: BaseException) -> BackendError:
        cls = RequestTimedOut if timed_out(exc) else BackendError
        return cls(
            f"cannot reach the Kubernetes API server at {self.server} ({self.where}) to {what}: "
            f"{type(exc).__name__}: {_short(exc)}"
        )

    def close(self) -> None:
        try:
            self.api_client.close()
        except Exception:
            pass


def _reason(exc: Any) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("reason", ""))
    except (ValueError, TypeError, AttributeError):
        return ""


def _retry_after(exc: Any) -> float:
    headers = getattr(exc, "headers", None) or {}
    try:
        return max(0.05, min(float(headers.get("Retry-After", 1)), 60.0))
    except (TypeError, ValueError):
        return 1.0


def _short(exc: BaseException) -> str:
    text = str(exc)
    reason = getattr(exc, "reason", None)
    if reason is not None and str(reason):
        text = str(reason)
    return text[:300]


def in_cluster_available(sa_dir: str | None = None) -> bool:
    sa_dir = sa_dir or os.environ.get("KJUPYTER_SA_DIR", SA_DIR)
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(os.path.join(sa_dir, "token"))


def _load(profile: Profile) -> tuple[Any, str, str]:
    """(ApiClient, namespace, where the credentials came from)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    use_in_cluster = profile.in_cluster
    if use_in_cluster is None:
        use_in_cluster = not profile.kubeconfig and not profile.context and not os.environ.get("KUBECONFIG") \
            and not os.path.exists(os.path.expanduser("~/.kube/config")) and in_cluster_available()  # fmt: skip
    configuration = client.Configuration()
    if use_in_cluster:
        try:
            sa_dir = os.environ.get("KJUPYTER_SA_DIR", SA_DIR)
            # The loader refreshes the token from the file, as bound service account tokens rotate.
            config.incluster_config.InClusterConfigLoader(
                token_filename=os.path.join(sa_dir, "token"), cert_filename=os.path.join(sa_dir, "ca.crt")
            ).load_and_set(configuration)
        except ConfigException as exc:
            raise ConfigError(f"cluster {profile.name!r}: in-cluster credentials are not usable: {exc}") from None
        namespace = profile.namespace or _sa_namespace() or "default"
        where = "in-cluster service account"
    else:
        path = os.path.expanduser(profile.kubeconfig) if profile.kubeconfig else None
        shown = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
        try:
            contexts, current = config.list_kube_config_contexts(config_file=path)
        except (ConfigException, OSError, TypeError) as exc:
            raise ConfigError(f"cluster {profile.name!r}: cannot read the kubeconfig {shown}: {exc}") from None
        names = [c["name"] for c in contexts or []]
        context = profile.context or (current or {}).get("name")
        if context not in names:
            raise ConfigError(
                f"cluster {profile.name!r}: the kubeconfig {shown} has no context {context!r}; "
                f"its contexts are: {', '.join(names) or '(none)'}"
            )
        try:
            config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
        except (ConfigException, OSError) as exc:
            raise ConfigError(
                f"cluster {profile.name!r}: context {context!r} of {shown} is not usable: {exc}"
            ) from None
        ctx = next(c for c in contexts if c["name"] == context)
        namespace = profile.namespace or ctx.get("context", {}).get("namespace") or "default"
        where = f"context {context!r} of {shown}"
    keys = configuration.api_key
    if "authorization" in keys and "BearerToken" not in keys:  # kubernetes 36.0.0 drops kubeconfig tokens
        keys["BearerToken"] = keys["authorization"]
    configuration.retries = False  # fail fast; the backend decides when to retry
    return client.ApiClient(configuration), namespace, where


def _sa_namespace() -> str | None:
    path = os.path.join(os.environ.get("KJUPYTER_SA_DIR", SA_DIR), "namespace")
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None
