"""``kjupyter gpus`` / ``%kube gpus``, and the diagnosis of a GPU run that finds no node naming what is free.

gpu-east has one node with 2 A100s, both held by a pod of another namespace; gpu-west has one
node with 4 L4s (found by NVIDIA's ``nvidia.com/gpu.product`` label: its profile gives L4 no
node selector), one held. Counts come from the fake clusters' own nodes and pods.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kjupyter import cli, remote
from kjupyter.config import load_config
from kjupyter.run_events import Diagnosis
from kjupyter.session import Session
from tests.fakekube import FakeCluster
from tests.sessions import installed_session

pytestmark = pytest.mark.timeout(120)

A100_NODE = {"name": "a100-1", "cpu": "8", "memory": "32Gi", "gpu": 2, "labels": {"gpu": "a100"}}
L4_NODE = {"name": "l4-1", "cpu": "8", "memory": "32Gi", "gpu": 4, "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}}
CPU_NODE = {"name": "cpu-1", "cpu": "4", "memory": "16Gi"}
ADVICE = "No A100 free on gpu-east; gpu-west has 3 L4 free: `cluster='gpu-west', gpu='L4:1'`."


def double(x: int) -> int:
    return 2 * x


def hold_gpus(cluster: FakeCluster, name: str, count: int, namespace: str = "default", **selector: str) -> None:
    """A pod (not kjupyter's) that holds ``count`` GPUs until the test ends."""
    cluster.add_namespace(namespace)
    cluster.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                    "spec": {"nodeSelector": selector, "restartPolicy": "Never", "containers": [{
                        "name": "main", "image": "python:3.11", "command": ["python", "-c", "import time; time.sleep(120)"],
                        "resources": {"limits": {"nvidia.com/gpu": str(count)}}}]}})  # fmt: skip
    cluster.wait_for(lambda: (cluster.get("pods", name, namespace).get("status") or {}).get("phase") == "Running",
                     timeout=30)  # fmt: skip


@pytest.fixture
def clusters(make_fake_cluster: Callable[..., FakeCluster]) -> dict[str, FakeCluster]:
    east = make_fake_cluster(nodes=[CPU_NODE, A100_NODE])
    west = make_fake_cluster(nodes=[CPU_NODE, L4_NODE])
    hold_gpus(east, "training", 2, "team-b", gpu="a100")
    hold_gpus(west, "notebook", 1)
    return {"east": east, "west": west}


@pytest.fixture
def session(tmp_path: Path, clusters: dict[str, FakeCluster]) -> Iterator[Session]:
    text = 'default = "gpu-east"\n'
    for name, cluster in (("gpu-east", clusters["east"]), ("gpu-west", clusters["west"])):
        text += (f'[clusters.{name}]\nbackend = "kubernetes"\nkubeconfig = "{cluster.kubeconfig_path}"\n'
                 f'image = "python:3.11"\npending_timeout = "60s"\nstore = "file://{tmp_path / "store"}"\n')  # fmt: skip
    text += '[clusters.gpu-east.gpus.A100]\nnode_selector = { "gpu" = "a100" }\n[clusters.gpu-west.gpus.L4]\n'
    path = tmp_path / "kjupyter.toml"
    path.write_text(text)
    with installed_session(load_config(files=[path])) as sess:
        yield sess


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def test_gpus_counts_allocatable_and_free_per_profile(
    session: Session, clusters: dict[str, FakeCluster], capsys: pytest.CaptureFixture[str]
) -> None:
    for cluster in clusters.values():
        cluster.clear_requests()
    assert cli.main(["gpus"]) == 0
    out = capsys.readouterr().out
    assert rows(out) == [
        ["PROFILE", "GPU", "NODES", "ALLOCATABLE", "FREE"],
        ["local", "-", "-", "-", "-"],
        ["gpu-east", "A100", "1", "2", "0"],
        ["gpu-west", "L4", "1", "4", "3"],
        ["local:", "no", "GPU", "types", "configured."],
    ]
    for cluster in clusters.values():  # two reads per cluster: its nodes, and its pods that still hold anything
        assert [(r.verb, r.resource, r.namespace) for r in cluster.requests()] == [
            ("list", "nodes", ""), ("list", "pods", "")]  # fmt: skip
    assert cli.main(["gpus", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[2] == {"cluster": "gpu-west", "configured": ["L4"], "note": "",
                       "counts": [{"gpu_type": "L4", "nodes": 1, "allocatable": 4, "free": 3}]}  # fmt: skip


def test_gpus_without_the_right_to_list_nodes_says_so_and_shows_the_configuration(
    session: Session, clusters: dict[str, FakeCluster], capsys: pytest.CaptureFixture[str]
) -> None:
    clusters["west"].deny("list", "nodes")
    assert cli.main(["gpus"]) == 0
    out = capsys.readouterr().out
    assert ["gpu-west", "L4", "?", "?", "?"] in rows(out)
    assert ["gpu-east", "A100", "1", "2", "0"] in rows(out)
    assert ("gpu-west: your account may not list nodes on 'gpu-west' (403), so its free GPUs are unknown; its "
            "configuration offers L4.") in out.splitlines()  # fmt: skip


def test_gpus_without_the_right_to_list_pods_counts_allocatable_only(
    session: Session, clusters: dict[str, FakeCluster], capsys: pytest.CaptureFixture[str]
) -> None:
    clusters["east"].deny("list", "pods")
    assert cli.main(["gpus"]) == 0
    out = capsys.readouterr().out
    assert ["gpu-east", "A100", "1", "2", "?"] in rows(out)
    assert "only allocatable GPUs are counted, not free ones" in out


def advice_of(future: Any, timeout: float = 30) -> Diagnosis:
    seen: list[Any] = []
    future.subscribe(seen.append)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in seen if isinstance(e, Diagnosis) and e.reason == "GpuAlternatives"]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no GpuAlternatives diagnosis: {seen}")


def test_an_unschedulable_gpu_run_is_told_where_gpus_are_free(session: Session, clusters: dict[str, FakeCluster]) -> None:
    future = remote(double, gpu="A100:1").submit(1)
    d = advice_of(future)
    assert d.sentence == ADVICE
    assert "Insufficient nvidia.com/gpu" in d.hint  # the scheduler's own words stay beside it
    assert future.cancel()


def test_the_advice_without_node_rights_on_the_other_cluster_says_so(
    session: Session, clusters: dict[str, FakeCluster]
) -> None:
    clusters["west"].deny("list", "nodes")
    future = remote(double, gpu="A100:1").submit(1)
    assert advice_of(future).sentence == (
        "No A100 free on gpu-east; no other configured cluster has 1 GPU(s) of a type it offers free right now "
        "(not counted: gpu-west)."
    )
    assert future.cancel()


def test_the_advice_follows_the_kube_advice_it_names(session: Session, clusters: dict[str, FakeCluster]) -> None:
    """What the advice says to write works: the run it suggests starts on gpu-west's L4."""
    assert remote(double, cluster="gpu-west", gpu="L4:1").submit(21).result(60) == 42


def test_kube_gpus_line_magic_prints_the_same_table(session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "kjupyter")
    shell.run_line_magic("kube", "gpus")
    out = capsys.readouterr().out
    assert ["gpu-east", "A100", "1", "2", "0"] in rows(out) and ["gpu-west", "L4", "1", "4", "3"] in rows(out)
