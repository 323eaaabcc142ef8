"""The REST routes under /kjupyter/, through a real Jupyter server (pytest-jupyter's ``jp_fetch``)."""

from __future__ import annotations

import asyncio
import inspect
import json
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
import tornado.httpclient
import tornado.web

from kjupyter import lab_choice
from kjupyter.server import handlers

from .conftest import wait_for

METHODS = ("get", "post", "put", "delete", "patch", "head")


async def fetch_json(jp_fetch: Any, *parts: str, **kwargs: Any) -> Any:
    response = await jp_fetch("kjupyter", *parts, **kwargs)
    return json.loads(response.body)


async def expect_error(jp_fetch: Any, code: int, *parts: str, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await jp_fetch("kjupyter", *parts, **kwargs)
    assert info.value.code == code, info.value
    assert info.value.response is not None
    body: dict[str, Any] = json.loads(info.value.response.body)
    return body


def test_every_route_method_is_authenticated_and_authorized() -> None:
    """Static half of the check: each HTTP method of each routed handler is an APIHandler method with
    ``@tornado.web.authenticated`` outside ``@authorized(action)``: "read" for GET, "write" for the others.

    The live half (the Authorizer is really asked, with these actions) is in test_authorization.py.
    """
    from jupyter_server.base.handlers import APIHandler

    checked = 0
    for _path, handler in handlers.ROUTES:
        assert issubclass(handler, APIHandler), f"{handler.__name__} must derive from APIHandler (XSRF, JSON errors)"
        assert handler.auth_resource == handlers.AUTH_RESOURCE == "kjupyter", handler.__name__
        for name in METHODS:
            method = handler.__dict__.get(name)
            if method is None:
                continue
            where = f"{handler.__name__}.{name}"
            source = inspect.getsource(method)
            assert re.search(r"@tornado\.web\.authenticated\s+@authorized\(", source), (
                f"{where} needs @tornado.web.authenticated directly above @authorized(...)"
            )
            action = "read" if name in ("get", "head") else "write"
            assert re.search(rf'@authorized\("{action}"[^)]*\)\s+(async\s+)?def {name}\(', source), (
                f'{where} needs @authorized("{action}", ...) right above its def'
            )
            # Both decorators really wrap it (a decorator named in a comment would not).
            inner = getattr(method, "__wrapped__", None)
            assert inner is not None and getattr(inner, "__wrapped__", None) is not None, (
                f"{where} is not wrapped twice"
            )
            checked += 1
    assert checked >= 7


def _route_requests() -> list[tuple[str, str, str | None]]:
    """Every (method, path, body) the routes accept, with a concrete run id in place of the pattern."""
    out = []
    for path, handler in handlers.ROUTES:
        concrete = re.sub(r"\(\?P<run_id>[^)]*\)", "some-run-abc123", path).replace("\\", "")
        for name in METHODS:
            if name in handler.__dict__:
                out.append((name.upper(), concrete, "{}" if name in ("post", "put", "patch") else None))
    return out


@pytest.mark.parametrize(("method", "path", "body"), _route_requests())
async def test_every_route_refuses_requests_without_a_token(
    jp_fetch: Any, method: str, path: str, body: str | None
) -> None:
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await jp_fetch("kjupyter", *path.split("/"), method=method, body=body, headers={"Authorization": ""})
    assert info.value.code == 403


@pytest.mark.parametrize(("method", "path", "body"), [r for r in _route_requests() if r[0] != "GET"])
async def test_state_changing_routes_need_xsrf_with_cookie_auth(jp_fetch: Any, jp_serverapp: Any, method: str,
                                                                 path: str, body: str | None) -> None:  # fmt: skip
    """A browser request authenticated by cookie but without the XSRF token is refused."""
    login = await jp_fetch(
        "login", method="GET", headers={"Authorization": ""}, follow_redirects=False, raise_error=False
    )
    xsrf = re.search(r"_xsrf=([^;]+)", login.headers.get("Set-Cookie", ""))
    assert xsrf is not None
    token = jp_serverapp.identity_provider.token
    cookie_resp = await jp_fetch("login", method="POST", body=f"password={token}&_xsrf={xsrf.group(1)}",
                                 headers={"Authorization": "", "Cookie": f"_xsrf={xsrf.group(1)}"},
                                 follow_redirects=False, raise_error=False)  # fmt: skip
    cookies = "; ".join(c.split(";")[0] for c in cookie_resp.headers.get_list("Set-Cookie"))
    assert "username-" in cookies, cookie_resp.code
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await jp_fetch("kjupyter", *path.split("/"), method=method, body=body,
                       headers={"Authorization": "", "Cookie": cookies})  # fmt: skip
    assert info.value.code == 403


async def test_clusters_lists_the_profiles_and_the_current_one(jp_fetch: Any) -> None:
    data = await fetch_json(jp_fetch, "clusters", params={"probe": "1"})
    assert data["current"] == "local" and data["default"] == "local"
    (row,) = data["clusters"]
    assert row["name"] == "local" and row["backend"] == "local" and row["current"] is True
    assert row["reachable"] is True


async def test_switching_the_cluster_applies_to_this_servers_kernels_only(
    jp_fetch: Any, jp_serverapp: Any, isolated_home: Any
) -> None:
    """The choice goes to a file of this server's, named in the environment of the kernels it starts
    (and only theirs: not in the server's own environment, which terminals and other processes inherit)."""
    import os

    (isolated_home.parent / "xdgconfig" / "kjupyter").mkdir(parents=True)
    # The server loaded its configuration at the first request; this one has two profiles from the start.
    (isolated_home.parent / "xdgconfig" / "kjupyter" / "config.toml").write_text(
        '[clusters.other]\nbackend = "local"\n'
    )
    assert (await fetch_json(jp_fetch, "cluster"))["current"] == "local"
    assert (await fetch_json(jp_fetch, "clusters"))["chosen_by"] == "the built-in default"
    data = await fetch_json(jp_fetch, "cluster", method="PUT", body=json.dumps({"cluster": "other"}))
    assert data == {"current": "other"}
    choice = jp_serverapp.web_app.settings["kjupyter_service"].choice
    assert choice.path == Path(jp_serverapp.runtime_dir) / f"kjupyter-cluster-{jp_serverapp.port}"
    assert lab_choice.read_lab_choice(choice.path) == "other"
    assert not (isolated_home / "current-cluster").exists()  # no file every process reads
    env = jp_serverapp.session_manager.get_kernel_env("nb.ipynb", "nb.ipynb")
    assert env[lab_choice.ENV] == str(choice.path) and env["JPY_SESSION_NAME"].endswith("nb.ipynb")
    assert lab_choice.ENV not in os.environ
    assert (await fetch_json(jp_fetch, "cluster"))["current"] == "other"
    clusters = await fetch_json(jp_fetch, "clusters")
    assert [c["name"] for c in clusters["clusters"] if c["current"]] == ["other"]
    assert clusters["chosen_by"] == "chosen in this lab's status bar"


async def test_switching_to_an_unknown_cluster_says_which_exist(jp_fetch: Any, jp_serverapp: Any) -> None:
    body = await expect_error(jp_fetch, 400, "cluster", method="PUT", body=json.dumps({"cluster": "nope"}))
    assert "There is no cluster 'nope'" in body["message"] and "local" in body["message"]
    body = await expect_error(jp_fetch, 400, "cluster", method="PUT", body="not json")
    assert "JSON" in body["message"]
    assert jp_serverapp.web_app.settings["kjupyter_service"].choice.read() is None


async def test_a_maps_failed_items_are_listed_with_their_exception_lines(
    jp_fetch: Any, local_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their exception lines come from the error envelopes' headers: nothing is unpickled for them."""
    import cloudpickle

    def check(i: int) -> int:
        if i % 3 == 1:
            raise ValueError(f"bad item {i}\nsecond line")
        return i

    future = local_session.submit_map(check, range(8), {}, return_exceptions=True)
    results = future.result(timeout=60)
    assert [type(r).__name__ for r in results].count("ValueError") == 3
    row = await fetch_json(jp_fetch, "runs", future.run_id)
    assert (row["phase"], row["succeeded"], row["failed"], row["cancelled"]) == ("Failed", 5, 3, 0)
    assert row["failed_items"] == [1, 4, 7]
    assert row["error"] == "item 1: ValueError: bad item 1 (+2 more)"  # the sentence under the run in the sidebar

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the server extension unpickled something")

    for module in (pickle, cloudpickle):
        monkeypatch.setattr(module, "loads", refuse)
        monkeypatch.setattr(module, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    data = await fetch_json(jp_fetch, "runs", future.run_id, "failures")
    assert data == {"run_id": future.run_id, "cluster": "local", "failed": 3, "failures": [
        {"index": 1, "error": "ValueError: bad item 1"}, {"index": 4, "error": "ValueError: bad item 4"},
        {"index": 7, "error": "ValueError: bad item 7"}]}  # fmt: skip


async def test_a_failed_runs_error_line_is_read_once(jp_fetch: Any, jp_serverapp: Any, local_session: Any) -> None:
    def boom() -> None:
        raise KeyError("missing-key")

    future = local_session.submit_call(boom, (), {}, {})
    with pytest.raises(KeyError):
        future.result(timeout=60)
    service = jp_serverapp.web_app.settings["kjupyter_service"]
    for _ in range(3):
        (row,) = [r for r in (await fetch_json(jp_fetch, "runs"))["runs"] if r["run_id"] == future.run_id]
        assert (row["phase"], row["error"]) == ("Failed", "KeyError: 'missing-key'")
    assert (await fetch_json(jp_fetch, "runs", future.run_id))["error"] == "KeyError: 'missing-key'"
    assert service.errors.reads == 1  # a finished run does not change: its envelope header is read once


async def test_a_failed_item_whose_key_is_not_here_says_so(
    jp_fetch: Any, local_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(i: int) -> int:
        raise KeyError(i)

    future = local_session.submit_map(boom, range(2), {}, return_exceptions=True)
    future.result(timeout=60)
    from kjupyter import run_keys

    monkeypatch.setattr(run_keys, "load_key", lambda run_id: None)
    data = await fetch_json(jp_fetch, "runs", future.run_id, "failures")
    assert [f["error"] for f in data["failures"]] == [
        "(its exception cannot be read here: the run's key is not on this machine)"
    ] * 2


async def test_runs_lists_status_and_timings_with_etag(jp_fetch: Any, finished_run: str) -> None:
    response = await jp_fetch("kjupyter", "runs")
    data = json.loads(response.body)
    assert data["errors"] == []
    (run,) = [r for r in data["runs"] if r["run_id"] == finished_run]
    assert run["phase"] == "Succeeded" and run["active"] is False and run["cluster"] == "local"
    assert run["created"] > 0 and run["finished"] >= run["created"]
    assert "diagnosis" in run and run["total"] == 1
    etag = response.headers["Etag"]
    again = await jp_fetch("kjupyter", "runs", headers={"If-None-Match": etag}, raise_error=False)
    assert again.code == 304 and again.body == b""
    other = await jp_fetch("kjupyter", "runs", headers={"If-None-Match": '"stale"'})
    assert other.code == 200 and other.headers["Etag"] == etag


async def test_runs_filters_by_cluster_and_status(jp_fetch: Any, finished_run: str) -> None:
    assert len((await fetch_json(jp_fetch, "runs", params={"status": "succeeded"}))["runs"]) == 1
    assert (await fetch_json(jp_fetch, "runs", params={"status": "Running,Pending"}))["runs"] == []
    assert len((await fetch_json(jp_fetch, "runs", params={"cluster": "local"}))["runs"]) == 1
    body = await expect_error(jp_fetch, 404, "runs", params={"cluster": "nope"})
    assert "unknown cluster 'nope'" in body["message"]


async def test_one_run(jp_fetch: Any, finished_run: str) -> None:
    run = await fetch_json(jp_fetch, "runs", finished_run)
    assert run["run_id"] == finished_run and run["phase"] == "Succeeded"


async def test_unknown_run_is_a_404_with_a_sentence(jp_fetch: Any) -> None:
    for parts, method in ((("runs", "no-such-run"), "GET"), (("runs", "no-such-run", "logs"), "GET"),
                          (("runs", "no-such-run", "cancel"), "POST")):  # fmt: skip
        body = await expect_error(jp_fetch, 404, *parts, method=method, body="" if method == "POST" else None)
        assert body["message"].startswith("There is no run 'no-such-run'"), body
        assert body["message"].endswith(".")


async def test_logs_of_a_finished_run(jp_fetch: Any, finished_run: str) -> None:
    response = await jp_fetch("kjupyter", "runs", finished_run, "logs")
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.body.decode() == "hello from the run\nn is 21\n"
    followed = await jp_fetch("kjupyter", "runs", finished_run, "logs", params={"follow": "1", "index": "0"})
    assert followed.body == response.body
    body = await expect_error(jp_fetch, 400, "runs", finished_run, "logs", params={"index": "3"})
    assert "no task 3" in body["message"]


async def test_logs_follow_a_running_run_until_it_ends(jp_fetch: Any, local_session: Any, tmp_path: Any) -> None:
    gate = tmp_path / "gate"

    def slow(path: str) -> str:
        import os
        import time

        print("started", flush=True)
        while not os.path.exists(path):
            time.sleep(0.02)
        print("released", flush=True)
        return "ok"

    future = local_session.submit_call(slow, (str(gate),), {}, {})
    wait_for(lambda: any(r.run_id == future.run_id and r.phase.value == "Running"
                         for r in local_session.backend(local_session.config.profile()).list_runs()), what="running")  # fmt: skip
    chunks: list[bytes] = []

    def on_chunk(chunk: bytes) -> None:
        chunks.append(chunk)
        if b"started" in b"".join(chunks):
            gate.touch()  # release the run only once the first line has been streamed

    response = await jp_fetch("kjupyter", "runs", future.run_id, "logs", params={"follow": "1"},
                              streaming_callback=on_chunk, request_timeout=60)  # fmt: skip
    assert response.code == 200
    assert b"".join(chunks).decode() == "started\nreleased\n"
    assert future.result(timeout=30) == "ok"


async def test_cancel_a_running_run(jp_fetch: Any, local_session: Any) -> None:
    def forever() -> None:
        import time

        print("running", flush=True)
        time.sleep(600)

    future = local_session.submit_call(forever, (), {}, {})
    wait_for(lambda: any(r.run_id == future.run_id and r.phase.value == "Running"
                         for r in local_session.backend(local_session.config.profile()).list_runs()), what="running")  # fmt: skip
    data = await fetch_json(jp_fetch, "runs", future.run_id, "cancel", method="POST", body="")
    assert data["cancelled"] is True and data["cluster"] == "local"
    assert future.wait_ended(30)
    run = await fetch_json(jp_fetch, "runs", future.run_id)
    assert run["phase"] == "Cancelled" and run["active"] is False
    again = await fetch_json(jp_fetch, "runs", future.run_id, "cancel", method="POST", body="")
    assert again["cancelled"] is False


async def test_the_server_never_unpickles(jp_fetch: Any, finished_run: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import cloudpickle

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the server extension unpickled something")

    for module in (pickle, cloudpickle):
        monkeypatch.setattr(module, "loads", refuse)
        monkeypatch.setattr(module, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    await fetch_json(jp_fetch, "clusters", params={"probe": "1"})
    await fetch_json(jp_fetch, "runs")
    await fetch_json(jp_fetch, "runs", finished_run)
    await jp_fetch("kjupyter", "runs", finished_run, "logs")
    await fetch_json(jp_fetch, "runs", finished_run, "failures")
    await fetch_json(jp_fetch, "runs", finished_run, "cancel", method="POST", body="")


def test_server_modules_import_no_payload_code() -> None:
    import ast
    from pathlib import Path

    import kjupyter.server

    for path in Path(kjupyter.server.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        bad = {m for m in imported if m.split(".")[0] in ("pickle", "cloudpickle", "dill") or "payload" in m}
        assert not bad, f"{path.name} imports {bad}"


@pytest.fixture
def kube_profile(isolated_home: Any, make_fake_cluster: Any) -> Any:
    """The user's configuration names a Kubernetes profile on the fake cluster (read by the server and the session)."""
    cluster = make_fake_cluster(nodes=[{"name": "cpu-1", "cpu": "8", "memory": "32Gi"}])
    config = isolated_home.parent / "xdgconfig" / "kjupyter" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'default = "kube"\n[clusters.kube]\nbackend = "kubernetes"\nkubeconfig = "{cluster.kubeconfig_path}"\n'
        f'image = "python:3.11"\nstore = "file://{isolated_home.parent / "store"}"\n'
    )
    return cluster


async def test_runs_logs_and_cancel_on_the_fake_cluster(jp_fetch: Any, kube_profile: Any, local_session: Any) -> None:
    """A Kubernetes run: listed, its log read through the pods, cancelled (its Job deleted), still listed Cancelled."""
    cluster = kube_profile
    local_session.reload(None)  # the session reads the same configuration as the server: default "kube"

    def nap() -> None:
        import time

        print("sleeping", flush=True)
        time.sleep(600)

    future = local_session.submit_call(nap, (), {}, {})
    assert future.cluster == "kube"
    run_id = future.run_id
    clusters = await fetch_json(jp_fetch, "clusters", params={"probe": "1"})
    assert {c["name"]: c["reachable"] for c in clusters["clusters"]} == {"kube": True, "local": True}

    async def row() -> dict[str, Any]:
        data = await fetch_json(jp_fetch, "runs", params={"cluster": "kube"})
        return next((r for r in data["runs"] if r["run_id"] == run_id), {})

    for _ in range(200):  # the pod starts as a local process of the fake kubelet
        if (await row()).get("phase") == "Running" and "sleeping" in cluster.logs(_pod(cluster, run_id)):
            break
        await asyncio.sleep(0.1)
    assert (await row())["active"] is True
    log = await jp_fetch("kjupyter", "runs", run_id, "logs")
    assert "sleeping" in log.body.decode()

    data = await fetch_json(jp_fetch, "runs", run_id, "cancel", method="POST", body="")
    assert data["cancelled"] is True and data["cluster"] == "kube"
    assert data["run"]["phase"] == "Cancelled" and data["run"]["active"] is False
    deletes = cluster.requests("delete", "jobs", name=run_id)
    assert len(deletes) == 1 and deletes[0].status == 200
    # Foreground: the Job stays, marked for deletion, until its pods are gone; then it goes too
    await asyncio.get_running_loop().run_in_executor(None, lambda: cluster.wait_for(
        lambda: cluster.get("Job", run_id) is None and not _pod(cluster, run_id), 30))  # fmt: skip
    assert (await row())["phase"] == "Cancelled"
    assert (await fetch_json(jp_fetch, "runs", run_id))["phase"] == "Cancelled"
    assert [r["run_id"] for r in (await fetch_json(jp_fetch, "runs", params={"status": "cancelled"}))["runs"]] == [
        run_id
    ]
    again = await fetch_json(jp_fetch, "runs", run_id, "cancel", method="POST", body="")
    assert again["cancelled"] is False and len(cluster.requests("delete", "jobs", name=run_id)) == 1
    assert future.wait_ended(30)


def _pod(cluster: Any, run_id: str) -> str:
    return next(
        (p["metadata"]["name"] for p in cluster.objects("pods") if p["metadata"]["name"].startswith(run_id)), ""
    )
