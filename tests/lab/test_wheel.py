"""`pip install` of the built wheel enables both extensions, with no Node at install time."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from .browser import BUILT, REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def run(cmd: list[str], **kwargs: object) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return re.sub(r"\x1b\[[0-9;]*m", "", str(result.stdout + result.stderr))


def test_wheel_install_enables_the_lab_and_server_extensions(tmp_path: Path) -> None:
    pytest.importorskip("jupyterlab", reason="pip install jupyterlab")
    if not (BUILT / "package.json").exists():
        message = (
            "the lab extension is not built: bash dev/install-lab.sh (or cd labextension && npm ci && npm run build)"
        )
        if os.environ.get("CI"):  # CI runs dev/install-lab.sh first: a missing build is a failure there
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    dist = tmp_path / "dist"
    # The lab extension is already built (skip-if-exists), so the hook does not need Node here.
    no_isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatch_jupyter_builder") else []
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", *no_isolation, "-w", str(dist), str(REPO)])
    (wheel,) = dist.glob("kjupyter-*.whl")
    names = run([sys.executable, "-m", "zipfile", "-l", str(wheel)])
    assert "share/jupyter/labextensions/kjupyter/package.json" in names
    assert "share/jupyter/labextensions/kjupyter/install.json" in names
    assert "etc/jupyter/jupyter_server_config.d/kjupyter.json" in names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "PYTHONPATH"))}
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "no-user-config")
    env["JUPYTER_DATA_DIR"] = str(tmp_path / "no-user-data")
    location = run(
        [str(python), "-c", "import kjupyter.server, os; print(os.path.dirname(kjupyter.server.__file__))"], env=env
    )
    assert str(env_dir) in location, f"the venv imports kjupyter from {location.strip()}, not from the wheel"
    hooks = run([str(python), "-c", "import kjupyter; print(kjupyter._jupyter_server_extension_points(), "
                 "kjupyter._jupyter_labextension_paths())"], env=env)  # fmt: skip
    assert "[{'module': 'kjupyter.server'}] [{'src': 'labextension', 'dest': 'kjupyter'}]" in hooks

    labext = run([str(python), "-m", "jupyterlab.labextensions", "list"], env=env)
    line = next((ln for ln in labext.splitlines() if ln.strip().startswith("kjupyter ")), "")
    assert "enabled" in line and "OK" in line and str(env_dir) in labext, labext
    server = run([str(python), "-m", "jupyter_server.extension.serverextension", "list"], env=env)
    assert re.search(r"kjupyter\.server\s+enabled", server) and re.search(r"kjupyter\.server\s+OK", server), server


def test_the_package_hooks_point_at_the_extensions() -> None:
    """``kjupyter._jupyter_*`` (what ``jupyter labextension develop`` and ``server extension enable`` read)."""
    import importlib

    import kjupyter

    (server_point,) = kjupyter._jupyter_server_extension_points()
    server = importlib.import_module(server_point["module"])
    assert callable(server._load_jupyter_server_extension)
    (lab,) = kjupyter._jupyter_labextension_paths()
    assert lab["dest"] == "kjupyter"
    assert Path(kjupyter.__file__).parent / lab["src"] == BUILT
    config = json.loads((REPO / "jupyter-config/server-config/jupyter_server_config.d/kjupyter.json").read_text())
    assert config == {"ServerApp": {"jpserver_extensions": {server_point["module"]: True}}}
