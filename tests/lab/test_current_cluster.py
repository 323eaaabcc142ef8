"""Which cluster a run that names none goes to: one precedence (kjupyter/lab_choice.py), each step tested.

cluster= > %kube use > the lab's status-bar choice (that lab's kernels only) > KJUPYTER_CLUSTER >
``default`` in the configuration > the built-in ``local``. The lab's choice is a file of one Jupyter
server, named to its kernels in KJUPYTER_LAB_CLUSTER_FILE; any process that is not a kernel ignores it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from kjupyter import lab_choice
from kjupyter import session as session_mod
from kjupyter.config import load_config
from kjupyter.errors import KjupyterWarning
from kjupyter.server.state import LabChoice

REPO = Path(__file__).resolve().parents[2]
CONFIG = """\
default = "local"
[clusters.local]
backend = "local"
[clusters.other]
backend = "local"
[clusters.gpus]
backend = "local"
[clusters.gpus.gpus.A100]
node_selector = { "accelerator" = "a100" }
"""


@pytest.fixture
def config_file(tmp_path: Path, isolated_home: Path) -> Path:
    path = tmp_path / "kjupyter.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabChoice:
    """This process as a kernel of a lab: the lab's choice file named in the environment, as the server does."""
    choice = LabChoice(tmp_path / "runtime" / "kjupyter-cluster-8888")
    monkeypatch.setenv(lab_choice.ENV, str(choice.path))
    monkeypatch.setattr(lab_choice, "in_kernel", lambda: True)
    return choice


@pytest.fixture
def sess(config_file: Path) -> session_mod.Session:
    return session_mod.Session(load_config(files=[config_file]))


# --- each step of the precedence -------------------------------------------------------------


def test_a_named_cluster_wins_over_everything(config_file: Path, lab: LabChoice) -> None:
    sess = session_mod.Session(load_config(files=[config_file], env={"KJUPYTER_CLUSTER": "other"}))
    lab.write("other")
    sess.cluster = "other"  # %kube use other
    assert sess.profile_for({"cluster": "gpus"}).name == "gpus"


def test_kube_use_wins_over_the_lab_choice(sess: session_mod.Session, lab: LabChoice) -> None:
    lab.write("other")
    sess.cluster = "gpus"
    assert sess.profile_for({}).name == "gpus"
    assert sess.choice() == lab_choice.Choice("gpus", lab_choice.KUBE_USE)
    sess.cluster = None
    assert sess.profile_for({}).name == "other"


def test_the_lab_choice_wins_over_kjupyter_cluster_in_its_kernels(config_file: Path, lab: LabChoice) -> None:
    sess = session_mod.Session(load_config(files=[config_file], env={"KJUPYTER_CLUSTER": "gpus"}))
    assert sess.choice() == lab_choice.Choice("gpus", "KJUPYTER_CLUSTER=gpus")  # nothing chosen in the lab yet
    lab.write("other")
    assert sess.choice() == lab_choice.Choice("other", f"chosen in JupyterLab's status bar ({lab.path})")
    lab.write("local")  # a switch in the lab applies to a kernel that is already running
    assert sess.profile_for({}).name == "local"
    lab.write(None)
    assert sess.profile_for({}).name == "gpus"


def test_kjupyter_cluster_wins_over_the_configured_default(config_file: Path) -> None:
    config = load_config(files=[config_file], env={"KJUPYTER_CLUSTER": "other"})
    assert session_mod.Session(config).choice() == lab_choice.Choice("other", "KJUPYTER_CLUSTER=other")


def test_the_configured_default_wins_over_the_built_in_one(tmp_path: Path, config_file: Path) -> None:
    assert session_mod.Session(load_config(files=[config_file], env={})).choice() == lab_choice.Choice(
        "local", f"`default` in {config_file}"
    )
    other = tmp_path / "other.toml"
    other.write_text('default = "other"\n[clusters.other]\nbackend = "local"\n')
    later = tmp_path / "later.toml"
    later.write_text('[clusters.gpus]\nbackend = "local"\n')  # names no default: the earlier file still chose it
    config = load_config(files=[config_file, other, later], env={})
    assert (config.default, config.default_source) == ("other", f"`default` in {other}")


def test_without_configuration_the_built_in_local_is_used(isolated_home: Path) -> None:
    assert session_mod.Session(load_config(files=[], env={})).choice() == lab_choice.Choice(
        "local", "the built-in default"
    )


# --- the lab's choice is for that lab's kernels only ----------------------------------------------


def test_a_process_that_is_no_kernel_ignores_an_inherited_lab_choice(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    choice = LabChoice(tmp_path / "runtime" / "kjupyter-cluster-8888")
    choice.write("other")
    monkeypatch.setenv(lab_choice.ENV, str(choice.path))
    assert lab_choice.in_kernel() is False  # pytest is no kernel
    sess = session_mod.Session(load_config(files=[config_file], env={"KJUPYTER_CLUSTER": "gpus"}))
    assert sess.choice() == lab_choice.Choice("gpus", "KJUPYTER_CLUSTER=gpus")


def test_a_real_kernel_follows_its_lab_and_a_script_does_not(config_file: Path, tmp_path: Path) -> None:
    """A kernel started with the lab's variable takes the lab's choice; `kjupyter clusters` run with the
    same environment (a lab terminal) stars KJUPYTER_CLUSTER's cluster and says what the lab chose."""
    from jupyter_client.manager import start_new_kernel

    choice = LabChoice(tmp_path / "runtime" / "kjupyter-cluster-8888")
    choice.write("other")
    env = {**os.environ, "KJUPYTER_CONFIG": str(config_file), "KJUPYTER_CLUSTER": "gpus",
           lab_choice.ENV: str(choice.path), "PYTHONPATH": str(REPO)}  # fmt: skip
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        seen: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                seen.append(msg["content"]["text"])

        code = "from kjupyter.session import get_session\nc = get_session().choice()\nprint(c.name, '|', c.source)"
        kc.execute_interactive(code, output_hook=hook, timeout=60)
        assert "".join(seen).strip() == f"other | chosen in JupyterLab's status bar ({choice.path})"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    out = kjupyter_cli(["clusters", "--no-probe"], env)
    starred = [line.split()[1] for line in out.splitlines() if line.startswith("* ")]
    assert starred == ["gpus"], out
    assert "(*) runs that name no cluster go to 'gpus'; what chose it: KJUPYTER_CLUSTER=gpus." in out
    assert (
        "the first that applies: cluster= on the call (--cluster) > %kube use NAME in the kernel > the cluster "
        "chosen in JupyterLab's status bar (that lab's kernels only) > KJUPYTER_CLUSTER > `default` in the "
        "configuration > the built-in local." in out
    )
    assert "The JupyterLab this runs in chose 'other' in its status bar: that applies to its kernels, not here." in out
    rows = json.loads(kjupyter_cli(["clusters", "--no-probe", "--json"], env))
    assert [(r["name"], r["current"], r["chosen_by"]) for r in rows if r["current"] or r["default"]] == [
        ("gpus", True, "KJUPYTER_CLUSTER=gpus")
    ]


def kjupyter_cli(args: list[str], env: dict[str, str]) -> str:
    """``kjupyter ARGS`` in a new process (as from a terminal of the lab), its output."""
    code = f"import sys; from kjupyter.cli import main; sys.exit(main({args!r}))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- what the kernel does with the choice -------------------------------------------------------


def test_a_gpu_type_the_chosen_cluster_lacks_goes_to_one_that_offers_it(
    sess: session_mod.Session, lab: LabChoice
) -> None:
    lab.write("other")
    notes: list[str] = []
    sess.notice = notes.append
    assert sess.profile_for({"gpu": "A100:1"}).name == "gpus"
    assert notes and "'gpus'" in notes[0]


def test_an_unknown_choice_is_ignored_with_one_warning(sess: session_mod.Session, lab: LabChoice) -> None:
    lab.write("gone-cluster")
    with pytest.warns(KjupyterWarning, match=r"'gone-cluster' chosen in JupyterLab .* is not configured") as seen:
        assert sess.profile_for({}).name == "local"
    assert "gpus, local, other" in str(seen[0].message)  # sorted, so the list reads the same every time
    assert str(config_path(sess)) in str(seen[0].message)  # and says what chose the cluster used instead
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sess.profile_for({}).name == "local"  # said once, not at every run
    lab.write("another-gone")
    with pytest.warns(KjupyterWarning, match="another-gone"):
        sess.profile_for({})


def config_path(sess: session_mod.Session) -> str:
    return sess.config.sources[0]


def test_an_empty_or_unreadable_choice_is_no_choice(sess: session_mod.Session, lab: LabChoice) -> None:
    lab.path.parent.mkdir(parents=True, exist_ok=True)
    lab.path.write_text("  \n")
    assert sess.profile_for({}).name == "local"
    lab.path.write_bytes(b"\xff\xfe")
    assert sess.profile_for({}).name == "local"


def test_runs_go_to_the_chosen_cluster(sess: session_mod.Session, lab: LabChoice) -> None:
    lab.write("other")
    try:
        future = sess.submit_call(lambda: 7, (), {}, {})
        assert future.cluster == "other"
        assert future.result(timeout=60) == 7
        attached = sess.attach(future.run_id)  # attach without a cluster looks on the chosen one
        assert attached.cluster == "other" and attached.result(timeout=30) == 7
    finally:
        sess.close()
