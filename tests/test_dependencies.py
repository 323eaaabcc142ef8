"""Facts about other packages that pyproject.toml's ranges rest on: a test fails when a fact changes."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirements_of(dist: str, on: str) -> list[Requirement]:
    """The installed ``dist``'s own requirements on ``on`` (outside extras, for this interpreter)."""
    found = []
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        marker_ok = req.marker is None or req.marker.evaluate({**default_environment(), "extra": ""})
        if canonicalize_name(req.name) == canonicalize_name(on) and marker_ok:
            found.append(req)
    return found


def test_kubernetes_37_still_cannot_be_installed_beside_s3fs() -> None:
    """kubernetes 37 requires python-dateutil>=3; s3fs stands on aiobotocore and botocore, which
    require python-dateutil<3. So pyproject.toml caps kubernetes below 37. When this fails, the
    installed botocore and aiobotocore (the newest that s3fs allows) take dateutil 3: lift the cap
    in pyproject.toml, and make the code and the tests work with kubernetes 37 (it validates
    request bodies with pydantic models before sending them; see shared TESTING.md)."""
    try:
        metadata.version("botocore")
    except metadata.PackageNotFoundError:
        pytest.skip("botocore is not installed (pip install 'kjupyter[s3]')")
    blockers = {
        f"{dist} {metadata.version(dist)} requires {req}"
        for dist in ("botocore", "aiobotocore")
        for req in requirements_of(dist, "python-dateutil")
        if not req.specifier.contains("3.0.0")
    }
    assert blockers, (
        "botocore and aiobotocore now allow python-dateutil 3: kubernetes 37 can be installed beside s3fs; "
        "lift the kubernetes<37 cap in pyproject.toml"
    )
    declared = [Requirement(r) for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    (kubernetes,) = [r for r in declared if r.name == "kubernetes"]
    assert not kubernetes.specifier.contains("37.0.0"), "the cap is gone from pyproject.toml: remove this test"
    assert Version(metadata.version("kubernetes")) < Version("37")
