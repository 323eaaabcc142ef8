"""GPU fallback lists (``gpu=["H100:1", "A100:1"]``): a pending run moves, with exactly one copy at a time.

Two fake clusters stand for two profiles: ``gpu-east`` (no H100 node, and an autoscaler that
cannot add one: NotTriggerScaleUp) and ``gpu-west`` (an A100 node). Everything goes through the
public API (``remote``, futures, the CLI), and the fake clusters' request logs say what was sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import kjupyter
from kjupyter import cli, remote
from kjupyter.config import load_config
from kjupyter.errors import ConfigError, RunCancelled
from kjupyter.run_events import Diagnosis, Event, RunFinished
from kjupyter.session import Session
from tests.fakekube import FakeCluster
from tests.fakekube.nodes import NodeSpec
from tests.fakekube.scheduler import Autoscaler, NodeGroup
from tests.sessions import installed_session

pytestmark = pytest.mark.timeout(120)

A100_NODE = {"name": "a100-1", "cpu": "8", "memory": "32Gi", "gpu": 1, "labels": {"gpu": "a100"}}
H100_NODE = {"name": "h100-1", "cpu": "8", "memory": "32Gi", "gpu": 1, "labels": {"gpu": "h100"}}
CPU_NODE = {"name": "cpu-1", "cpu": "4", "memory": "16Gi"}
MOVED = "No H100 can be added on gpu-east: NotTriggerScaleUp; moved to gpu-west (A100)."


def double(x: int) -> int:
    return 2 * x


def slow_double(x: int) -> int:
    print("started", flush=True)
    time.sleep(4)
    return 2 * x


def slower_double(x: int) -> int:
    print("started", flush=True)
    time.sleep(6)
    return 2 * x


def cpu_autoscaler() -> Autoscaler:
    """An autoscaler whose only node group has no GPU: for a GPU pod it says NotTriggerScaleUp."""
    return Autoscaler([NodeGroup("cpu-pool", NodeSpec("cpu", cpu="4", memory="16Gi"), max_size=2)])


def profile(name: str, cluster: FakeCluster, store: Path, gpus: dict[str, str], extra: str = "") -> str:
    lines = [f"[clusters.{name}]", 'backend = "kubernetes"', f'kubeconfig = "{cluster.kubeconfig_path}"',
             'image = "python:3.11"', 'pending_timeout = "60s"', f'store = "file://{store}"', extra]  # fmt: skip
    for gpu, label in gpus.items():
        lines += [f"[clusters.{name}.gpus.{gpu}]", f'node_selector = {{ "gpu" = "{label}" }}']
    return "\n".join(lines) + "\n"


@pytest.fixture
def clusters(tmp_path: Path, make_fake_cluster: Callable[..., FakeCluster]) -> dict[str, FakeCluster]:
    return {"east": make_fake_cluster(nodes=[CPU_NODE], autoscaler=cpu_autoscaler()),
            "west": make_fake_cluster(nodes=[CPU_NODE, A100_NODE])}  # fmt: skip


def install(tmp_path: Path, text: str, default: str = "gpu-east") -> Iterator[Session]:
    path = tmp_path / "kjupyter.toml"
    path.write_text(f'default = "{default}"\n' + text)
    with installed_session(load_config(files=[path])) as sess:
        yield sess


@pytest.fixture
def two(tmp_path: Path, clusters: dict[str, FakeCluster]) -> Iterator[Session]:
    """gpu-east offers H100 (it has none, and cannot add one); gpu-west offers A100 (it has one)."""
    yield from install(tmp_path, profile("gpu-east", clusters["east"], tmp_path / "east", {"H100": "h100"})
                       + profile("gpu-west", clusters["west"], tmp_path / "west", {"A100": "a100"}))  # fmt: skip


class Seen:
    """Every event a run's future delivered, with the first time each kind was seen."""

    def __init__(self, future: Any) -> None:
        self.events: list[Event] = []
        future.subscribe(self.events.append)

    def diagnoses(self, reason: str) -> list[Diagnosis]:
        return [e for e in self.events if isinstance(e, Diagnosis) and e.reason == reason]


def gen_user() -> str:
    from kjupyter import names

    return names.current_user()


def one_request(cluster: FakeCluster, verb: str, resource: str = "jobs") -> Any:
    found = [r for r in cluster.requests(verb, resource) if r.status < 300]
    assert len(found) == 1, found
    return found[0]


def never_ran(cluster: FakeCluster) -> None:
    """No pod of the cluster was ever scheduled (the scheduler's events say so): nothing ran there."""
    reasons = {e.get("reason") for e in cluster.objects("events")}
    assert "FailedScheduling" in reasons and not reasons & {"Scheduled", "Started"}, reasons


def test_a_run_moves_to_the_next_cluster_seconds_after_not_trigger_scale_up(
    two: Session, clusters: dict[str, FakeCluster], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    east, west = clusters["east"], clusters["west"]
    future = remote(double, gpu=["H100:1", "A100:1"]).submit(21)
    seen = Seen(future)
    assert future.result(60) == 42
    assert future.cluster == "gpu-west"
    verdict = seen.diagnoses("NotTriggerScaleUp")[0]
    moved = seen.diagnoses("Moved")
    assert [d.sentence for d in moved] == [MOVED]
    # Exactly one copy: east's Job was deleted (and gone) before west's was created, and nothing ran on east.
    deleted, created = one_request(east, "delete"), one_request(west, "create")
    assert one_request(east, "create").time < deleted.time < created.time
    assert created.time - verdict.time <= 5.0
    assert not east.objects("jobs")
    never_ran(east)
    # The run kept its id; its record on west says where it came from and why.
    record = json.loads((tmp_path / "west" / two.user / future.run_id / "run.json").read_text())
    assert record["cluster"] == "gpu-west" and record["phase"] == "Succeeded"
    assert record["moves"] == [{"from": "gpu-east", "from_gpu": "H100:1", "to": "gpu-west", "to_gpu": "A100:1",
                                "reason": "NotTriggerScaleUp", "sentence": MOVED}]  # fmt: skip
    old = json.loads((tmp_path / "east" / two.user / future.run_id / "run.json").read_text())
    assert old["phase"] == "Failed" and old["reason"] == "Moved" and old["diagnosis"] == MOVED
    capsys.readouterr()
    assert cli.main(["jobs", "--cluster", "gpu-west"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if future.run_id in line]
    assert len(row) == 1 and "Succeeded" in row[0] and MOVED in row[0]
    assert cli.main(["logs", future.run_id]) == 0  # found on gpu-west under the same run id
    assert "is on cluster 'gpu-west'" in capsys.readouterr().err
    assert kjupyter.attach(future.run_id).result(30) == 42  # (from gpu-east, the default, it is found there)


def test_an_absent_h100_falls_back_to_an_a100_of_the_same_cluster(
    tmp_path: Path, make_fake_cluster: Callable[..., FakeCluster]
) -> None:
    east = make_fake_cluster(nodes=[CPU_NODE, A100_NODE], autoscaler=cpu_autoscaler())
    gen = install(tmp_path, profile("gpu-east", east, tmp_path / "store", {"H100": "h100", "A100": "a100"}))
    next(gen)
    future = remote(double, gpu=["H100:1", "A100:1"]).submit(5)
    seen = Seen(future)
    assert future.result(60) == 10
    assert [d.sentence for d in seen.diagnoses("Moved")] == [
        "No H100 can be added on gpu-east: NotTriggerScaleUp; moved to gpu-east (A100)."
    ]
    creates = [r for r in east.requests("create", "jobs") if r.status < 300]
    deletes = [r for r in east.requests("delete", "jobs") if r.status < 300]
    assert len(creates) == 2 and len(deletes) == 1 and creates[0].time < deletes[0].time < creates[1].time
    pods = east.objects("pods")
    assert [p["spec"]["nodeSelector"] for p in pods if p["spec"].get("nodeName")] == [{"gpu": "a100"}]
    gen.close()


def test_failover_after_moves_a_run_on_a_cluster_that_says_nothing(
    tmp_path: Path, make_fake_cluster: Callable[..., FakeCluster]
) -> None:
    east = make_fake_cluster(nodes=[CPU_NODE])  # no autoscaler: only the scheduler's Unschedulable
    west = make_fake_cluster(nodes=[CPU_NODE, A100_NODE])
    gen = install(tmp_path, profile("gpu-east", east, tmp_path / "s", {"H100": "h100"}, 'failover_after = "2s"')
                  + profile("gpu-west", west, tmp_path / "s", {"A100": "a100"}))  # fmt: skip
    next(gen)
    started = time.time()
    future = remote(double, gpu="H100:1,A100:1").submit(4)  # (as %%kube --gpu H100:1,A100:1 passes it)
    seen = Seen(future)
    assert future.result(60) == 8
    assert [d.sentence for d in seen.diagnoses("Moved")] == [
        "No H100 started on gpu-east within 2s (failover_after); moved to gpu-west (A100)."
    ]
    assert one_request(east, "delete").time - started >= 2.0
    record = json.loads((tmp_path / "s" / gen_user() / future.run_id / "run.json").read_text())
    assert [(m["from"], m["to"], m["reason"]) for m in record["moves"]] == [("gpu-east", "gpu-west", "failover_after")]
    assert one_request(east, "delete").time < one_request(west, "create").time
    never_ran(east)
    gen.close()


def test_a_run_that_started_never_moves(tmp_path: Path, make_fake_cluster: Callable[..., FakeCluster]) -> None:
    east = make_fake_cluster(nodes=[CPU_NODE, H100_NODE])
    west = make_fake_cluster(nodes=[CPU_NODE, A100_NODE])
    gen = install(tmp_path, profile("gpu-east", east, tmp_path / "s", {"H100": "h100"}, 'failover_after = "4s"')
                  + profile("gpu-west", west, tmp_path / "s", {"A100": "a100"}))  # fmt: skip
    next(gen)
    future = remote(slower_double, gpu=["H100:1", "A100:1"]).submit(3)
    seen = Seen(future)
    assert future.result(60) == 6  # it ran 6 s on east: past failover_after, but it had started
    assert future.cluster == "gpu-east" and not seen.diagnoses("Moved")
    assert not west.requests("create", "jobs") and not east.requests("delete", "jobs")
    gen.close()


def test_a_map_that_started_never_moves_when_a_later_item_finds_no_node(
    tmp_path: Path, make_fake_cluster: Callable[..., FakeCluster]
) -> None:
    h100 = NodeGroup("h100-pool", NodeSpec("h100", cpu="8", memory="32Gi", gpu=1, labels={"gpu": "h100"}), max_size=0)
    east = make_fake_cluster(nodes=[CPU_NODE, H100_NODE], autoscaler=Autoscaler([h100]))
    west = make_fake_cluster(nodes=[CPU_NODE, A100_NODE])
    gen = install(tmp_path, profile("gpu-east", east, tmp_path / "s", {"H100": "h100"})
                  + profile("gpu-west", west, tmp_path / "s", {"A100": "a100"}))  # fmt: skip
    next(gen)
    future = remote(slow_double, gpu=["H100:1", "A100:1"]).submit_map([1, 2], parallelism=2, items_per_pod=1)
    seen = Seen(future)
    assert future.result(90) == [2, 4]  # item 1 waited for item 0's GPU on east (the autoscaler: max size)
    assert seen.diagnoses("NotTriggerScaleUp") and not seen.diagnoses("Moved")
    assert future.cluster == "gpu-east" and not west.requests("create", "jobs")
    gen.close()


def test_a_map_fails_over_as_a_whole_before_any_item_starts(two: Session, clusters: dict[str, FakeCluster]) -> None:
    east, west = clusters["east"], clusters["west"]
    future = remote(double, gpu=["H100:1", "A100:1"]).submit_map([1, 2, 3], parallelism=3)
    seen = Seen(future)
    assert future.result(60) == [2, 4, 6]
    assert [d.sentence for d in seen.diagnoses("Moved")] == [MOVED]
    assert one_request(east, "delete").time < one_request(west, "create").time  # one Job each, one at a time
    never_ran(east)
    assert not [e for e in seen.events if isinstance(e, RunFinished) and e.phase.value != "Succeeded"]


def test_a_cancel_during_a_move_leaves_no_job_behind(two: Session, clusters: dict[str, FakeCluster]) -> None:
    east, west = clusters["east"], clusters["west"]
    west.add_latency(2.0, verb="create", resource="jobs")  # the move's create is still on its way
    future = remote(double, gpu=["H100:1", "A100:1"]).submit(1)
    seen = Seen(future)
    west.wait_for(lambda: west.requests("create", "jobs"), timeout=30)
    assert future.cancel()
    with pytest.raises(RunCancelled):
        future.result(30)
    assert future.wait_ended(30)
    for cluster in (east, west):
        cluster.wait_for(lambda c=cluster: not c.objects("jobs") and not c.objects("pods"), timeout=30)
    assert one_request(west, "delete").time > one_request(west, "create").time
    assert [e.phase.value for e in seen.events if isinstance(e, RunFinished)] == ["Cancelled"]


def test_a_cancel_while_pending_before_any_move_cancels_it_where_it_is(
    tmp_path: Path, make_fake_cluster: Callable[..., FakeCluster]
) -> None:
    east = make_fake_cluster(nodes=[CPU_NODE])
    west = make_fake_cluster(nodes=[CPU_NODE, A100_NODE])
    gen = install(tmp_path, profile("gpu-east", east, tmp_path / "s", {"H100": "h100"}, 'failover_after = "30s"')
                  + profile("gpu-west", west, tmp_path / "s", {"A100": "a100"}))  # fmt: skip
    next(gen)
    future = remote(double, gpu=["H100:1", "A100:1"]).submit(1)
    seen = Seen(future)
    east.wait_for(lambda: east.objects("pods"), timeout=30)
    assert future.cancel()
    assert future.wait_ended(30)
    assert [e.phase.value for e in seen.events if isinstance(e, RunFinished)] == ["Cancelled"]
    assert not west.requests("create", "jobs")
    east.wait_for(lambda: not east.objects("jobs"), timeout=30)
    gen.close()


def test_an_unknown_gpu_type_in_a_list_is_one_sentence_at_submit(two: Session, clusters: dict[str, FakeCluster]) -> None:
    with pytest.raises(ConfigError) as info:
        remote(double, gpu=["H200:1", "A100:1"]).submit(1)
    text = str(info.value)
    assert "no configured cluster offers H200 GPUs" in text
    assert "A100 (gpu-west), H100 (gpu-east)" in text and "\n" not in text
    with pytest.raises(ConfigError, match=r"cluster 'gpu-west' offers none of gpu=\[H100:1, H100:2\] \(its GPU types: A100\)"):
        remote(double, gpu=["H100:1", "H100:2"], cluster="gpu-west").submit(1)
    assert not clusters["east"].requests("create", "jobs") and not clusters["west"].requests("create", "jobs")


def test_a_single_gpu_type_behaves_as_before(two: Session, clusters: dict[str, FakeCluster]) -> None:
    future = remote(double, gpu="A100:1").submit(2)  # the profile that offers it, no list, no move
    assert future.result(60) == 4
    assert future.cluster == "gpu-west" and not clusters["east"].requests("create", "jobs")
    assert type(future.backend).__name__ == "KubernetesBackend"


def test_a_cluster_named_with_a_list_keeps_the_run_there(two: Session, clusters: dict[str, FakeCluster]) -> None:
    future = remote(double, gpu=["H100:1", "A100:1"], cluster="gpu-west").submit(3)
    assert future.result(60) == 6 and future.cluster == "gpu-west"
    assert not clusters["east"].requests("create", "jobs")


def test_render_of_a_list_prints_its_first_place(two: Session, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "--gpu", "H100:1,A100:1", "--json"]) == 0
    out, err = capsys.readouterr()
    job = next(o for o in json.loads(out) if o["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"} and "then gpu-west (A100)" in err


def test_kube_cell_magic_takes_a_fallback_list(two: Session, capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "kjupyter")
    shell.user_ns["k"] = 21
    assert shell.run_cell_magic("kube", "--gpu H100:1,A100:1", "m = k * 2\nm") == 42
    assert shell.user_ns["m"] == 42
    err = capsys.readouterr().err
    assert f"kjupyter: {MOVED}" in err
    assert err.index("submitted to gpu-east") < err.index(MOVED) < err.index("submitted to gpu-west"), err
    shell.user_ns.pop("m")
    shell.user_ns.pop("k")


def test_a_verdict_that_comes_before_submit_returns_still_moves_the_run(
    two: Session, clusters: dict[str, FakeCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The autoscaler's verdict can arrive while the first place's submit is still returning (a slow client)."""
    from kjupyter.backends.kubernetes import backend as kube_backend

    create = kube_backend.create

    def slow_create(kube: Any, objects: Any) -> None:
        create(kube, objects)
        if "gpu-east" in str(kube.profile.name):  # (east only: its pods are pending, the verdict comes meanwhile)
            clusters["east"].wait_for(lambda: clusters["east"].objects("events") and any(
                e.get("reason") == "NotTriggerScaleUp" for e in clusters["east"].objects("events")), timeout=30)
            time.sleep(1.0)

    monkeypatch.setattr(kube_backend, "create", slow_create)
    future = remote(double, gpu=["H100:1", "A100:1"]).submit(8)
    seen = Seen(future)
    assert future.result(60) == 16
    assert [d.sentence for d in seen.diagnoses("Moved")] == [MOVED]
    assert one_request(clusters["east"], "delete").time < one_request(clusters["west"], "create").time


def test_the_lab_lists_a_moved_run_once_where_it_went(
    tmp_path: Path, clusters: dict[str, FakeCluster]
) -> None:
    """The sidebar's service: one row, on the cluster the run moved to, with the move; found there for logs and
    cancel. The clusters are named so that the one it left is listed last (its record must not win)."""
    from kjupyter.server.service import RunService

    text = (profile("zz-east", clusters["east"], tmp_path / "store", {"H100": "h100"})
            + profile("aa-west", clusters["west"], tmp_path / "store2", {"A100": "a100"}))  # fmt: skip
    gen = install(tmp_path, text, default="zz-east")
    sess = next(gen)
    future = remote(double, gpu=["H100:1", "A100:1"]).submit(6)
    assert future.result(60) == 12 and future.cluster == "aa-west"
    service = RunService(sess.config, user=sess.user)
    rows = [r for r in service.list_runs().runs if r["run_id"] == future.run_id]
    moved = "No H100 can be added on zz-east: NotTriggerScaleUp; moved to aa-west (A100)."
    assert len(rows) == 1 and rows[0]["cluster"] == "aa-west" and rows[0]["phase"] == "Succeeded"
    assert rows[0]["diagnosis"].startswith(moved)
    assert service.find(future.run_id)[0] == "aa-west"
    service.close()
    gen.close()


def test_a_move_whose_delete_is_refused_keeps_the_run_where_it_is(
    two: Session, clusters: dict[str, FakeCluster]
) -> None:
    east, west = clusters["east"], clusters["west"]
    east.deny("delete", "jobs")
    future = remote(double, gpu=["H100:1", "A100:1"]).submit(1)
    seen = Seen(future)
    east.wait_for(lambda: seen.diagnoses("MoveRefused"), timeout=30)
    [refused] = seen.diagnoses("MoveRefused")
    assert refused.sentence.startswith("The run could not be moved off gpu-east, so it stays there: its deletion "
                                       "was refused (")  # fmt: skip
    assert "may not delete jobs" in refused.sentence
    assert not seen.diagnoses("Moved") and not west.requests("create", "jobs")  # never a second copy
    east.clear_faults()
    assert future.cancel()
    assert future.wait_ended(30)
    east.wait_for(lambda: not east.objects("jobs"), timeout=30)
