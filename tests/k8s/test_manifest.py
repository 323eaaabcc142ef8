"""Manifests as data: labels, resources, GPUs, inline Secret; every shape validates strictly on 1.29-1.33."""

from __future__ import annotations

import json

import pytest

from kjupyter import store as st
from kjupyter.backends.kubernetes import objects as mf
from kjupyter.backends.kubernetes.render import render, target_for
from kjupyter.config import GpuType, Profile
from kjupyter.spec import RunSpec

kubernetes_validate = pytest.importorskip("kubernetes_validate")

A100 = GpuType("A100", {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"},
               ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},))  # fmt: skip
PROFILE = Profile(name="gpu", backend="kubernetes", namespace="ml", image="reg/img:1", store="s3://b/kj",
                  service_account="runner", image_pull_secrets=("regcred",), secrets=("aws-creds",),
                  gpus={"A100": A100}, store_options={"anon": False, "key": "AKIA", "client_kwargs": {"endpoint_url": "http://m"}})  # fmt: skip


def build(spec: RunSpec, **kw: object) -> mf.RunObjects:
    args: dict[str, object] = dict(run_id="train-abc123", kind="call", spec=spec, target=target_for(PROFILE),
                                   user="Ada Lovelace", session="s1", function="train", run_url="s3://b/kj/u/train-abc123")  # fmt: skip
    args.update(kw)
    return mf.build(**args)  # type: ignore[arg-type]


def test_gpu_call_job_has_labels_resources_placement_and_limits() -> None:
    job = build(RunSpec.build(gpu="A100:2", memory="16Gi", cpu=4, timeout="1h", retries=2, env={"A": "1"},
                              secrets=["extra"])).job  # fmt: skip
    meta, spec = job["metadata"], job["spec"]
    assert meta["labels"][mf.MANAGED_BY] == "kjupyter"
    assert meta["labels"][mf.LABEL_RUN] == "train-abc123" and meta["labels"][mf.LABEL_USER] == "Ada-Lovelace"
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 1 and spec["backoffLimit"] == 2
    assert spec["activeDeadlineSeconds"] == 3600 and spec["ttlSecondsAfterFinished"] == 86400
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "runner"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    (c,) = pod["containers"]
    assert c["name"] == "task" and c["image"] == "reg/img:1"
    assert c["command"] == ["python", "-m", "kjupyter.runner"] and c["args"] == ["--run", "s3://b/kj/u/train-abc123"]
    assert c["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"},
                              "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}}  # fmt: skip
    assert c["envFrom"] == [{"secretRef": {"name": "aws-creds"}}, {"secretRef": {"name": "extra"}}]
    env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"]["key"] for e in c["env"]}
    assert env["A"] == "1" and "AKIA" not in str(job)  # no credentials in manifests
    assert "endpoint_url" in env["KJUPYTER_STORE_OPTIONS"]


def test_map_is_one_indexed_job_of_p_workers() -> None:
    job = build(RunSpec.build(retries=1), kind="map", count=100_000, parallelism=50).job
    assert job["spec"]["completions"] == 50 and job["spec"]["parallelism"] == 50  # worker pods, not items
    assert job["spec"]["backoffLimitPerIndex"] == mf.worker_restarts(1) and job["spec"]["podReplacementPolicy"] == "Failed"
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--items") + 1] == "100000" and args[args.index("--retries") + 1] == "1"


@pytest.mark.parametrize("scheme", ["s3", "s3a", "gs", "gcs"])
def test_map_claims_dynamically_where_the_store_library_creates_only_if_absent(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Job's claims follow kjupyter.store.atomic_create: dynamic with s3fs/gcsfs 2024.12+, else static."""
    library = "gcsfs" if scheme.startswith("g") else "s3fs"
    for version, claims in (((2024, 12), "dynamic"), ((2024, 11), "static")):
        monkeypatch.setattr(st, "_version", lambda dist, v=version: v if dist == library else ())
        job = build(RunSpec(), kind="map", count=10, parallelism=2, run_url=f"{scheme}://b/kj/u/train-abc123").job
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert job["metadata"]["annotations"][mf.ANNOTATION_CLAIMS] == claims
        assert args[args.index("--claims") + 1] == claims
    assert mf.claims_mode("az://b/kj/u/r") == "static" and mf.claims_mode(None) == "static"


def test_map_with_items_per_pod_one_is_one_indexed_job_with_per_index_retries() -> None:
    job = build(RunSpec.build(retries=1, items_per_pod=1), kind="map", count=100_000, parallelism=50).job
    assert job["spec"]["completions"] == 100_000 and job["spec"]["parallelism"] == 50
    assert job["spec"]["backoffLimitPerIndex"] == 1


def test_inline_payload_secret_is_mounted() -> None:
    objs = build(RunSpec(), run_url=None, inline={"payload.pkl": b"abc"})
    assert objs.secret is not None and objs.secret["data"] == {"payload.pkl": "YWJj", "run-key": ""}
    pod = objs.job["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"] == {"secretName": mf.secret_name("train-abc123"),
                                           "items": [{"key": "payload.pkl", "path": "payload.pkl"}]}  # not the key
    assert objs.job["spec"]["suspend"] is True  # resumed once the Secret exists
    assert pod["containers"][0]["args"] == ["--inline", mf.PAYLOAD_MOUNT]
    ref = mf.owner_reference({"metadata": {"name": "train-abc123", "uid": "u1"}})
    assert ref["kind"] == "Job" and ref["uid"] == "u1"


def test_every_run_gets_its_key_from_its_own_secret_never_in_the_manifest() -> None:
    objs = build(RunSpec(), run_url="s3://b/p/u/train-abc123", run_key=bytes(range(32)))
    assert objs.secret is not None and objs.secret["data"].keys() == {"run-key"}
    (env,) = [e for e in objs.job["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "KJUPYTER_RUN_KEY"]
    assert env == {"name": "KJUPYTER_RUN_KEY",
                   "valueFrom": {"secretKeyRef": {"name": mf.secret_name("train-abc123"), "key": "run-key"}}}
    assert bytes(range(32)).hex() not in json.dumps(objs.job)


SHAPES = [
    ("call", RunSpec()),
    ("call", RunSpec.build(gpu="A100:1", memory="16Gi", cpu="500m", timeout=90, retries=3, env={"X": "y"})),
    ("map", RunSpec.build(parallelism=10, retries=2, secrets=["s"])),
]


@pytest.mark.parametrize("version", ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"])
@pytest.mark.parametrize("store", [True, False])
def test_every_manifest_validates_strictly(version: str, store: bool) -> None:
    profile = PROFILE if store else Profile(**{**PROFILE.__dict__, "store": None})
    for kind, spec in SHAPES:
        for obj in render(profile, spec, count=1000 if kind == "map" else 1, kind=kind, user="u", session="s"):
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_secret_gets_its_owner_without_the_input_changing() -> None:
    objs = build(RunSpec(), run_url=None, inline={"payload.pkl": b"abc"})
    assert objs.secret is not None and "ownerReferences" not in objs.secret["metadata"]
    assert [o["kind"] for o in objs.all()] == ["Job", "Secret"]  # the order they are created in
    owned = mf.owned_by(objs.secret, {"metadata": {"name": "train-abc123", "uid": "u-1"}})
    assert owned["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "train-abc123",
                                                     "uid": "u-1", "controller": False, "blockOwnerDeletion": False}]  # fmt: skip
    assert "ownerReferences" not in objs.secret["metadata"] and owned["data"] == objs.secret["data"]


def test_store_options_reach_pods_without_credentials() -> None:
    target = target_for(PROFILE)
    assert target.store_options == {"anon": False, "client_kwargs": {"endpoint_url": "http://m"}}
    (c,) = build(RunSpec()).job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"]["key"] for e in c["env"]}
    assert json.loads(env["KJUPYTER_STORE_OPTIONS"]) == {"anon": False, "client_kwargs": {"endpoint_url": "http://m"}}
