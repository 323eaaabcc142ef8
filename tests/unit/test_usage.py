"""Usage and prices as values: a pod's resource-seconds, prices checked, cost estimated, one line to show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kjupyter import usage
from kjupyter.backends.kubernetes.usage import container_seconds, pod_resources, quantity, run_usage
from kjupyter.config import GpuType, Profile, load_config
from kjupyter.errors import ConfigError

PROFILE = Profile(name="gpu", backend="kubernetes",
                  gpus={"A100": GpuType("A100", {"acc": "a100"}), "L4": GpuType("L4", {"acc": "l4"})})  # fmt: skip


def pod(state: dict[str, Any], *, last: dict[str, Any] | None = None, gpu: int = 1, selector: str = "a100",
        deleted: str | None = None) -> dict[str, Any]:  # fmt: skip
    limits = {"cpu": "2", "memory": "8Gi", **({"nvidia.com/gpu": str(gpu)} if gpu else {})}
    return {
        "metadata": {"name": "p", **({"deletionTimestamp": deleted} if deleted else {})},
        "spec": {"nodeSelector": {"acc": selector},
                 "containers": [{"name": "task", "resources": {"requests": {"cpu": "500m", "memory": "8Gi"},
                                                               "limits": limits}}]},
        "status": {"containerStatuses": [{"name": "task", "state": state, "lastState": last or {}}]},
    }  # fmt: skip


def test_a_pod_counts_from_its_containers_start_to_its_end() -> None:
    done = {"terminated": {"startedAt": "2026-12-01T10:00:00Z", "finishedAt": "2026-12-01T10:30:00Z"}}
    assert container_seconds(pod(done), now=0) == 1800
    running = {"running": {"startedAt": "2026-12-01T10:00:00Z"}}
    start = 1_796_119_200.0  # 2026-12-01T10:00:00Z
    assert container_seconds(pod(running), now=start + 60) == 60
    assert container_seconds(pod(running, deleted="2026-12-01T10:00:10Z"), now=start + 60) == 10
    retried = pod(
        done, last={"terminated": {"startedAt": "2026-12-01T09:00:00Z", "finishedAt": "2026-12-01T09:00:30Z"}}
    )
    assert container_seconds(retried, now=0) == 1830
    assert container_seconds(pod({"waiting": {"reason": "ContainerCreating"}}), now=start) == 0


def test_a_container_that_failed_to_start_ran_for_no_time() -> None:
    # (the kubelet's StartError: startedAt is the zero time, 1970-01-01; counting from it would be 56 years)
    failed = {"terminated": {"startedAt": "1970-01-01T00:00:00Z", "finishedAt": "2026-12-01T10:00:00Z"}}
    assert container_seconds(pod(failed), now=0) == 0


def test_every_form_of_a_kubernetes_quantity() -> None:
    assert [quantity(q) for q in ("500m", "2", 2, "1.5", "16Gi", "1G", "1e3", "1E3", "2k", "100u")] == [
        0.5, 2, 2, 1.5, 16 * 2**30, 1e9, 1000, 1000, 2000, pytest.approx(1e-4)]  # fmt: skip
    done = {"terminated": {"startedAt": "2026-12-01T10:00:00Z", "finishedAt": "2026-12-01T11:00:00Z"}}
    odd = pod(done)
    odd["spec"]["containers"][0]["resources"]["requests"]["memory"] = "lots"
    event = run_usage("r", [odd, pod(done)], PROFILE)  # the run still gets its usage, and says what it left out
    assert event.as_dict == {"cpu": 1800.0, "gpu.A100": 3600.0, "memory_gib": 28800.0}
    assert event.source == "pods; not counted: p: a pod's resource quantity 'lots' is not a Kubernetes quantity"


def test_a_pod_asks_for_cores_gib_and_gpus_of_a_type() -> None:
    assert pod_resources(pod({}), PROFILE) == {"cpu": 0.5, "memory_gib": 8.0, "gpu.A100": 1}
    assert pod_resources(pod({}, gpu=2, selector="l4"), PROFILE) == {"cpu": 0.5, "memory_gib": 8.0, "gpu.L4": 2}
    assert pod_resources(pod({}, selector="other"), PROFILE)["gpu"] == 1  # a GPU of no configured type
    assert pod_resources(pod({}, gpu=0), PROFILE) == {"cpu": 0.5, "memory_gib": 8.0}


def test_a_runs_usage_sums_its_pods() -> None:
    done = {"terminated": {"startedAt": "2026-12-01T10:00:00Z", "finishedAt": "2026-12-01T11:00:00Z"}}
    event = run_usage("r", [pod(done), pod(done, gpu=2, selector="l4"), {}], PROFILE)
    assert event.as_dict == {"cpu": 3600.0, "gpu.A100": 3600.0, "gpu.L4": 7200.0, "memory_gib": 57600.0}
    assert usage.gpu_hours(event.as_dict) == 3.0


def test_cost_from_prices_per_hour() -> None:
    used = {"cpu": 7200.0, "gpu.A100": 3600.0, "gpu.L4": 3600.0, "memory_gib": 36000.0}
    prices = usage.Prices({"gpu.A100": 3.67, "gpu": 1.0, "cpu": 0.04, "memory_gib": 0.005})
    cost, unpriced = usage.estimate(used, prices)
    assert cost == pytest.approx(3.67 + 1.0 + 0.08 + 0.05) and unpriced == []
    cost, unpriced = usage.estimate(used, usage.Prices({"gpu.A100": 3.67}))
    assert cost == pytest.approx(3.67) and unpriced == ["cpu", "gpu.L4", "memory_gib"]
    assert usage.estimate(used, usage.Prices()) == (None, [])
    assert usage.describe(used, prices) == "GPU-h 2.00 (A100, L4) · cpu-h 2.00 · est. cost 4.80 USD"
    assert usage.describe({}, prices) == ""
    assert usage.summary(used, usage.Prices({"gpu.A100": 3.67}, "EUR")) == {
        "gpu_hours": 2.0, "cost": 3.67, "currency": "EUR", "unpriced": ["cpu", "gpu.L4", "memory_gib"]}  # fmt: skip
    assert usage.summary(None, prices) == {"gpu_hours": None, "cost": None, "currency": None, "unpriced": []}


def test_a_profile_reads_its_prices(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_text('[clusters.g]\nbackend = "kubernetes"\nprices = { gpu.A100 = 3.67, cpu = 0.04, memory_gib = 0.005 }\n'
                    '[clusters.g.gpus.A100]\nnode_selector = { acc = "a100" }\n')  # fmt: skip
    prices = load_config(files=[path]).profile("g").prices
    assert prices == usage.Prices({"gpu.A100": 3.67, "cpu": 0.04, "memory_gib": 0.005}, "USD")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"gpu": {"H100": 1}},
            "prices.gpu.H100 names a GPU type this cluster does not offer (its GPU types: A100, L4)",
        ),
        ({"gpus": 1}, "unknown price 'gpus'"),
        ({"cpu": -1}, "prices.cpu must be a number of at least 0 (per hour), got -1"),
        ({"cpu": True}, "prices.cpu must be a number of at least 0 (per hour), got True"),
        ({"cpu": float("nan")}, "prices.cpu must be a number of at least 0 (per hour), got nan"),
        ({"currency": ""}, "prices.currency must be a name such as \"USD\", got ''"),
    ],
)
def test_bad_prices(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        usage.parse_prices(raw, "[clusters.gpu] in k.toml", PROFILE.gpus)
    assert str(info.value).startswith(f"[clusters.gpu] in k.toml: {expected}")


def test_the_widget_and_the_text_show_gpu_hours_and_cost_once_the_run_ended() -> None:
    pytest.importorskip("ipywidgets")
    import types

    from kjupyter.futures import RunFuture
    from kjupyter.notebook.text_view import summary
    from kjupyter.notebook.widget import RunWidget
    from kjupyter.run_events import Phase, RunFinished, Usage

    backend = types.SimpleNamespace(profile=Profile(name="gpu", prices=usage.Prices({"gpu.A100": 3.6}, "EUR")))
    future = RunFuture("train-ab12", backend, cluster="gpu", function="train")  # type: ignore[arg-type]
    future.set_result(1.0)  # (the outcome is not what this is about)
    view = RunWidget(future)
    for event in (
        Usage("train-ab12", (("cpu", 7200.0), ("gpu.A100", 1800.0))),
        RunFinished("train-ab12", Phase.SUCCEEDED),
    ):
        future.handle(event)
        view(event)
    line = "GPU-h 0.50 (A100) · cpu-h 2.00 · est. cost 1.80 EUR (cpu unpriced)"
    assert f"<span class='kjupyter-usage'>{line}</span>" in view.header.value
    assert summary(future).startswith("kjupyter: run train-ab12 on gpu Succeeded in ")
    assert summary(future).endswith(f" ({line})")


def test_the_jobs_table_cells() -> None:
    assert usage.table_cells(usage.summary(None, usage.Prices())) == ["-", "-"]
    assert usage.table_cells(usage.summary({"cpu": 3600.0}, usage.Prices())) == ["0.00", "-"]
    priced = usage.Prices({"gpu.A100": 2.0})
    assert usage.table_cells(usage.summary({"gpu.A100": 5400.0}, priced)) == ["1.50", "3.00"]
    assert usage.table_cells(usage.summary({"gpu.A100": 5400.0, "cpu": 1.0}, priced)) == ["1.50", "3.00+"]


def test_a_pod_of_an_unexpected_shape_leaves_the_usage_unmeasured_not_the_run_unfinished() -> None:
    event = run_usage("r", [{"status": {"containerStatuses": "garbage"}, "spec": 7}], PROFILE)
    assert event.as_dict == {} and event.source.startswith("pods; not measured: ")


def test_a_record_without_its_job_still_says_what_the_run_used() -> None:
    from kjupyter.backends.kubernetes.records import record_entry

    meta = {"run_id": "r-1", "cluster": "gpu", "phase": "Succeeded", "created": 1.0, "finished": 2.0,
            "usage": {"gpu.A100": 7200, "cpu": 3600.5}}  # fmt: skip
    info = record_entry(meta, "gpu", "ml", now=10.0)
    assert info.usage == {"gpu.A100": 7200.0, "cpu": 3600.5}
    assert info.as_dict()["usage"] == {"gpu.A100": 7200.0, "cpu": 3600.5}
    assert record_entry({**meta, "usage": None}, "gpu", "ml", now=10.0).usage == {}
