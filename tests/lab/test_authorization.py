"""Authorization of the /kjupyter/ routes: the server's Authorizer decides, "read" and "write" apart.

The server here runs with :class:`PolicyAuthorizer`, which allows only the actions in
``allowed`` (by default "read": a read-only collaborator) and records every question it is
asked about kjupyter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tornado.httpclient
from jupyter_server.auth.authorizer import Authorizer
from traitlets import List, Unicode

from kjupyter.server import handlers

from .conftest import wait_for
from .test_routes import _route_requests, fetch_json


class PolicyAuthorizer(Authorizer):  # type: ignore[misc]
    """Allows the actions in ``allowed`` on every resource; records what kjupyter's routes ask."""

    allowed = List(Unicode(), default_value=["read"]).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.asked: list[tuple[str, str, str]] = []

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if resource == handlers.AUTH_RESOURCE:
            self.asked.append((handler.request.method, handler.request.path, action))
        return action in self.allowed


@pytest.fixture
def two_clusters(isolated_home: Path) -> None:
    """A second local profile, written before the server or the session reads the configuration."""
    config = isolated_home.parent / "xdgconfig" / "kjupyter" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[clusters.other]\nbackend = "local"\n')


@pytest.fixture
def jp_server_config(isolated_home: Path, two_clusters: None) -> dict[str, Any]:  # type: ignore[no-redef]
    return {
        "ServerApp": {"jpserver_extensions": {"kjupyter.server": True}, "authorizer_class": PolicyAuthorizer},
    }


def _running_forever(session: Any) -> Any:
    def forever() -> None:
        import time

        print("running", flush=True)
        time.sleep(600)

    future = session.submit_call(forever, (), {}, {})
    backend = session.backend(session.config.profile())
    wait_for(lambda: any(r.run_id == future.run_id and r.phase.value == "Running" for r in backend.list_runs()),
             what="running")  # fmt: skip
    log = run_folder(future.run_id) / "0.log"
    wait_for(lambda: log.exists() and "running" in log.read_text(), what="the first log line")
    return future, backend


def run_folder(run_id: str) -> Path:
    from kjupyter.backends.local.files import state_root

    return state_root() / run_id


async def expect_forbidden(jp_fetch: Any, *parts: str, **kwargs: Any) -> str:
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await jp_fetch("kjupyter", *parts, **kwargs)
    assert info.value.code == 403, info.value
    assert info.value.response is not None
    message: str = json.loads(info.value.response.body)["message"]
    return message


async def test_a_read_only_identity_reads_but_cannot_cancel_or_switch(
    jp_fetch: Any, jp_serverapp: Any, local_session: Any
) -> None:
    assert isinstance(jp_serverapp.authorizer, PolicyAuthorizer)
    assert jp_serverapp.authorizer.allowed == ["read"]
    future, backend = _running_forever(local_session)
    run_id = future.run_id

    # Every read route answers.
    clusters = await fetch_json(jp_fetch, "clusters")
    assert sorted(c["name"] for c in clusters["clusters"]) == ["local", "other"]
    assert (await fetch_json(jp_fetch, "cluster"))["current"] == "local"
    assert run_id in [r["run_id"] for r in (await fetch_json(jp_fetch, "runs"))["runs"]]
    assert (await fetch_json(jp_fetch, "runs", run_id))["phase"] == "Running"
    log = await jp_fetch("kjupyter", "runs", run_id, "logs")
    assert log.code == 200 and "running" in log.body.decode()

    # Cancelling is refused, with a sentence, and the run goes on.
    message = await expect_forbidden(jp_fetch, "runs", run_id, "cancel", method="POST", body="")
    assert "cancel runs" in message and "'write' on 'kjupyter'" in message
    assert not future.done()
    assert not (run_folder(run_id) / "cancelled").exists()
    (info,) = [r for r in backend.list_runs() if r.run_id == run_id]
    assert info.phase.value == "Running"
    assert (await fetch_json(jp_fetch, "runs", run_id))["phase"] == "Running"

    # Switching the current cluster is refused, and the choice is unchanged.
    message = await expect_forbidden(jp_fetch, "cluster", method="PUT", body=json.dumps({"cluster": "other"}))
    assert "switch the cluster" in message
    assert jp_serverapp.web_app.settings["kjupyter_service"].choice.read() is None
    assert (await fetch_json(jp_fetch, "cluster"))["current"] == "local"

    asked = {(method, action) for method, _, action in jp_serverapp.authorizer.asked}
    assert asked == {("GET", "read"), ("POST", "write"), ("PUT", "write")}
    assert future.cancel() and future.wait_ended(30)


async def test_an_identity_without_read_sees_nothing(jp_fetch: Any, jp_serverapp: Any) -> None:
    jp_serverapp.authorizer.allowed = []
    for method, path, body in _route_requests():
        message = await expect_forbidden(jp_fetch, *path.split("/"), method=method, body=body)
        assert ("'read' on 'kjupyter'" if method == "GET" else "'write' on 'kjupyter'") in message


async def test_every_route_asks_the_authorizer_read_for_get_and_write_for_the_rest(
    jp_fetch: Any, jp_serverapp: Any
) -> None:
    """The live half of test_routes' static check: each route's own request reaches the Authorizer."""
    authorizer = jp_serverapp.authorizer
    authorizer.allowed = ["read", "write"]
    for method, path, body in _route_requests():
        authorizer.asked.clear()
        await jp_fetch("kjupyter", *path.split("/"), method=method, body=body, raise_error=False)
        expected = "read" if method in ("GET", "HEAD") else "write"
        assert [(m, a) for m, _, a in authorizer.asked] == [(method, expected)], (method, path)
        assert authorizer.asked[0][1].endswith("/kjupyter/" + path)
