"""GPU fallback lists as values: parsing, the places they match, the advice on free GPUs, ``failover_after``."""

from __future__ import annotations

from pathlib import Path

import pytest

from kjupyter.backends.base import GpuCount, GpuReport
from kjupyter.config import load_config
from kjupyter.errors import ConfigError, SpecError
from kjupyter.placement import advice, candidates, gpus_table
from kjupyter.spec import RunSpec, gpu_choices

CONFIG = """
default = "west"
[clusters.east]
backend = "kubernetes"
failover_after = "90s"
[clusters.east.gpus.H100]
[clusters.east.gpus.A100]
[clusters.west]
backend = "kubernetes"
[clusters.west.gpus.A100]
[clusters.west.gpus.L4]
"""


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "kjupyter.toml"
    path.write_text(CONFIG)
    return load_config(files=[path], env={})


@pytest.mark.parametrize(
    ("value", "choices"),
    [
        (["H100:1", "A100:1", "L4:2"], ((1, "H100"), (1, "A100"), (2, "L4"))),
        ("H100:1,A100:1", ((1, "H100"), (1, "A100"))),  # (as %%kube --gpu and kjupyter render --gpu pass it)
        (("H100", "A100:2"), ((1, "H100"), (2, "A100"))),
        (["A100:1"], None),  # a list of one is a single choice: as gpu="A100:1"
        ("A100:2", None),
        (2, None),
    ],
)
def test_gpu_choices(value: object, choices: object) -> None:
    assert gpu_choices(value) == choices


@pytest.mark.parametrize("value", [[], ["H100:1", 2], ["H100:1", "A100:0"], "H100:1,", ["H100:1", "a b"]])
def test_a_bad_gpu_list_is_one_sentence(value: object) -> None:
    with pytest.raises(SpecError) as info:
        RunSpec.build(gpu=value)
    assert "gpu" in str(info.value) and "\n" not in str(info.value)


def test_a_list_keeps_its_first_choice_in_the_spec() -> None:
    assert RunSpec.build(gpu=["H100:2", "A100:1"]).resources.gpu_type == "H100"
    assert RunSpec.build(gpu=["H100:2", "A100:1"]).resources.gpu == 2
    assert RunSpec.build(gpu="A100:1") == RunSpec.build(gpu=["A100:1"])


def test_places_follow_the_list_then_the_clusters_default_first(config) -> None:  # type: ignore[no-untyped-def]
    places = candidates(config, ((1, "H100"), (1, "A100"), (2, "L4")), first="west")
    assert [(p.profile.name, p.gpu) for p in places] == [("east", "H100:1"), ("west", "A100:1"), ("east", "A100:1"),
                                                         ("west", "L4:2")]  # fmt: skip
    named = candidates(config, ((1, "H100"), (1, "A100")), cluster="west")
    assert [p.label for p in named] == ["west (A100)"]


def test_an_unknown_type_names_what_is_offered_and_where(config) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        candidates(config, ((1, "H200"), (1, "A100")))
    assert str(info.value).startswith("no configured cluster offers H200 GPUs (gpu=[H200:1, A100:1]); the GPU types "
                                      "offered are A100 (east, west), H100 (east), L4 (west)")  # fmt: skip


def test_failover_after_is_a_profile_duration(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert config.profiles["east"].failover_after == 90.0 and config.profiles["west"].failover_after is None
    bad = tmp_path / "bad.toml"
    bad.write_text('[clusters.x]\nbackend = "kubernetes"\nfailover_after = "soon"\n')
    with pytest.raises(ConfigError, match=r"\[clusters.x\].*failover_after"):
        load_config(files=[bad], env={})


REPORTS = [
    GpuReport("east", ("H100", "A100"), (GpuCount("H100", 0, 0, 0), GpuCount("A100", 2, 8, 1))),
    GpuReport("west", ("A100", "L4"), (GpuCount("A100", 1, 4, 0), GpuCount("L4", 2, 8, 5))),
    GpuReport("south", ("L4",), None, "your account may not list nodes on 'south' (403), so ..."),
]


def test_advice_names_the_most_free_alternative() -> None:
    assert advice(REPORTS, "A100", 1, "west") == "No A100 free on west; west has 5 L4 free: `cluster='west', gpu='L4:1'`."
    assert advice(REPORTS, "A100", 2, "west") == "No A100 free on west; west has 5 L4 free: `cluster='west', gpu='L4:2'`."
    assert advice(REPORTS, "L4", 6, "west") == (
        "No L4 free on west; no other configured cluster has 6 GPU(s) of a type it offers free right now "
        "(not counted: south)."
    )
    assert advice(REPORTS, "L4", 1, "south").startswith("The free L4 GPUs on south are not known (your account may")


def test_gpus_table() -> None:
    assert gpus_table(REPORTS).splitlines() == [
        "PROFILE  GPU   NODES  ALLOCATABLE  FREE",
        "east     H100  0      0            0",
        "east     A100  2      8            1",
        "west     A100  1      4            0",
        "west     L4    2      8            5",
        "south    L4    ?      ?            ?",
        "south: your account may not list nodes on 'south' (403), so ....",
    ]


def test_a_record_with_moves_shows_them_before_its_diagnosis() -> None:
    from kjupyter.backends.run_record import record_info

    moved = "No H100 can be added on east: NotTriggerScaleUp; moved to west (A100)."
    meta = {"run_id": "r-1", "phase": "Failed", "diagnosis": "The task crashed with exit code 3.",
            "moves": [{"from": "east", "to": "west", "sentence": moved}]}  # fmt: skip
    assert record_info(meta, "west").diagnosis == f"{moved} The task crashed with exit code 3."
    assert record_info({"run_id": "r-2", "diagnosis": "x."}, "west").diagnosis == "x."


def test_gpu_counts_from_nodes_and_pods() -> None:
    from kjupyter.backends.kubernetes.gpus import count, node_gpu_type, pod_gpus
    from kjupyter.config import GpuType, Profile

    gpus = {"A100": GpuType("A100", {"accel": "a100"}), "L4": GpuType("L4")}
    profile = Profile("p", backend="kubernetes", gpus=gpus)

    def node(name: str, labels: dict[str, str], gpu: int) -> dict:  # type: ignore[type-arg]
        return {"metadata": {"name": name, "labels": labels}, "status": {"allocatable": {"nvidia.com/gpu": str(gpu)}}}

    def pod(on: str, limit: int, init: int = 0) -> dict:  # type: ignore[type-arg]
        res = {"limits": {"nvidia.com/gpu": str(limit)}}
        return {"spec": {"nodeName": on, "containers": [{"resources": res}, {"resources": {}}],
                         "initContainers": [{"resources": {"requests": {"nvidia.com/gpu": str(init)}}}]}}  # fmt: skip

    nodes = [node("a1", {"accel": "a100"}, 8), node("a2", {"accel": "a100"}, 8),
             node("l1", {"nvidia.com/gpu.product": "NVIDIA-L4"}, 4), node("c1", {}, 0)]  # fmt: skip
    assert [node_gpu_type(n, gpus) for n in nodes] == ["A100", "A100", "L4", None]
    assert pod_gpus(pod("a1", 2), "nvidia.com/gpu") == 2 and pod_gpus(pod("a1", 1, init=3), "nvidia.com/gpu") == 3
    counts = count(profile, nodes, [pod("a1", 8), pod("a2", 3), pod("l1", 1), pod(on="", limit=4)])
    assert [(c.gpu_type, c.nodes, c.allocatable, c.free) for c in counts] == [("A100", 2, 16, 5), ("L4", 1, 4, 3)]
    assert [c.free for c in count(profile, nodes, None)] == [None, None]
