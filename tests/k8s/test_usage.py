"""GPU-hours and estimated cost per run, on the fake cluster: from the task containers' own start and end
times (the fake kubelet's startedAt / finishedAt), in run.json, the future, the text view, `kjupyter jobs`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kjupyter import cli, remote
from kjupyter import store as st
from kjupyter.backends.kubernetes.objects import CONTAINER
from kjupyter.backends.kubernetes.state import k8s_time
from kjupyter.notebook.text_view import summary
from kjupyter.server.service import run_row
from kjupyter.session import Session
from tests.fakekube.cluster import FakeCluster
from tests.k8s.helpers import kube_session

GPU_TABLE = '\n[clusters.kube.gpus.A100]\nnode_selector = { "example.com/gpu" = "a100" }\n'
PRICES = '{ gpu = { A100 = 3.6 }, cpu = 0.36, memory_gib = 0.036, currency = "EUR" }'


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.fixture
def cluster(make_fake_cluster: Callable[..., FakeCluster]) -> FakeCluster:
    return make_fake_cluster(nodes=[{"name": "gpu-1", "cpu": "16", "memory": "64Gi", "gpu": 4,
                                     "labels": {"example.com/gpu": "a100"}}])  # fmt: skip


@pytest.fixture
def session(tmp_path: Path, cluster: FakeCluster) -> Iterator[Session]:
    yield from kube_session(tmp_path, cluster.kubeconfig_path, store=True, extra=GPU_TABLE, prices=PRICES)


def lifetimes(cluster: FakeCluster, run_id: str) -> list[float]:
    """finishedAt - startedAt of the task container of each pod of the run, as the fake kubelet set them."""
    out = []
    for pod in cluster.objects("pods"):
        if pod["metadata"].get("labels", {}).get("kjupyter.io/run") != run_id:
            continue
        [status] = [c for c in pod["status"]["containerStatuses"] if c["name"] == CONTAINER]
        term = status["state"]["terminated"]
        out.append(k8s_time(term["finishedAt"]) - k8s_time(term["startedAt"]))
    return out


def test_gpu_hours_and_cost_match_the_pods_lifetimes(session: Session, cluster: FakeCluster, tmp_path: Path) -> None:
    f = remote(nap, gpu="A100:2", cpu=2, memory="4Gi")
    future = f.submit(2.2)
    assert future.result(60) == 2.2
    assert future.wait_ended(10)
    [lifetime] = lifetimes(cluster, future.run_id)
    assert lifetime >= 2  # real timestamps (whole seconds, as a kubelet's are): the container slept 2.2 s
    expected = {"cpu": 2 * lifetime, "gpu.A100": 2 * lifetime, "memory_gib": 4 * lifetime}
    assert future.usage is not None and future.usage.as_dict == expected and future.usage.source == "pods"
    record = json.loads((tmp_path / "store" / session.user / future.run_id / st.RUN_JSON).read_text())
    assert record["usage"] == expected and record["usage_source"] == "pods"
    cost = (3.6 * 2 + 0.36 * 2 + 0.036 * 4) * lifetime / 3600
    gpu_h = 2 * lifetime / 3600
    text = summary(future)
    assert f"(GPU-h {gpu_h:.2f} (A100) · cpu-h {2 * lifetime / 3600:.2f} · est. cost {cost:.2f} EUR)" in text

    [info] = [r for r in session.backend(session.config.profile()).list_runs() if r.run_id == future.run_id]
    assert info.usage == expected
    row = run_row(info, session.config.profile().prices)  # what the lab's sidebar gets
    assert row["gpu_hours"] == round(gpu_h, 6) and row["cost"] == round(cost, 6) and row["currency"] == "EUR"
    assert row["unpriced"] == []


def test_kjupyter_jobs_shows_gpu_hours_and_cost(session: Session, cluster: FakeCluster, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    gpu = remote(nap, gpu="A100:1", cpu=1, memory="1Gi").submit(1.1)
    plain = remote(nap, cpu=1, memory="1Gi").submit(1.1)  # (over a second: pods' times are whole seconds)
    assert gpu.result(60) and plain.result(60) == 1.1
    assert gpu.wait_ended(10) and plain.wait_ended(10)
    [lifetime] = lifetimes(cluster, gpu.run_id)
    capsys.readouterr()
    assert cli.main(["jobs", "--json"]) == 0
    rows = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    row = rows[gpu.run_id]
    assert row["usage"] == {"cpu": lifetime, "gpu.A100": lifetime, "memory_gib": lifetime}
    assert row["gpu_hours"] == round(lifetime / 3600, 6)
    assert row["cost"] == round((3.6 + 0.36 + 0.036) * lifetime / 3600, 6) and row["currency"] == "EUR"
    assert rows[plain.run_id]["gpu_hours"] == 0.0  # it ran, on no GPU
    assert cli.main(["jobs"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[7:10] == ["GPU-H", "COST/EUR", "DIAGNOSIS"]  # (the profile's currency)
    [line] = [x for x in table if x.startswith(gpu.run_id)]
    assert line.split()[8:10] == [f"{lifetime / 3600:.2f}", f"{(3.6 + 0.36 + 0.036) * lifetime / 3600:.2f}"]


def test_a_map_adds_up_every_pod(session: Session, cluster: FakeCluster, tmp_path: Path) -> None:
    future = remote(nap, gpu="A100:1", cpu=1, memory="2Gi").submit_map([1.1, 1.1, 1.1, 1.1], parallelism=2)
    assert future.result(90) == [1.1] * 4
    assert future.wait_ended(10)
    pods = lifetimes(cluster, future.run_id)
    assert len(pods) == 2  # two worker pods took the four items
    total = sum(pods)
    assert future.usage is not None
    assert future.usage.as_dict == {"cpu": total, "gpu.A100": total, "memory_gib": 2 * total}


@pytest.mark.parametrize(
    ("prices", "expected"),
    [
        (
            "{ gpu = { H100 = 9.0 } }",
            "prices.gpu.H100 names a GPU type this cluster does not offer (its GPU types: A100)",
        ),
        ("{ disk = 0.1 }", "unknown price 'disk'; prices are per hour of cpu (a core), memory_gib (a GiB), gpu"),
        ("{ cpu = -0.04 }", "prices.cpu must be a number of at least 0 (per hour), got -0.04"),
        ('{ memory_gib = "cheap" }', "prices.memory_gib must be a number of at least 0 (per hour), got 'cheap'"),
        ("3.5", "prices must be a table, e.g. prices = { gpu.A100 = 3.67, cpu = 0.04 }"),
    ],
)
def test_bad_prices_are_refused_in_one_sentence(tmp_path: Path, cluster: FakeCluster, prices: str,
                                               expected: str) -> None:  # fmt: skip
    from kjupyter.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        for _ in kube_session(tmp_path, cluster.kubeconfig_path, extra=GPU_TABLE, prices=prices):
            pass
    assert f"[clusters.kube] in {tmp_path / 'kjupyter.toml'}: {expected}" in str(info.value)


def test_a_run_that_never_started_used_nothing(session: Session, cluster: FakeCluster) -> None:
    future = remote(nap, gpu="A100:8").submit(1)  # the node has 4: it stays Pending, Unschedulable
    deadline = time.time() + 30
    while not [p for p in cluster.objects("pods") if p["metadata"]["labels"].get("kjupyter.io/run") == future.run_id]:
        assert time.time() < deadline
        time.sleep(0.1)
    assert future.cancel()
    assert future.wait_ended(30)
    assert future.usage is not None and future.usage.as_dict == {}
    assert "GPU-h" not in summary(future)
