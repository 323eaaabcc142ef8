"""REST routes under ``/kjupyter/`` for the JupyterLab extension.

Every handler is an :class:`APIHandler` (Jupyter's token/cookie authentication
and XSRF checks), and every method is both ``@tornado.web.authenticated`` (who
is asking) and ``@authorized`` (may they): the server's ``Authorizer`` is asked
for ``read`` or ``write`` on the resource ``"kjupyter"``, so a read-only
collaborator sees clusters, runs and logs but cannot cancel a run or switch the
cluster (403). ``tests/lab/test_routes.py`` fails if a method lacks either.
Backend calls block, so they run on threads; a followed log is streamed as
chunked ``text/plain``.

    GET  /kjupyter/clusters[?probe=1]          read   profiles, the current one, reachability
    GET  /kjupyter/cluster                      read   the current cluster
    PUT  /kjupyter/cluster   {"cluster": NAME}  write  switch it (this lab's kernels read it as their default)
    GET  /kjupyter/runs[?cluster=&status=]      read   the user's runs (ETag; If-None-Match -> 304)
    GET  /kjupyter/runs/ID[?cluster=]           read   one run
    GET  /kjupyter/runs/ID/logs[?cluster=&index=&follow=1]   read   its log, streamed while it runs
    GET  /kjupyter/runs/ID/failures[?cluster=]  read   a map's failed items: index and exception line
    POST /kjupyter/runs/ID/cancel[?cluster=]    write  cancel it
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import tornado.web
from jupyter_server.auth.decorator import authorized as _authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.iostream import StreamClosedError

from kjupyter.errors import KjupyterError
from kjupyter.server.service import BadRequest, NotFound, RunService

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
_RUN = r"(?P<run_id>[a-z0-9][-a-z0-9]{0,62})"
_END = object()
_MAX_BATCH = 500  # log lines per write while catching up
AUTH_RESOURCE = "kjupyter"  # what the server's Authorizer is asked about (actions: "read", "write")
_NO_READ = (
    "This Jupyter server's authorizer does not let you read kjupyter's clusters, runs or logs "
    "('read' on 'kjupyter'); ask the server's owner for access."
)
_NO_WRITE = (
    "This Jupyter server's authorizer does not let you cancel runs or switch the cluster "
    "('write' on 'kjupyter'); ask the server's owner for write access."
)


def authorized(action: str, *, message: str) -> Callable[[F], F]:
    """jupyter_server's ``@authorized(action)`` on the handler's ``auth_resource`` (typed, for mypy)."""
    decorator: Callable[[F], F] = _authorized(action, message=message)
    return decorator


class BaseHandler(APIHandler):  # type: ignore[misc]
    """Errors kjupyter raises become JSON with a sentence: 404 unknown, 400 bad request, 502 backend."""

    auth_resource = AUTH_RESOURCE

    @property
    def service(self) -> RunService:
        service: RunService = self.settings["kjupyter_service"]
        return service

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def arg(self, name: str) -> str | None:
        value = self.get_argument(name, None)
        return value or None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, KjupyterError):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": str(exc), "reason": type(exc).__name__}))
            return
        super().write_error(status_code, **kwargs)

    def send_json(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, KjupyterError):
            self.log.info("kjupyter: %s %s: %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, NotFound | BadRequest | KjupyterError) and not self._finished:
            self.log_exception(type(e), e, e.__traceback__)
            status = 404 if isinstance(e, NotFound) else 400 if isinstance(e, BadRequest) else 502
            if self._headers_written:
                return
            self.clear()
            self.set_status(status)
            self.write_error(status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


class ClustersHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized("read", message=_NO_READ)
    async def get(self) -> None:
        probe = self.get_argument("probe", "0") in ("1", "true", "yes")
        self.send_json(await self.blocking(self.service.clusters, probe))


class CurrentClusterHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized("read", message=_NO_READ)
    async def get(self) -> None:
        self.send_json({"current": await self.blocking(self.service.current)})

    @tornado.web.authenticated
    @authorized("write", message=_NO_WRITE)
    async def put(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise BadRequest('The request body must be JSON such as {"cluster": "local"}.') from None
        name = body.get("cluster") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise BadRequest('The request body must name a cluster, as in {"cluster": "local"}.')
        self.send_json({"current": await self.blocking(self.service.choose, name)})


class RunsHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized("read", message=_NO_READ)
    async def get(self) -> None:
        listing = await self.blocking(self.service.list_runs, self.arg("cluster"), self.arg("status"))
        body = json.dumps({"runs": listing.runs, "errors": listing.errors}, sort_keys=True).encode()
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Etag", '"' + hashlib.sha1(body, usedforsecurity=False).hexdigest() + '"')
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        self.finish(body)


class RunHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized("read", message=_NO_READ)
    async def get(self, run_id: str) -> None:
        cluster, info = await self.blocking(self.service.find, run_id, self.arg("cluster"))
        self.send_json(await self.blocking(self.service.row, cluster, info))


class FailuresHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized("read", message=_NO_READ)
    async def get(self, run_id: str) -> None:
        cluster, info = await self.blocking(self.service.find, run_id, self.arg("cluster"))
        failures = await self.blocking(self.service.failures, cluster, info)
        self.send_json({"run_id": run_id, "cluster": cluster, "failed": info.failed, "failures": failures})


class CancelHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized("write", message=_NO_WRITE)
    async def post(self, run_id: str) -> None:
        cluster, info = await self.blocking(self.service.find, run_id, self.arg("cluster"))
        cancelled = await self.blocking(self.service.cancel, cluster, info)
        _, after = await self.blocking(self.service.find, run_id, cluster)
        row = await self.blocking(self.service.row, cluster, after)
        self.send_json({"run_id": run_id, "cluster": cluster, "cancelled": cancelled, "run": row})


class LogsHandler(BaseHandler):
    """A run's log as ``text/plain``; with ``follow=1`` the response stays open until the run ends."""

    _stop: threading.Event | None = None

    @tornado.web.authenticated
    @authorized("read", message=_NO_READ)
    async def get(self, run_id: str) -> None:
        cluster, info = await self.blocking(self.service.find, run_id, self.arg("cluster"))
        index_arg = self.arg("index")
        try:
            index = int(index_arg) if index_arg is not None else None
        except ValueError:
            raise BadRequest(f"index must be a task number, not {index_arg!r}.") from None
        follow = self.get_argument("follow", "0") in ("1", "true", "yes") and not info.phase.finished
        self._stop = threading.Event()
        lines = await self.blocking(self.service.logs, cluster, info, index, follow, self._stop)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # proxies must not hold a followed log back
        queue: asyncio.Queue[object] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        threading.Thread(target=_pump, args=(lines, queue, loop, self._stop), daemon=True,
                         name=f"kjupyter-logs-{run_id}").start()  # fmt: skip
        try:
            while True:
                item = await queue.get()
                batch: list[str] = []
                while item is not _END and len(batch) < _MAX_BATCH:
                    batch.append(str(item))
                    if queue.empty():
                        break
                    item = queue.get_nowait()
                if batch:
                    self.write("".join(line + "\n" for line in batch))
                    await self.flush()
                if item is _END:
                    break
        except StreamClosedError:
            return
        finally:
            self._stop.set()
        self.finish()

    def on_connection_close(self) -> None:
        if self._stop is not None:
            self._stop.set()


def _pump(lines: Iterator[str], queue: asyncio.Queue[object], loop: asyncio.AbstractEventLoop,
          stop: threading.Event) -> None:  # fmt: skip
    """Move lines from a blocking iterator to the event loop, until it ends or the client goes away."""
    try:
        for line in lines:
            if stop.is_set():
                break
            loop.call_soon_threadsafe(queue.put_nowait, line)
    except Exception as exc:  # the stream says why it ended instead of stopping silently
        loop.call_soon_threadsafe(queue.put_nowait, f"[kjupyter: the log stream ended: {exc}]")
    finally:
        close = getattr(lines, "close", None)
        if close is not None:
            close()
        try:
            loop.call_soon_threadsafe(queue.put_nowait, _END)
        except RuntimeError:  # the event loop is gone (server shutting down)
            pass


ROUTES: list[tuple[str, type[BaseHandler]]] = [
    ("clusters", ClustersHandler),
    ("cluster", CurrentClusterHandler),
    ("runs", RunsHandler),
    (f"runs/{_RUN}", RunHandler),
    (f"runs/{_RUN}/logs", LogsHandler),
    (f"runs/{_RUN}/failures", FailuresHandler),
    (f"runs/{_RUN}/cancel", CancelHandler),
]


def setup_handlers(web_app: Any, service: RunService) -> None:
    base_url = web_app.settings["base_url"]
    web_app.settings["kjupyter_service"] = service
    web_app.add_handlers(".*$", [(url_path_join(base_url, "kjupyter", path), handler) for path, handler in ROUTES])
