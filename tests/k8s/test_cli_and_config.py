"""`kjupyter render`, `kjupyter doctor`, GPU-based profile picking, in-cluster defaults."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from kjupyter import cli
from kjupyter.config import load_config
from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster

CONFIG = """
default = "local"
[clusters.gpu]
backend = "kubernetes"
kubeconfig = "{kubeconfig}"
namespace = "default"
image = "reg/img:1"
[clusters.gpu.gpus.H100]
node_selector = {{ "gpu" = "h100" }}
tolerations = [{{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }}]
"""


def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kubeconfig: str = "/nonexistent") -> None:
    path = tmp_path / "cfg.toml"
    path.write_text(CONFIG.format(kubeconfig=kubeconfig))
    monkeypatch.setenv("KJUPYTER_CONFIG", str(path))
    monkeypatch.setattr("kjupyter.session._session", None)


def test_render_prints_one_indexed_job_for_a_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    write_config(tmp_path, monkeypatch)
    argv = ["render", "--cluster", "gpu", "--gpu", "H100:1", "--memory", "16Gi", "--map", "5000"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    objects = list(yaml.safe_load_all(text))  # YAML: one document per object, separated by ---
    assert [o["kind"] for o in objects] == ["Job", "Secret"] and text.count("\n---\n") == 1
    jobs = [o for o in objects if o["kind"] == "Job"]
    assert len(jobs) == 1 and jobs[0]["spec"]["completions"] == 5000
    pod = jobs[0]["spec"]["template"]["spec"]
    assert (
        pod["nodeSelector"] == {"gpu": "h100"} and pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    )
    assert cli.main([*argv, "--json"]) == 0  # the same objects as JSON
    assert json.loads(capsys.readouterr().out) == objects


def test_gpu_type_picks_the_profile_that_offers_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, monkeypatch)
    notes: list[str] = []
    sess = Session(load_config())
    sess.notice = notes.append
    assert sess.profile_for({"gpu": "H100"}).name == "gpu"
    assert notes and "'gpu'" in notes[0] and "H100" in notes[0]


def test_doctor_names_the_missing_role(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_fake_cluster: Callable[..., FakeCluster],
) -> None:
    cluster = make_fake_cluster()
    write_config(tmp_path, monkeypatch, cluster.kubeconfig_path)
    assert cli.main(["doctor", "--cluster", "gpu"]) == 0, capsys.readouterr().out
    cluster.deny("get", "pods/log")
    assert cli.main(["doctor", "--cluster", "gpu"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] RBAC" in out and '"pods/log"' in out and "Role" in out


def test_the_shipped_role_grants_exactly_what_doctor_checks() -> None:
    """examples/rbac.yaml is what admins apply: it must not lag behind what kjupyter needs (or ask for more)."""
    import yaml

    from kjupyter.backends.kubernetes.doctor import NEEDED

    role = yaml.safe_load((Path(__file__).parents[2] / "examples" / "rbac.yaml").read_text())
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {
        (group, f"{resource}/{sub}" if sub else resource, verb)
        for group, resource, sub, verbs in NEEDED
        for verb in verbs
    }
    assert granted == needed
