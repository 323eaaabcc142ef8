"""Errors of fsspec and the cloud libraries, turned into one :class:`StoreError` sentence naming the URL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fsspec.spec import AbstractFileSystem

from kjupyter.errors import KjupyterError, StoreError

_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}
_PACKAGES = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}
_STORE_LIBS = ("botocore", "aiobotocore", "aiohttp", "gcsfs", "google", "s3fs", "fsspec", "adlfs", "azure")


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def missing_extra(url: str) -> StoreError:
    protocol = protocol_of(url)
    extra = _EXTRAS.get(protocol)
    if extra:
        return StoreError(
            f"the store {url} needs {_PACKAGES[extra]}, which is not installed: pip install 'kjupyter[{extra}]'"
        )
    return StoreError(f"the store {url} needs the fsspec implementation of {protocol}://, which is not installed")


def protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


@contextlib.contextmanager
def translated(url: str, name: str, fs: AbstractFileSystem | None = None) -> Iterator[None]:
    """Turn the errors of fsspec and the cloud libraries into one StoreError naming the URL.

    With ``fs``, a "not found" on an object store checks whether the whole bucket is missing.
    """
    try:
        yield
    except KjupyterError:
        raise
    except ImportError:
        raise missing_extra(url) from None
    except Exception as exc:
        if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _STORE_LIBS:
            where = f"{url}/{name}".rstrip("/")
            if isinstance(exc, FileNotFoundError) and fs is not None and not bucket_exists(fs, url):
                where_bucket = f"{protocol_of(url)}://{_bucket(url)}"
                raise StoreError(
                    f"the bucket {where_bucket} of {where} does not exist: create it, or fix `store` in the cluster profile"
                ) from None
            raise store_error(exc, where) from None
        raise


def check_bucket(fs: AbstractFileSystem, url: str) -> None:
    """Raise a StoreError naming ``url`` if its bucket does not exist (object stores only)."""
    if not bucket_exists(fs, url):
        bucket = f"{protocol_of(url)}://{_bucket(url)}"
        raise StoreError(f"the bucket {bucket} of {url} does not exist: create it, or fix the URL")


def _bucket(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def bucket_exists(fs: AbstractFileSystem, url: str) -> bool:
    if "file" in protocols(fs) or "://" not in url:
        return True
    try:
        return bool(fs.exists(_bucket(url)))
    except Exception:
        return True  # cannot tell: report the original error


def store_error(exc: BaseException, where: str) -> StoreError:
    """One sentence that says what went wrong at ``where`` and what to do about it."""
    text = f"{type(exc).__name__} {exc}"
    lowered = text.lower()
    if "nosuchbucket" in lowered or "bucket does not exist" in lowered or "bucket not found" in lowered:
        return StoreError(f"the bucket of {where} does not exist: create it, or fix `store` in the cluster profile")
    if isinstance(exc, PermissionError) or "403" in text or "accessdenied" in lowered or "forbidden" in lowered:
        return StoreError(
            f"access to {where} was denied (403): the identity in use (see `kjupyter doctor --store`) "
            "lacks permission; check the credentials, or the profile's service account"
        )
    if "nocredentials" in lowered or "unable to locate credentials" in lowered:
        return StoreError(
            f"no credentials were found for {where}: set them in the environment, or give the pod a service "
            "account or secrets=[...]"
        )
    if isinstance(exc, FileNotFoundError):
        return StoreError(f"{where} does not exist (the run may have been deleted, or never written)")
    if isinstance(exc, ConnectionError) or "connect" in lowered or "endpoint" in lowered:
        return StoreError(
            f"the store at {where} cannot be reached ({short_error(exc)}); check its endpoint and network"
        )
    return StoreError(f"the store failed at {where}: {short_error(exc)}")


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
