"""API surface: discovery, auth, metadata semantics, Status errors, validation, patches, lists."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from tests.fakekube.cluster import FakeCluster

from .helpers import job, raw


def test_startup_is_fast_and_version_matches(make_fake_cluster: Any) -> None:
    t0 = time.perf_counter()
    cluster = make_fake_cluster(kubernetes_version="1.31.4")
    assert time.perf_counter() - t0 < 0.3
    from kubernetes import client  # type: ignore[import-untyped]

    version = client.VersionApi(cluster.api_client()).get_code()
    assert (version.git_version, version.major, version.minor) == ("v1.31.4", "1", "31")
    assert Path(cluster.kubeconfig_path).read_text().count(cluster.token) == 1


def test_discovery_documents(fake_cluster: FakeCluster) -> None:
    status, apis, _ = raw(fake_cluster, "GET", "/apis")
    assert status == 200 and {g["name"] for g in apis["groups"]} >= {"batch", "authorization.k8s.io"}
    _, core, _ = raw(fake_cluster, "GET", "/api/v1")
    names = {r["name"] for r in core["resources"]}
    assert {"pods", "pods/log", "events", "secrets", "configmaps", "namespaces"} <= names
    _, batch, _ = raw(fake_cluster, "GET", "/apis/batch/v1")
    assert batch["groupVersion"] == "batch/v1" and batch["resources"][0]["name"] == "jobs"
    assert raw(fake_cluster, "GET", "/api")[1]["versions"] == ["v1"]


def test_requests_without_the_token_get_401(fake_cluster: FakeCluster) -> None:
    for token in (None, "wrong"):
        status, body, _ = raw(fake_cluster, "GET", "/api/v1/namespaces/default/pods", token=token)
        assert status == 401
        assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    # The scheme is case-insensitive, as in the apiserver: the in-cluster loader sends "bearer <token>".
    assert raw(fake_cluster, "GET", "/api/v1/namespaces/default/pods", scheme="bearer")[0] == 200


def test_metadata_semantics(k8s: Any) -> None:
    created = k8s.batch.create_namespaced_job("default", job("", metadata={"generateName": "gen-"}))
    meta = created.metadata
    assert meta.name.startswith("gen-") and len(meta.name) == len("gen-") + 5
    assert meta.uid and meta.creation_timestamp and meta.generation == 1
    rv1 = int(meta.resource_version)
    secret = k8s.core.create_namespaced_secret("default", {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    assert int(secret.metadata.resource_version) > rv1   # one global counter
    assert secret.data == {"k": "dg=="} and secret.type == "Opaque"
    # spec changes bump generation, status changes do not
    patched = k8s.batch.patch_namespaced_job(meta.name, "default", {"spec": {"suspend": True}})
    assert patched.metadata.generation == 2
    st = k8s.batch.patch_namespaced_job_status(meta.name, "default", {"status": {"startTime": None}})
    assert st.metadata.generation == 2
    # the main resource ignores status, the status subresource ignores spec (a pod no scheduler picks up)
    p = {"metadata": {"name": "p"}, "spec": {"schedulerName": "none", "containers": [{"name": "c", "image": "i"}]}}
    k8s.core.create_namespaced_pod("default", p)
    st = k8s.core.patch_namespaced_pod_status("p", "default", {"status": {"message": "set"}})
    assert st.status.message == "set"
    again = k8s.core.patch_namespaced_pod("p", "default", {"status": {"message": "ignored"}})
    assert again.status.message == "set"
    # defaults as the apiserver sets them
    spec = created.spec
    assert (spec.completions, spec.parallelism, spec.backoff_limit, spec.completion_mode) == (1, 1, 6, "NonIndexed")
    assert spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": meta.uid}
    labels = spec.template.metadata.labels
    assert labels["job-name"] == labels["batch.kubernetes.io/job-name"] == meta.name
    assert labels["controller-uid"] == meta.uid
    container = spec.template.spec.containers[0]
    assert container.termination_message_path == "/dev/termination-log" and container.image_pull_policy


def test_status_bodies_for_404_409(fake_cluster: FakeCluster) -> None:
    status, body, _ = raw(fake_cluster, "GET", "/apis/batch/v1/namespaces/default/jobs/nope")
    assert status == 404
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'jobs.batch "nope" not found', "reason": "NotFound",
                    "details": {"name": "nope", "group": "batch", "kind": "jobs"}, "code": 404}
    _, body, _ = raw(fake_cluster, "GET", "/api/v1/namespaces/default/pods/nope")
    assert body["message"] == 'pods "nope" not found' and body["details"] == {"name": "nope", "kind": "pods"}
    assert raw(fake_cluster, "POST", "/apis/batch/v1/namespaces/default/jobs", job("dup"))[0] == 201
    status, body, _ = raw(fake_cluster, "POST", "/apis/batch/v1/namespaces/default/jobs", job("dup"))
    assert status == 409 and body["reason"] == "AlreadyExists"
    assert body["message"] == 'jobs.batch "dup" already exists'
    status, body, _ = raw(fake_cluster, "POST", "/apis/batch/v1/namespaces/missing/jobs", job("x"))
    assert status == 404 and body["message"] == 'namespaces "missing" not found'


def test_misspelled_field_is_rejected_with_422(fake_cluster: FakeCluster) -> None:
    bad = job("typo")
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container["comand"] = container.pop("command")
    status, body, _ = raw(fake_cluster, "POST", "/apis/batch/v1/namespaces/default/jobs", bad)
    assert status == 422
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["reason"] == "Invalid"
    assert body["code"] == 422 and body["details"]["kind"] == "Job" and body["details"]["group"] == "batch"
    assert body["message"].startswith('Job.batch "typo" is invalid: spec.template.spec.containers[0].comand: ')
    assert "Additional properties are not allowed ('comand' was unexpected)" in body["message"]
    assert body["details"]["causes"][0]["field"] == "spec.template.spec.containers[0].comand"
    assert fake_cluster.get("jobs", "typo") is None


def test_semantic_validation(fake_cluster: FakeCluster, k8s: Any) -> None:
    bad = job("no-restart")
    del bad["spec"]["template"]["spec"]["restartPolicy"]
    status, body, _ = raw(fake_cluster, "POST", "/apis/batch/v1/namespaces/default/jobs", bad)
    assert status == 422 and "spec.template.spec.restartPolicy: Required value" in body["message"]
    long_label = job("lbl", metadata={"labels": {"run": "x" * 64}})
    status, body, _ = raw(fake_cluster, "POST", "/apis/batch/v1/namespaces/default/jobs", long_label)
    assert status == 422 and "must be no more than 63 characters" in body["message"]
    status, body, _ = raw(fake_cluster, "POST", "/apis/batch/v1/namespaces/default/jobs", job("Upper_Case"))
    assert status == 422 and "RFC 1123 subdomain" in body["message"]
    # updates are validated too
    k8s.batch.create_namespaced_job("default", job("upd"))
    status, body, _ = raw(fake_cluster, "PATCH", "/apis/batch/v1/namespaces/default/jobs/upd",
                          {"spec": {"parallelism": "many"}}, content_type="application/merge-patch+json")
    assert status == 422 and "'many' is not of type 'integer'" in body["message"]


def test_patch_content_types_and_conflicts(fake_cluster: FakeCluster, k8s: Any) -> None:
    k8s.core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}})
    path = "/api/v1/namespaces/default/configmaps/cm"
    status, body, _ = raw(fake_cluster, "PATCH", path, {"data": {"a": None, "c": "3"}},
                          content_type="application/merge-patch+json")
    assert status == 200 and body["data"] == {"b": "2", "c": "3"}
    status, body, _ = raw(fake_cluster, "PATCH", path, {"data": {"d": "4"}},
                          content_type="application/strategic-merge-patch+json")
    assert body["data"] == {"b": "2", "c": "3", "d": "4"}
    status, body, _ = raw(fake_cluster, "PATCH", path, [{"op": "replace", "path": "/data/b", "value": "x"},
                                                        {"op": "remove", "path": "/data/c"}],
                          content_type="application/json-patch+json")
    assert status == 200 and body["data"] == {"b": "x", "d": "4"}
    stale = dict(body, metadata=dict(body["metadata"], resourceVersion="1"))
    status, body, _ = raw(fake_cluster, "PUT", path, stale)
    assert status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]


def test_secrets_configmaps_namespaces(k8s: Any, make_fake_cluster: Any) -> None:
    k8s.core.create_namespaced_secret("default", {"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {}})
    k8s.core.create_namespaced_secret("default", {"metadata": {"name": "b"}, "data": {}})
    assert [s.metadata.name for s in k8s.core.list_namespaced_secret("default", label_selector="x=1").items] == ["a"]
    assert k8s.core.read_namespaced_secret("b", "default").metadata.name == "b"
    k8s.core.delete_namespaced_secret("b", "default")
    with pytest.raises(ApiException) as e:
        k8s.core.read_namespaced_secret("b", "default")
    assert e.value.status == 404
    assert k8s.core.read_namespace("default").status.phase == "Active"
    other = make_fake_cluster(namespaces=["ml"])
    from kubernetes import client

    assert client.CoreV1Api(other.api_client()).read_namespace("ml").metadata.name == "ml"


def test_list_pagination_and_resource_version(k8s: Any) -> None:
    for i in range(5):
        k8s.core.create_namespaced_config_map("default", {"metadata": {"name": f"cm-{i}"}})
    first = k8s.core.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in first.items] == ["cm-0", "cm-1"]
    assert first.metadata.remaining_item_count == 3 and first.metadata.resource_version
    rest = k8s.core.list_namespaced_config_map("default", limit=10, _continue=first.metadata._continue)
    assert [c.metadata.name for c in rest.items] == ["cm-2", "cm-3", "cm-4"] and not rest.metadata._continue


def test_request_log(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.clear_requests()
    k8s.batch.create_namespaced_job("default", job("logged"))
    k8s.batch.read_namespaced_job("logged", "default")
    k8s.batch.list_namespaced_job("default", label_selector="a=b")
    assert len(fake_cluster.requests(verb="create", resource="jobs")) == 1
    assert len(fake_cluster.requests(verb="get", resource="jobs.batch")) == 1
    listed = fake_cluster.requests(verb="list", resource="jobs")
    assert len(listed) == 1 and listed[0].query["labelSelector"] == "a=b" and listed[0].status == 200
    rec = fake_cluster.requests(verb="create")[0]
    assert (rec.method, rec.namespace, rec.group, rec.status) == ("POST", "default", "batch", 201)
    fake_cluster.clear_requests()
    assert fake_cluster.requests() == []


def test_deletecollection_and_cluster_scoped_lists(fake_cluster: FakeCluster, k8s: Any) -> None:
    fake_cluster.add_namespace("team")
    k8s.batch.create_namespaced_job("default", job("j1", suspend=True))
    k8s.batch.create_namespaced_job("team", job("j2", suspend=True))
    assert sorted(j.metadata.name for j in k8s.batch.list_job_for_all_namespaces().items) == ["j1", "j2"]
    for i in range(3):
        k8s.core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}", "labels": {"g": str(i % 2)}}})
    k8s.core.delete_collection_namespaced_config_map("default", label_selector="g=0")
    assert [c.metadata.name for c in k8s.core.list_namespaced_config_map("default").items] == ["c1"]
    assert fake_cluster.requests(verb="deletecollection", resource="configmaps")
