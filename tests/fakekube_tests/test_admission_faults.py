"""Pods that cannot be created (ResourceQuota, an admission webhook): 403 on the API, FailedCreate events on the
Job and no pods; and image pulls that fail a few times before they work."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from tests.fakekube.cluster import FakeCluster

from .helpers import job, job_finished, job_status, pod, pods_of, waiting_reason

GPU = {"resources": {"limits": {"nvidia.com/gpu": "1"}}}
FAST_RETRY = {"job_api_backoff": 0.01, "job_api_backoff_max": 0.05}


def failed_creates(cluster: FakeCluster, name: str) -> list[dict[str, Any]]:
    return cluster.events_for(name, reason="FailedCreate")


@pytest.mark.fake_cluster(**FAST_RETRY)
def test_quota_denies_job_pods_with_failed_create_events(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.add_node("gpu-1", gpu=1)
    fake_cluster.quota("default", {"requests.nvidia.com/gpu": "0", "pods": "10"}, name="gpu-quota")
    k8s.batch.create_namespaced_job("default", job("train", container=GPU))
    events = fake_cluster.wait_for(lambda: failed_creates(fake_cluster, "train"))
    quota_words = ("is forbidden: exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1, used: "
                   "requests.nvidia.com/gpu=0, limited: requests.nvidia.com/gpu=0")
    assert re.fullmatch(r'Error creating: pods "train-[a-z0-9]{5}" ' + re.escape(quota_words), events[0]["message"])
    assert (events[0]["type"], events[0]["source"]["component"]) == ("Warning", "job-controller")
    # retried with backoff: every attempt generates a new pod name, so after 10 distinct messages client-go's
    # correlator folds them into one "(combined from similar events)" event whose count keeps growing
    combined = fake_cluster.wait_for(lambda: [e for e in failed_creates(fake_cluster, "train")
                                              if e["message"].startswith("(combined from similar events): ")
                                              and e["count"] >= 3])
    assert quota_words in combined[0]["message"]
    assert pods_of(fake_cluster, "train") == [] and not job_status(fake_cluster, "train").get("active")
    # the quota is a real object with the usage the quota controller reports
    quota = k8s.core.read_namespaced_resource_quota("gpu-quota", "default")
    assert quota.status.hard == {"requests.nvidia.com/gpu": "0", "pods": "10"}
    assert quota.status.used == {"requests.nvidia.com/gpu": "0", "pods": "0"}
    # a direct create through the API gets the admission's 403
    with pytest.raises(ApiException) as e:
        k8s.core.create_namespaced_pod("default", pod("direct", container=GPU))
    body = json.loads(e.value.body)
    assert (e.value.status, body["reason"], body["message"]) == (403, "Forbidden", f'pods "direct" {quota_words}')
    assert body["details"] == {"name": "direct", "kind": "pods"}
    # lifting the quota lets the job create its pod and finish
    k8s.core.delete_namespaced_resource_quota("gpu-quota", "default")
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "train"), 15) == "Complete"


def test_quota_counts_running_pods_and_wants_requests(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.quota("default", {"requests.cpu": "1", "pods": "2"}, name="cpu-quota")
    with pytest.raises(ApiException) as e:
        k8s.core.create_namespaced_pod("default", pod("bare"))
    assert json.loads(e.value.body)["message"] == \
        'pods "bare" is forbidden: failed quota: cpu-quota: must specify requests.cpu for: main'
    sleeper = "import time; time.sleep(30)"
    cpu = {"resources": {"requests": {"cpu": "600m"}}}
    k8s.core.create_namespaced_pod("default", pod("one", sleeper, container=cpu))
    with pytest.raises(ApiException) as e:
        k8s.core.create_namespaced_pod("default", pod("two", sleeper, container=cpu))
    assert json.loads(e.value.body)["message"] == (
        'pods "two" is forbidden: exceeded quota: cpu-quota, requested: requests.cpu=600m, used: '
        "requests.cpu=600m, limited: requests.cpu=1")
    fake_cluster.wait_for(lambda: (k8s.core.read_namespaced_resource_quota("cpu-quota", "default").status.used
                                   or {}) == {"requests.cpu": "600m", "pods": "1"})
    k8s.core.delete_namespaced_pod("one", "default", grace_period_seconds=0)
    fake_cluster.wait_for(lambda: fake_cluster.get("pods", "one") is None)
    k8s.core.create_namespaced_pod("default", pod("two", sleeper, container=cpu))   # room again
    fake_cluster.clear_faults()                                                      # deletes quota()'s quotas
    assert fake_cluster.get("resourcequotas", "cpu-quota") is None


@pytest.mark.fake_cluster(**FAST_RETRY)
def test_webhook_denial_counts_repeats_on_one_event(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.deny_pod_creation("webhook", "pods must carry a team label", webhook="policy.example.com")
    message = 'admission webhook "policy.example.com" denied the request: pods must carry a team label'
    k8s.batch.create_namespaced_job("default", job("pol"))
    events = fake_cluster.wait_for(lambda: [e for e in failed_creates(fake_cluster, "pol") if e["count"] >= 3])
    assert len(failed_creates(fake_cluster, "pol")) == 1          # the same message: one event, count grows
    assert events[0]["message"] == f"Error creating: {message}" and events[0]["type"] == "Warning"
    assert events[0]["lastTimestamp"] >= events[0]["firstTimestamp"]
    with pytest.raises(ApiException) as e:
        k8s.core.create_namespaced_pod("default", pod("direct"))
    body = json.loads(e.value.body)
    assert (e.value.status, body["reason"], body["message"]) == (403, "Forbidden", message)
    assert pods_of(fake_cluster, "pol") == []
    fake_cluster.clear_faults()
    assert fake_cluster.wait_for(lambda: job_finished(fake_cluster, "pol"), 15) == "Complete"


def test_deny_pod_creation_count_namespace_and_code(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.add_namespace("ml")
    fake_cluster.deny_pod_creation("quota", count=1, namespace="ml")
    fake_cluster.deny_pod_creation("webhook", "no", webhook="kyverno.example", code=400, namespace="ml")
    k8s.core.create_namespaced_pod("default", pod("elsewhere"))          # another namespace: not affected
    with pytest.raises(ApiException) as e:
        k8s.core.create_namespaced_pod("ml", pod("p"))
    assert json.loads(e.value.body)["message"] == ('pods "p" is forbidden: exceeded quota: fakekube-quota, '
                                                   "requested: pods=1, used: pods=0, limited: pods=0")
    with pytest.raises(ApiException) as e:                               # the quota denial is used up
        k8s.core.create_namespaced_pod("ml", pod("p"))
    body = json.loads(e.value.body)
    assert (e.value.status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == 'admission webhook "kyverno.example" denied the request: no'
    fake_cluster.clear_faults()
    k8s.core.create_namespaced_pod("ml", pod("p"))


def test_flaky_image_recovers_after_failures(fake_cluster: FakeCluster, k8s: Any) -> None:
    image = "registry.example.com/team/flaky:1.0"
    fake_cluster.flaky_image("registry.example.com/team/flaky:*", failures=2)
    k8s.core.create_namespaced_pod("default", pod("fl", image=image))
    reasons: list[str] = []

    def seen() -> bool:
        r = waiting_reason(fake_cluster.get("pods", "fl"))
        if r and (not reasons or reasons[-1] != r):
            reasons.append(r)
        return bool((fake_cluster.get("pods", "fl") or {}).get("status", {}).get("phase") == "Succeeded")

    fake_cluster.wait_for(seen, 15)
    assert reasons[:2] == ["ErrImagePull", "ImagePullBackOff"] and reasons.count("ErrImagePull") == 2
    failed = [e for e in fake_cluster.events_for("fl", reason="Failed") if e["message"].startswith("Failed to pull")]
    assert len(failed) == 1 and failed[0]["count"] == 2 and failed[0]["type"] == "Warning"
    assert failed[0]["message"] == (
        f'Failed to pull image "{image}": rpc error: code = Unknown desc = failed to pull and unpack image '
        f'"{image}": failed to resolve reference "{image}": unexpected status from HEAD request to '
        "https://registry.example.com/v2/team/flaky/manifests/1.0: 503 Service Unavailable")
    assert [e["message"] for e in fake_cluster.events_for("fl", reason="BackOff")] == [f'Back-off pulling image "{image}"']
    assert fake_cluster.events_for("fl", reason="Pulled")[0]["message"].startswith(f'Successfully pulled image "{image}"')


def test_flaky_docker_hub_image_wording_and_clear(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.flaky_image("busybox", failures=100)
    k8s.core.create_namespaced_pod("default", pod("bb", image="busybox"))
    fake_cluster.wait_for(lambda: waiting_reason(fake_cluster.get("pods", "bb")) == "ErrImagePull")
    status = fake_cluster.get("pods", "bb")["status"]["containerStatuses"][0]   # type: ignore[index]
    assert status["state"]["waiting"]["message"].endswith(
        '"docker.io/library/busybox:latest": unexpected status from HEAD request to '
        "https://registry-1.docker.io/v2/library/busybox/manifests/latest: 503 Service Unavailable")
    fake_cluster.clear_faults()
    fake_cluster.wait_for(lambda: (fake_cluster.get("pods", "bb") or {}).get("status", {}).get("phase")
                          == "Succeeded", 15)
