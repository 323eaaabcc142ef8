"""Which identity do my fsspec calls use? :func:`whoami`, here and inside a pod.

It answers the credentials question from wherever it runs: on the client, and
inside a remote function (``remote(whoami)("s3://bucket")``) to see what the pod
uses (IRSA, Workload Identity, a mounted Secret, or nothing). Cloud libraries
are imported only when used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kjupyter.store import open_fs
from kjupyter.store_errors import protocol_of, translated


@dataclass(frozen=True)
class Identity:
    """Who a filesystem's calls act as: ``method`` says where the credentials came from."""

    url: str
    protocol: str
    method: str  # "env", "iam-role", "assume-role-with-web-identity", "anon", "google_default", "uid", ...
    principal: str  # an ARN, a service account e-mail, a local user; "" when unknown
    detail: str = ""

    def __str__(self) -> str:
        who = self.principal or "an unknown principal"
        text = f"{self.url}: calls act as {who} (credentials from {self.method})"
        return text + (f"; {self.detail}" if self.detail else "")


def whoami(url: str | None = None, storage_options: Mapping[str, Any] | None = None) -> Identity:
    """The identity fsspec calls to ``url`` use here (default: ``$KJUPYTER_RUN``'s store, or the local disk).

    Inside a remote function this tells which identity the pod has; without
    ``storage_options`` the runner's store options are used (never credentials).
    """
    import json

    run_url = os.environ.get("KJUPYTER_RUN") or ""
    url = url or run_url or "file:///"
    if storage_options is None:  # the run store's options, when ``url`` is on the store's protocol
        same = run_url and protocol_of(run_url) == protocol_of(url)
        storage_options = json.loads(os.environ.get("KJUPYTER_STORE_OPTIONS") or "{}") if same else {}
    fs, _ = open_fs(url, storage_options)
    protocol = protocol_of(url)
    with translated(url, ""):
        if protocol in ("s3", "s3a"):
            return _s3_identity(fs, url)
        if protocol in ("gs", "gcs"):
            return _gcs_identity(fs, url)
    import getpass

    return Identity(url, protocol, "uid", f"{getpass.getuser()} (uid {os.getuid()})")


def _s3_identity(fs: Any, url: str) -> Identity:
    from fsspec.asyn import sync

    if getattr(fs, "anon", False):
        return Identity(url, "s3", "anon", "anonymous", "requests are unsigned")

    async def probe() -> tuple[str, str, str]:
        await fs.set_session()
        creds = await fs.session.get_credentials()
        if creds is None:
            return "none", "", "no credentials were found (environment, ~/.aws, IRSA, instance metadata)"
        method = str(getattr(creds, "method", "unknown"))
        kwargs = {k: v for k, v in (fs.client_kwargs or {}).items() if k in ("endpoint_url", "region_name")}
        try:
            async with fs.session.create_client("sts", **kwargs) as sts:
                answer = await sts.get_caller_identity()
            return method, str(answer.get("Arn", "")), f"account {answer.get('Account', '?')}"
        except Exception as exc:  # STS unreachable (a MinIO endpoint, no network): the key id still helps
            frozen = await creds.get_frozen_credentials()
            key = frozen.access_key or ""
            return (
                method,
                f"access key {key[:4]}...{key[-4:]}" if key else "",
                f"STS did not answer ({type(exc).__name__})",
            )

    method, principal, detail = sync(fs.loop, probe)
    return Identity(url, "s3", method, principal, detail)


def _gcs_identity(fs: Any, url: str) -> Identity:
    creds = getattr(fs, "credentials", None)
    method = str(getattr(creds, "method", "unknown"))
    inner = getattr(creds, "credentials", None)
    principal = str(getattr(inner, "service_account_email", "") or getattr(inner, "signer_email", "") or "")
    if principal == "default" and hasattr(inner, "refresh"):
        principal = _metadata_service_account(inner) or principal
    if method == "anon":
        principal = principal or "anonymous"
    detail = f"project {fs.project}" if getattr(fs, "project", None) else ""
    return Identity(url, "gs", method, principal, detail)


def _metadata_service_account(credentials: Any) -> str:
    """Workload Identity / GCE credentials say "default" until refreshed from the metadata server."""
    try:
        import requests
        from google.auth.transport.requests import Request

        with requests.Session() as http:
            credentials.refresh(Request(http))
    except Exception:  # the metadata server is unreachable: "default" is all we know
        return ""
    return str(getattr(credentials, "service_account_email", "") or "")
