"""Print a pip constraints file that pins every runtime dependency to its declared floor.

The floor of a requirement is its ``>=`` bound in pyproject.toml: in ``[project].dependencies``
and in the extras that users install (every extra but ``test``). ``bash dev/test.sh --oldest``
installs with these constraints, so the bottom of every declared range is tested, as the
default run tests the top. A requirement without a ``>=`` bound has no floor to test: this
script refuses it, so that every range stays two-ended.

Usage (standard library only: runs before any install):
  python3 dev/floors.py            the constraints (name==floor), one a line
  python3 dev/floors.py --extras   the user extras, comma-separated (what to install with the floors)
  python3 dev/floors.py --report   each runtime dependency's installed version beside its floor
  python3 dev/floors.py --check    the same, and exit 1 unless each installed version is its floor
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

# Extras that are not what a user installs: their requirements are tools and test helpers.
NOT_RUNTIME = {"test"}
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)(;.*)?$")
FLOOR = re.compile(r">=\s*([0-9][^,\s]*)")


PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def user_extras(project: dict[str, object]) -> list[str]:
    extras = project.get("optional-dependencies", {})
    assert isinstance(extras, dict)
    return [extra for extra in extras if extra not in NOT_RUNTIME]


def floors(pyproject: Path = PYPROJECT) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    name = project["name"].lower()
    requirements = list(project.get("dependencies", []))
    for extra in user_extras(project):
        requirements += project["optional-dependencies"][extra]
    found: dict[str, str] = {}
    for text in requirements:
        match = REQUIREMENT.match(text)
        if match is None:
            raise SystemExit(f"floors: cannot read the requirement {text!r}")
        dist, specifier = match.group(1).lower().replace("_", "-"), match.group(3)
        if dist == name:  # kjupyter[...] inside an extra
            continue
        floor = FLOOR.search(specifier)
        if floor is None:
            raise SystemExit(f"floors: {text!r} has no '>=' floor; give it one, so that it can be tested")
        if found.get(dist, floor.group(1)) != floor.group(1):
            raise SystemExit(f"floors: {dist} has two floors ({found[dist]} and {floor.group(1)}); keep one")
        found[dist] = floor.group(1)
    return found


def same(installed: str, floor: str) -> bool:
    """``2024.2.0`` is the floor ``2024.2``, as pip's ``==2024.2`` matches it."""
    return [*installed.split("."), "0", "0", "0"][:4] == [*floor.split("."), "0", "0", "0"][:4]


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "--extras":
        print(",".join(user_extras(tomllib.loads(PYPROJECT.read_text())["project"])))
    elif mode in ("--report", "--check"):
        wrong = []
        for dist, floor in sorted(floors().items()):
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                version = "not installed"
            if mode == "--check" and not same(version, floor):
                wrong.append(dist)
            print(f"  {dist:<16} {version:<14} (floor {floor})")
        if wrong:
            raise SystemExit(f"floors: not at their floor: {', '.join(wrong)}")
    elif mode:
        raise SystemExit(__doc__)
    else:
        print("# The lowest declared version of each runtime dependency (dev/floors.py, from pyproject.toml)")
        for dist, version in sorted(floors().items()):
            print(f"{dist}=={version}")


if __name__ == "__main__":
    main()
