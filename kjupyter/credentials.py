"""Credentials never leave this machine: not in a payload, a manifest, or a pod's environment.

:func:`shareable_options` strips secret keys from store options before they travel;
:func:`check_no_credentials` refuses a payload that carries the value of a local secret
(credential environment variables, ``~/.aws/credentials``).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from typing import Any

from kjupyter.errors import SerializationError

# Option keys that hold secrets: they must never be written to a manifest or an env var of a pod.
_SECRET_KEYS = re.compile(
    r"^(key|secret|token|password|session_token|access_key|secret_key|account_key|sas_token|client_secret|"
    r"aws_access_key_id|aws_secret_access_key|aws_session_token|credentials?|connection_string)$",
    re.IGNORECASE,
)


def shareable_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` without anything secret (keys, tokens, passwords), at any depth.

    This is what may travel to a runner (``KJUPYTER_STORE_OPTIONS``) or into a
    manifest; the runner gets credentials from its environment instead.
    """
    out: dict[str, Any] = {}
    for key, value in options.items():
        if _SECRET_KEYS.match(str(key)):
            continue
        out[key] = shareable_options(value) if isinstance(value, Mapping) else value
    return out


_SECRET_ENV = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|PRIVATE_KEY|ACCESS_KEY|API_KEY|CREDENTIAL)", re.IGNORECASE)
_MIN_SECRET_LEN = 12  # shorter values ("true", "1") would match by chance


def local_secrets() -> dict[str, str]:
    """Secret values of this machine: credential env vars and ``~/.aws/credentials``, by where they come from."""
    found = {f"${name}": value for name, value in os.environ.items() if _SECRET_ENV.search(name)}
    aws_file = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
    with contextlib.suppress(OSError, ValueError):
        import configparser

        parser = configparser.RawConfigParser()
        parser.read(aws_file)
        for section in parser.sections():
            for key in ("aws_secret_access_key", "aws_session_token", "aws_access_key_id"):
                if parser.has_option(section, key):
                    found[f"{aws_file} [{section}] {key}"] = parser.get(section, key)
    return {where: value for where, value in found.items() if len(value) >= _MIN_SECRET_LEN}


def check_no_credentials(data: bytes | bytearray, what: str) -> None:
    """Raise :class:`SerializationError` if ``data`` (a payload about to leave) holds a local secret."""
    for where, value in local_secrets().items():
        if value.encode() in data:
            raise SerializationError(
                f"{what} would carry the value of {where}, and credentials must never travel in a payload: read them "
                "inside the function, and give pods credentials through the profile's service account or secrets=[...]"
            )
