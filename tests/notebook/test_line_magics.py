"""``%kube clusters`` (a table) and ``%kube render`` (the next cell's objects, as ``kjupyter render`` prints them: YAML)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.notebook import helpers as h

pytestmark = pytest.mark.slow


def profiles(folder: Path, make_fake_cluster: Callable[..., Any]) -> None:
    """local (default), a reachable fake cluster offering A100s, and a cluster nobody listens for."""
    cluster = make_fake_cluster(nodes=[{"name": "cpu-1", "cpu": "8", "memory": "32Gi"}])
    dead = folder / "dead.kubeconfig"
    dead.write_text(Path(cluster.kubeconfig_path).read_text().replace(cluster.url, "http://127.0.0.1:9"))
    (folder / "kjupyter.toml").write_text(
        'default = "local"\n[clusters.local]\nbackend = "local"\n'
        f'[clusters.fake]\nbackend = "kubernetes"\nkubeconfig = "{cluster.kubeconfig_path}"\nnamespace = "ml"\n'
        'image = "python:3.11"\n'
        '[clusters.fake.gpus.A100]\nnode_selector = { "gpu" = "a100" }\n'
        f'[clusters.gone]\nbackend = "kubernetes"\nkubeconfig = "{dead}"\nimage = "python:3.11"\n'
    )


def test_clusters_is_a_table(tmp_path: Path, make_fake_cluster: Callable[..., Any]) -> None:
    profiles(tmp_path, make_fake_cluster)
    nb = h.run(h.notebook("%load_ext kjupyter", "%kube clusters", "%kube clusters --no-probe"), tmp_path)
    [out] = nb.cells[1].outputs
    assert out.output_type == "display_data", h.dump(nb)
    html, text = out.data["text/html"], out.data["text/plain"]
    assert html.startswith("<table class='kjupyter-clusters'>") and "<th style='text-align:left'>GPU TYPES</th>" in html
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert text.splitlines()[0].split() == ["PROFILE", "BACKEND", "CONTEXT/NAMESPACE", "GPU", "TYPES", "REACHABLE"]
    assert rows.keys() == {"fake", "gone", "local"}, text
    assert rows["local"].split()[:4] == ["local", "(default)", "local", "this"] and " yes" in rows["local"]
    assert rows["fake"].split()[:4] == ["fake", "kubernetes", "current", "context/ml"] and "A100" in rows["fake"]
    assert "yes: Kubernetes" in rows["fake"]
    assert rows["gone"].split()[:3] == ["gone", "kubernetes", "current"] and " no: " in rows["gone"], text
    assert html.count("class='kjupyter-reachable'") == 2 and html.count("class='kjupyter-unreachable'") == 1
    [unprobed] = nb.cells[2].outputs
    assert unprobed.data["text/plain"].count("not checked") == 3


def without_session(objects: Any) -> list[Any]:
    """Rendered objects without the label that names the process (kernel or CLI) that rendered them."""
    objects = json.loads(json.dumps(objects if isinstance(objects, list) else [objects]))
    for o in objects:
        for meta in (o["metadata"], o.get("spec", {}).get("template", {}).get("metadata", {})):
            meta.get("labels", {}).pop("kjupyter.io/session", None)
    return objects


def printed(text: str) -> list[Any]:
    """The objects ``render`` printed: YAML documents separated by ``---``."""
    return list(yaml.safe_load_all(text))


def job_of(text: str) -> dict[str, Any]:
    """The Job among the printed objects (a profile without a store also sends the payload's Secret)."""
    job: dict[str, Any] = printed(text)[0]
    return job


def test_render_prints_the_next_cells_objects_like_the_cli(
    tmp_path: Path, make_fake_cluster: Callable[..., Any]
) -> None:
    profiles(tmp_path, make_fake_cluster)
    nb = h.notebook(
        "%load_ext kjupyter",
        "%kube use fake",
        "%kube render --memory 2Gi --cpu 1 --secret creds --timeout 10m",
        "%kube render --memory 2Gi --env MODE=fast",
        "%kube render --memory lots",
        "%kube render --json --memory 2Gi --env MODE=fast",
    )
    nb = h.run(nb, tmp_path, allow_errors=True)
    job = job_of(h.text(nb.cells[2]))
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == "ml"  # the session's cluster (%kube use)
    assert job["spec"]["activeDeadlineSeconds"] == 600
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}, container["resources"]
    assert {"secretRef": {"name": "creds"}} in container.get("envFrom", []), container
    # the CLI prints the same objects for the same options (kjupyter render, in another process)
    env = {**os.environ, "KJUPYTER_HOME": str(tmp_path / "kjhome")}
    cli = subprocess.run([sys.executable, "-m", "kjupyter.cli", "render", "--cluster", "fake", "--memory", "2Gi",
                          "--cpu", "1", "--secret", "creds", "--timeout", "10m", "--name", "cell"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert without_session(printed(cli.stdout)) == without_session(printed(h.text(nb.cells[2])))
    assert [o["kind"] for o in printed(cli.stdout)] == ["Job", "Secret"] and "\n---\n" in cli.stdout
    # options only %%kube has (--env) count too
    [container] = job_of(h.text(nb.cells[3]))["spec"]["template"]["spec"]["containers"]
    assert {"name": "MODE", "value": "fast"} in container["env"], container["env"]
    # a bad option is the same one-line error as in %%kube
    shown = h.text(nb.cells[4])
    assert shown.startswith("UsageError: %%kube: invalid memory='lots'") and shown.count("\n") == 1, shown
    # --json: the same objects as JSON
    assert without_session(json.loads(h.text(nb.cells[5]))) == without_session(printed(h.text(nb.cells[3])))
