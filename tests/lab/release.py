"""Release builds from a clean copy, as a fresh clone has the project: for the wheel and binder tests.

A clean copy holds the files git tracks (with their uncommitted edits) and new files git does
not ignore: no ``node_modules``, no built ``kjupyter/labextension``. Builds run with the pinned
build tools of ``dev/constraints-tools.txt`` (``PIP_CONSTRAINT`` for ``python -m build``'s own
install of the build requirements, ``PIP_BUILD_CONSTRAINT`` for the isolated build environment
of ``pip install .``). The builds are slow (npm install, tsc, the bundler: ~30 s each), so the
session starts every one that a selected test uses when it starts (tests/conftest.py), in the
background at the lowest CPU and I/O priority, where they use what the earlier tests leave idle;
a test that needs a build raises its priority back and waits for it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "dev" / "constraints-tools.txt"
# Seconds a test waits for a build (from when it starts waiting: before, the build had the idle CPU only).
BUILD_TIMEOUT = 420.0
# The prefix that starts a build at the lowest CPU priority, and the idle I/O class.
LOW_PRIORITY = [
    *(["nice", "-n", "19"] if shutil.which("nice") else []),
    *(["ionice", "-c", "3"] if shutil.which("ionice") else []),
]


def need(tool: str, why: str) -> None:
    """Skip (fail under CI, where dev/test.sh installed everything) when ``tool`` is missing."""
    if shutil.which(tool) is None:
        message = f"no {tool} on PATH: {why}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def clean_copy(dest: Path) -> Path:
    """Copy what a fresh clone of this work tree would hold into ``dest``."""
    need("git", "the clean copy is made from `git ls-files`")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True)  # fmt: skip
    if listed.returncode != 0:
        message = f"{REPO} is not a git work tree (an unpacked sdist?): {listed.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    listing = listed.stdout
    for name in listing.decode().split("\0"):
        source = REPO / name
        if name and source.is_file():  # not a file deleted in the work tree but not yet in git
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def build_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without Jupyter, hatch or pip settings of its own, with the pinned build tools."""
    dropped = ("JUPYTER", "PYTHONPATH", "HATCH_", "PIP_CONSTRAINT", "PIP_BUILD_CONSTRAINT", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PIP_CONSTRAINT"] = env["PIP_BUILD_CONSTRAINT"] = str(TOOLS)
    # npm's cache when there is one, without asking the registry whether each package changed.
    env.setdefault("npm_config_prefer_offline", "true")
    env.update(extra or {})
    return env


def venv_over_this_one(env_dir: Path) -> Path:
    """A fresh venv that finds this interpreter's packages after its own, and returns its python.

    Like binder's image, where JupyterLab is installed before postBuild runs: what gets
    installed goes into the venv (and is imported from there first), while the requirements
    already installed here count as installed, so nothing has to be downloaded. Only the
    site-packages folders are added (as plain paths: their .pth files, such as an editable
    install of kjupyter, are not run).
    """
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    outer = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    if site.ENABLE_USER_SITE:
        outer.append(site.getusersitepackages())
    paths = dict.fromkeys(p for p in outer if os.path.isdir(p) and Path(p).resolve() != Path(purelib).resolve())
    (Path(purelib) / "_kjupyter_test_outer_env.pth").write_text("".join(f"{p}\n" for p in paths))
    return python


def jupyter_env(tmp: Path, env_dir: Path) -> dict[str, str]:
    """For commands of the venv ``env_dir``: its bin first, private Jupyter dirs and home."""
    env = build_env()
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(env_dir)
    for name, folder in (("JUPYTER_CONFIG_DIR", "jupyter-config"), ("JUPYTER_DATA_DIR", "jupyter-data"),
                         ("JUPYTER_RUNTIME_DIR", "jupyter-runtime")):  # fmt: skip
        env[name] = str(tmp / folder)
    return env


@dataclass
class Job:
    """A command running in the background, its output going to ``log``."""

    name: str
    cmd: list[str]
    cwd: Path
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[Any] | None = None
    details: dict[str, Path] = field(default_factory=dict)

    def start(self) -> None:
        """Start in the background, at the lowest CPU priority (and I/O priority, with ionice)."""
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([*LOW_PRIORITY, *self.cmd], cwd=self.cwd, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def wait(self) -> str:
        """The output, once the command has succeeded (the test fails with the output if not)."""
        assert self.proc is not None, f"{self.name} was not started"
        if self.proc.poll() is None:  # a test waits for it now: back to normal priority, where allowed (root)
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PGRP, self.proc.pid, 0)
            if shutil.which("ionice"):
                subprocess.run(["ionice", "-c", "2", "-n", "4", "-P", str(self.proc.pid)], capture_output=True)
        try:
            self.proc.wait(BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.name} took more than {BUILD_TIMEOUT:.0f} s:\n{self.output()[-6000:]}", pytrace=False)
        output = self.output()
        if self.proc.returncode != 0:
            pytest.fail(f"{self.name} failed (exit {self.proc.returncode}):\n$ {' '.join(self.cmd)}\n{output[-8000:]}",
                        pytrace=False)  # fmt: skip
        return output

    def output(self) -> str:
        return re.sub(r"\x1b\[[0-9;]*m", "", self.log.read_text(errors="replace"))

    def stop(self) -> None:
        """End the command and what it started (npm, node: its process group), while it is still ours."""
        if self.proc is None or self.proc.poll() is not None:
            return  # reaped: its process group id may name someone else's group by now
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def release_build_job(work: Path) -> Job:
    """``python -m build`` of a clean copy: the sdist, then the wheel built from that sdist alone."""
    need("npm", "the release build compiles the lab extension (bash dev/install-lab.sh installs Node)")
    src = clean_copy(work / "src")
    dist = work / "dist"
    return Job("python -m build", [sys.executable, "-m", "build", "--outdir", str(dist), str(src)], cwd=work,
               env=build_env(), log=work / "build.log", details={"src": src, "dist": dist})  # fmt: skip


def binder_job(work: Path) -> Job:
    """binder/postBuild, run in a clean copy with a fresh venv's python first on PATH."""
    need("npm", "binder's pip install builds the lab extension (bash dev/install-lab.sh installs Node)")
    src = clean_copy(work / "src")
    env_dir = work / "venv"
    venv_over_this_one(env_dir)
    home = work / "home"
    home.mkdir()
    env = jupyter_env(work, env_dir)
    env["HOME"] = str(home)
    # The home is new (postBuild writes its config there): keep npm's cache where it was.
    env.setdefault("npm_config_cache", str(Path.home() / ".npm"))
    return Job("binder/postBuild", ["bash", str(src / "binder" / "postBuild")], cwd=src, env=env,
               log=work / "postBuild.log", details={"src": src, "venv": env_dir, "home": home})  # fmt: skip


JOBS = {"release_build": release_build_job, "binder_post_build": binder_job}


class Releases:
    """The session's release builds, by fixture name (``JOBS``): started once, waited for by tests."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.jobs: dict[str, Job] = {}
        self.errors: dict[str, BaseException] = {}

    def start(self, name: str) -> None:
        if name in self.jobs or name in self.errors:
            return
        try:
            job = JOBS[name](self.tmp_path_factory.mktemp(name))
            job.start()
        except BaseException as exc:  # a skip (no npm, no git) or a failure: for the test that uses the build
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.errors[name] = exc
        else:
            self.jobs[name] = job

    def get(self, name: str) -> Job:
        self.start(name)
        if name in self.errors:
            raise self.errors[name]
        return self.jobs[name]

    def stop(self) -> None:
        for job in self.jobs.values():
            job.stop()
