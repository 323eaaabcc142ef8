"""The release build, from a clean copy: ``python -m build`` makes the sdist, the sdist alone makes
the wheel, and ``pip install`` of that wheel with ``[lab]`` enables both extensions, with no Node."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from .browser import BUILT, REPO
from .release import Job, jupyter_env, venv_over_this_one

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)


@dataclass
class Dists:
    sdist: Path
    wheel: Path
    log: str
    src: Path


@pytest.fixture(scope="session")
def dists(release_build: Job) -> Dists:
    log = release_build.wait()
    dist = release_build.details["dist"]
    (sdist,) = dist.glob("kjupyter-*.tar.gz")
    (wheel,) = dist.glob("kjupyter-*.whl")
    return Dists(sdist, wheel, log, release_build.details["src"])


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def test_python_m_build_of_a_clean_copy_makes_an_sdist_that_alone_makes_the_wheel(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as tar:
        root = tar.getnames()[0].split("/")[0]
        sdist = {m.name.removeprefix(root + "/"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    with zipfile.ZipFile(dists.wheel) as whl:
        wheel = {name: whl.read(name) for name in whl.namelist()}

    # The sdist has every file of the clean copy (but CI's and the benchmarks'), so it can build
    # everything again, and the lab extension built once, in production mode; nothing of node's.
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    expected = {name for name in tracked if (REPO / name).is_file() and not name.startswith((".ci/", "benchmarks/"))}
    assert not expected - set(sdist), f"missing from the sdist: {sorted(expected - set(sdist))}"
    assert not [n for n in sdist if "node_modules/" in n or n.startswith("labextension/lib/")]
    built = {n.removeprefix("kjupyter/labextension/"): data for n, data in sdist.items()
             if n.startswith("kjupyter/labextension/")}  # fmt: skip
    assert {"package.json", "static/style.js"} <= set(built), sorted(built)
    assert [n for n in built if re.fullmatch(r"static/remoteEntry\.[0-9a-f]+\.js", n)], sorted(built)
    assert json.loads(built["package.json"])["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")

    # The sdist's extension was compiled from the sources (the sdist hook has no skip-if-exists).
    # The wheel, built by `python -m build` from the sdist alone, ran no npm: it ships the very
    # files that the sdist carries, the lab extension, its install.json and the server config.
    sdist_phase, wheel_phase = dists.log.split("Building wheel from sdist", 1)
    assert "npm run build:prod" in sdist_phase and "jupyter-builder build" in sdist_phase, sdist_phase
    assert "npm install" not in wheel_phase and "npm run" not in wheel_phase, wheel_phase
    data = f"{dists.wheel.name.split('-py3')[0]}.data/data/"
    shipped = {n.removeprefix(f"{data}share/jupyter/labextensions/kjupyter/"): d for n, d in wheel.items()
               if n.startswith(f"{data}share/jupyter/labextensions/kjupyter/")}  # fmt: skip
    assert digests(shipped) == digests({**built, "install.json": sdist["install.json"]})
    python_files = {
        n: d for n, d in sdist.items() if n.startswith("kjupyter/") and not n.startswith("kjupyter/labextension/")
    }
    assert digests({n: wheel[n] for n in python_files if n in wheel}) == digests(python_files)
    config = "jupyter-config/server-config/jupyter_server_config.d/kjupyter.json"
    assert wheel[f"{data}etc/jupyter/jupyter_server_config.d/kjupyter.json"] == sdist[config]

    # npm install in the build did not rewrite the lock file: the lock and package.json agree.
    lock = "labextension/package-lock.json"
    assert (dists.src / lock).read_bytes() == (REPO / lock).read_bytes(), "npm install changed package-lock.json"


def test_wheel_install_enables_the_lab_and_server_extensions(dists: Dists, tmp_path: Path) -> None:
    """``pip install kjupyter-*.whl[lab]`` into a fresh venv, with no Node: both extensions are enabled.

    The venv sees this environment's packages (tests/lab/release.py), so ``[lab]``'s requirements
    are satisfied there and ``--no-index`` proves that nothing but the wheel is needed.
    """
    env_dir = tmp_path / "venv"
    python = venv_over_this_one(env_dir)
    env = jupyter_env(tmp_path, env_dir)
    run([str(python), "-m", "pip", "install", "--no-index", f"{dists.wheel}[lab]"], env=env)
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


def test_binder_post_build_works_in_a_fresh_venv(binder_post_build: Job) -> None:
    """binder/postBuild (pip install of the clean clone with [lab,notebook], which builds the lab
    extension with Node; both extensions enabled; the local backend made the default)."""
    output = binder_post_build.wait()
    env_dir, home = binder_post_build.details["venv"], binder_post_build.details["home"]
    python = env_dir / "bin" / "python"
    env = {**binder_post_build.env, "PYTHONNOUSERSITE": "1"}
    location = run([str(python), "-c", "import kjupyter.server, os; print(os.path.dirname(kjupyter.server.__file__))"],
                   env=env)  # fmt: skip
    assert str(env_dir) in location, output
    assert (env_dir / "share/jupyter/labextensions/kjupyter/static/style.js").is_file(), output
    assert (env_dir / "etc/jupyter/jupyter_server_config.d/kjupyter.json").is_file(), output
    config = (home / ".config/kjupyter/config.toml").read_text()
    assert 'default = "local"' in config and 'backend = "local"' in config
    # binder/start, which mybinder runs the notebook server with, selects the local backend.
    start = binder_post_build.details["src"] / "binder" / "start"
    shown = run(["bash", str(start), str(python), "-c", "import os; print(os.environ['KJUPYTER_CLUSTER'])"], env=env)
    assert shown.strip() == "local"


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
