"""Kernels send runs to the cluster chosen in JupyterLab's status bar ($KJUPYTER_HOME/current-cluster).

Precedence: ``cluster=`` on the call, then ``%kube use``, then the lab's choice (if it is a
configured profile), then the configuration's ``default``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from kjupyter import session as session_mod
from kjupyter.config import load_config
from kjupyter.errors import KjupyterWarning
from kjupyter.server import state

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
def sess(tmp_path: Path, isolated_home: Path) -> session_mod.Session:
    path = tmp_path / "kjupyter.toml"
    path.write_text(CONFIG)
    return session_mod.Session(load_config(files=[path]))


def choose(name: str) -> None:
    state.write_current(name)  # what PUT /kjupyter/cluster does


def test_without_a_choice_the_configured_default_is_used(sess: session_mod.Session) -> None:
    assert session_mod.read_lab_cluster() is None
    assert sess.default_profile().name == "local"
    assert sess.profile_for({}).name == "local"


def test_the_lab_choice_is_the_default_and_is_read_at_each_run(sess: session_mod.Session, isolated_home: Path) -> None:
    choose("other")
    assert session_mod.lab_cluster_file() == isolated_home / "current-cluster"
    assert sess.profile_for({}).name == "other"
    choose("local")  # a switch in the lab applies to a kernel that is already running
    assert sess.profile_for({}).name == "local"
    state.write_current(None)
    assert sess.profile_for({}).name == "local"


def test_a_named_cluster_and_kube_use_win_over_the_lab_choice(sess: session_mod.Session) -> None:
    choose("other")
    assert sess.profile_for({"cluster": "gpus"}).name == "gpus"
    sess.cluster = "gpus"  # %kube use gpus
    assert sess.profile_for({}).name == "gpus"
    sess.cluster = None
    assert sess.profile_for({}).name == "other"


def test_a_gpu_type_the_chosen_cluster_lacks_goes_to_one_that_offers_it(sess: session_mod.Session) -> None:
    choose("other")
    notes: list[str] = []
    sess.notice = notes.append
    assert sess.profile_for({"gpu": "A100:1"}).name == "gpus"
    assert notes and "'gpus'" in notes[0]


def test_an_unknown_choice_is_ignored_with_one_warning(sess: session_mod.Session) -> None:
    choose("gone-cluster")
    with pytest.warns(KjupyterWarning, match=r"'gone-cluster' chosen in JupyterLab .* is not configured") as seen:
        assert sess.profile_for({}).name == "local"
    assert "local, other, gpus" not in str(seen[0].message)  # sorted, so the list reads the same every time
    assert "gpus, local, other" in str(seen[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sess.profile_for({}).name == "local"  # said once, not at every run
    choose("another-gone")
    with pytest.warns(KjupyterWarning, match="another-gone"):
        sess.profile_for({})


def test_an_empty_or_unreadable_choice_is_no_choice(sess: session_mod.Session, isolated_home: Path) -> None:
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "current-cluster").write_text("  \n")
    assert sess.profile_for({}).name == "local"
    (isolated_home / "current-cluster").write_bytes(b"\xff\xfe")
    assert sess.profile_for({}).name == "local"


def test_runs_go_to_the_chosen_cluster(sess: session_mod.Session) -> None:
    choose("other")
    try:
        future = sess.submit_call(lambda: 7, (), {}, {})
        assert future.cluster == "other"
        assert future.result(timeout=60) == 7
        attached = sess.attach(future.run_id)  # attach without a cluster looks on the chosen one
        assert attached.cluster == "other" and attached.result(timeout=30) == 7
    finally:
        sess.close()
