"""The one seam to the Kubernetes API: credentials, error wrapping, throttling.

Every request of the Kubernetes backend goes through :meth:`Kube.call`, which
waits for the client-side rate limiter, honours ``429 Retry-After``, turns
the client's exceptions into :class:`kjupyter.errors.BackendError` with one
sentence, and returns plain JSON dicts (``_preload_content=False``), so the
rest of the backend never sees the client's model classes (which differ
between client versions).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kjupyter.config import Profile
from kjupyter.errors import ApiError, BackendError, ConfigError

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_MAX_429_RETRIES = 5


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

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, stream: bool = False, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` as JSON (or the raw response if ``stream``), errors wrapped."""
        from kubernetes.client.exceptions import ApiException

        kwargs["_preload_content"] = False
        for attempt in range(_MAX_429_RETRIES + 1):
            self.limiter.take()
            try:
                response = fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status == 429 and attempt < _MAX_429_RETRIES:
                    self.limiter.pause(_retry_after(exc))
                    continue
                raise self.failure(what, exc) from None
            except Exception as exc:
                raise self.unreachable(what, exc) from None
            if stream:
                return response
            try:
                data = response.data
                return json.loads(data) if data else {}
            except Exception as exc:
                raise self.unreachable(what, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def failure(self, what: str, exc: Any) -> ApiError:
        status = int(getattr(exc, "status", 0) or 0)
        message = ""
        try:
            body = json.loads(exc.body or "{}")
            message = str(body.get("message", ""))
        except (ValueError, TypeError, AttributeError):
            message = str(getattr(exc, "reason", "") or "")
        if status == 403:
            text = (
                f"the cluster refused to {what} (403 Forbidden): {message}. "
                f"Run `kjupyter doctor --cluster {self.profile.name}` for the Role this needs"
            )
        elif status == 401:
            text = f"the cluster did not accept the credentials from {self.where} (401 Unauthorized) while trying to {what}"
        elif status == 404:
            text = f"cannot {what}: not found ({message})"
        else:
            text = f"cannot {what}: {status} {message or getattr(exc, 'reason', '')}".rstrip()
        return ApiError(text, status, _reason(exc))

    def unreachable(self, what: str, exc: BaseException) -> BackendError:
        return BackendError(
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
