"""Fan-out over files, and "which identity do my fsspec calls use?".

``fn.map_files("s3://bucket/raw/*.csv")`` expands the glob on the client
(:func:`expand`), runs ``fn(url)`` once per file (or once per chunk of files,
``chunk_size=``), and returns the results in the order of the sorted URLs. A
file whose step raises is reported as a :class:`FileError` naming its URL.

:func:`whoami` answers the credentials question from wherever it runs: on the
client, and inside a remote function (``remote(whoami)("s3://bucket")``) to see
what the pod uses (IRSA, Workload Identity, a mounted Secret, or nothing).
This module is also imported by the runner when a ``map_files`` task is
unpickled, so it stays light: cloud libraries are imported only when used.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kjupyter.errors import KjupyterError
from kjupyter.store import _translated, check_bucket, open_fs, protocol_of


class FileError(KjupyterError):
    """The step failed on one file; ``path`` is its URL, ``error`` the original exception (if it travelled)."""

    def __init__(self, path: str, message: str, error: BaseException | None = None, remote_traceback: str = "") -> None:
        self.path = path
        self.message = message
        self.error = error
        self.remote_traceback = remote_traceback
        super().__init__(f"{path}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (FileError, (self.path, self.message, self.error, self.remote_traceback))


def expand(pattern: str | Sequence[str], storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Full URLs of the files matching a glob URL (or list of URLs/globs), sorted; no directories."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    urls: list[str] = []
    for pat in patterns:
        fs, _ = open_fs(pat, storage_options)
        protocol = protocol_of(pat)
        body = pat.split("://", 1)[1] if "://" in pat else pat
        with _translated(pat, "", fs):
            if any(c in body for c in "*?["):
                found = fs.glob(body, detail=True)
                paths = sorted(p for p, info in found.items() if info.get("type", "file") != "directory")
            else:
                paths = [body]
            if not paths:
                check_bucket(fs, pat)  # an empty match in a missing bucket is an error, not []
        urls += [f"{protocol}://{p}" if "://" in pat else p for p in paths]
    return urls


def chunks(items: Sequence[str], chunk_size: int) -> list[list[str]]:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    return [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]


class FileStep:
    """What runs in the pod for one task of ``map_files``: ``fn`` on each URL of a chunk.

    With one URL per task a failure raises :class:`FileError` (the task fails,
    as a Job's pod would). With a chunk, each file's failure is caught and
    returned in its place, so one bad file does not lose its neighbours' results.
    """

    def __init__(self, fn: Callable[[str], Any], chunked: bool) -> None:
        self.fn = fn
        self.chunked = chunked

    def __call__(self, urls: list[str]) -> list[Any]:
        out: list[Any] = []
        for url in urls:
            try:
                out.append(self.fn(url))
            except Exception as exc:
                tb = traceback.format_exc()
                error = FileError(url, f"{type(exc).__name__}: {exc}", _picklable(exc), tb)
                if not self.chunked:
                    raise error from exc
                print(f"[kjupyter] {url} failed:\n{error.remote_traceback}", flush=True)
                out.append(error)
        return out


def flatten(urls: Sequence[str], groups: Sequence[list[str]], results: Sequence[Any]) -> list[Any]:
    """Per-file results in URL order from per-task results; a failed task fails each of its files."""
    out: list[Any] = []
    for group, result in zip(groups, results, strict=True):
        if isinstance(result, FileError):
            out.append(result)
        elif isinstance(result, BaseException):
            out += [_as_file_error(url, result) for url in group]
        else:
            out += list(result)
    assert len(out) == len(urls)
    return out


def first_error(results: Iterable[Any]) -> FileError | None:
    return next((r for r in results if isinstance(r, FileError)), None)


def _as_file_error(url: str, exc: BaseException) -> FileError:
    error = FileError(url, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", exc)
    error.__cause__ = exc
    return error


def _picklable(exc: BaseException) -> BaseException | None:
    import pickle

    try:
        pickle.dumps(exc)
    except Exception:
        return None
    return exc


# --- whoami -------------------------------------------------------------------------------------


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
    with _translated(url, ""):
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
