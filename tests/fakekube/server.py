"""HTTP front end: authentication, fault injection, RBAC, routing, JSON bodies."""

from __future__ import annotations

import io
import json
import select
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from . import discovery, errors, streams
from .errors import ApiError
from .faults import RequestInfo, RequestRecord
from .resources import BY_PATH, Resource
from .selection import parse_field_selector, parse_label_selector
from .util import Obj, dumps

if TYPE_CHECKING:
    from .cluster import FakeCluster


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.stopping = threading.Event()
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        self.handlers: set[threading.Thread] = set()   # threads serving a connection (joined at close)
        self.holding: set[threading.Thread] = set()    # of those, the ones holding a silent connection
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client closed a kept-alive connection (a watch or a log stream ended): not an error
        super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conns_lock:
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        self.stopping.set()
        with self.conns_lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def join_handlers(self, timeout: float = 3.0) -> None:
        """Wait for the threads of the cut connections (held, watching, following) to end."""
        deadline = time.monotonic() + timeout
        with self.conns_lock:
            threads = list(self.handlers)
        for t in threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: HTTPServer
    server_version = "fakekube"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        me = threading.current_thread()
        with self.server.conns_lock:
            self.server.handlers.add(me)
        try:
            super().handle()
        finally:
            with self.server.conns_lock:
                self.server.handlers.discard(me)

    def do_GET(self) -> None:
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # -- plumbing -----------------------------------------------------------------------
    @property
    def cluster(self) -> FakeCluster:
        return self.server.cluster

    def read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise errors.bad_request("the body of the request was in an unknown format - accepted media types "
                                     "include: application/json, application/yaml") from None

    def send_json(self, code: int, body: Obj, headers: dict[str, str] | None = None) -> None:
        data = dumps(body)
        self.record.status = code
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_error_status(self, e: ApiError) -> None:
        self.send_json(e.code, e.status(), e.headers)

    def start_chunked(self, content_type: str) -> None:
        self.record.status = 200
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Cut the connection mid-stream, as a dying apiserver or proxy would."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def hold(self) -> None:
        """Send nothing more but keep the connection open (a dead proxy, a lost answer) until the client closes
        it or the server stops or restarts; then close it."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            return
        stopping = self.server.stopping
        sock = self.connection
        me = threading.current_thread()
        with self.server.conns_lock:
            self.server.holding.add(me)
        try:
            while not stopping.is_set() and not self.cluster.stopped:
                try:
                    readable, _, _ = select.select([sock], [], [], 0.1)
                    if readable and not sock.recv(65536):   # EOF: the client gave up
                        return
                except (OSError, ValueError):
                    return
        finally:
            with self.server.conns_lock:
                self.server.holding.discard(me)

    # -- dispatch -----------------------------------------------------------------------
    def dispatch(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        info = discovery.resolve(self.command, url.path, query)
        self.info = info
        self.record = RequestRecord(self.command, url.path, query, info.verb, info.resource, info.subresource,
                                    info.namespace, info.name, info.group, time.time())
        self.cluster.request_log.add(self.record)
        body_read = False
        try:
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not self.cluster.tokens.accepts(token.strip()):  # any case, as the apiserver
                raise errors.unauthorized()
            faults = self.cluster.faults
            latency = faults.take("latency", info)
            if latency:
                time.sleep(latency.seconds)
            rule = faults.take("status", info)
            if rule:
                raise self._fault_error(rule.status, rule.message, rule.retry_after)
            body = self.read_body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else None
            body_read = True
            hang = faults.take("hang", info)
            if hang is not None:
                self._hang(info, body, hang.apply)
                return
            self.route(info, body)
        except ApiError as e:
            if not body_read and self.command in ("POST", "PUT", "PATCH", "DELETE"):
                self._drain()
            self.send_error_status(e)
        except (TimeoutError, BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        except Exception:
            self.cluster.record_error("server", traceback.format_exc())
            self.send_error_status(errors.internal_error(traceback.format_exc().splitlines()[-1]))

    def _hang(self, info: RequestInfo, body: Any, apply: bool) -> None:
        """The request is processed (apply=True) but its answer never comes; streaming requests are not
        processed at all (their answer would never end)."""
        streaming = info.verb == "watch" or info.subresource == "log"
        if apply and not streaming:
            real, self.wfile = self.wfile, io.BytesIO()   # the answer goes nowhere
            try:
                self.route(info, body)
            except ApiError:
                pass
            finally:
                self.wfile = real
                setattr(self, "_headers_buffer", [])   # noqa: B010 (BaseHTTPRequestHandler's own buffer)
        self.record.status = 0
        self.hold()

    def _drain(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
        except (OSError, ValueError):
            self.close_connection = True

    @staticmethod
    def _fault_error(code: int, message: str, retry_after: int | None) -> ApiError:
        if code == 429:
            return errors.too_many_requests(retry_after or 1)
        if code == 500:
            return errors.internal_error(message)
        e = errors.generic(code, message)
        if retry_after is not None:
            e.headers["Retry-After"] = str(retry_after)
        return e

    def route(self, info: RequestInfo, body: Any) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        cluster = self.cluster
        if not info.resource_request:
            doc: Obj | None = None
            parts = path.strip("/").split("/")
            if path == "/version":
                doc = discovery.version_doc(cluster.options.kubernetes_version)
            elif path == "/api":
                doc = discovery.api_versions(f"127.0.0.1:{cluster.port}")
            elif path == "/apis":
                doc = discovery.api_group_list()
            elif path == "/api/v1":
                doc = discovery.resource_list("", "v1")
            elif len(parts) == 2 and parts[0] == "apis":
                doc = discovery.api_group(parts[1])
            elif len(parts) == 3 and parts[0] == "apis":
                doc = discovery.resource_list(parts[1], parts[2])
            elif path in ("/healthz", "/readyz", "/livez"):
                data = b"ok"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(data)
                self.record.status = 200
                return
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
            self.send_json(200, doc)
            return
        parts = path.strip("/").split("/")
        version = parts[1] if parts[0] == "api" else parts[2]
        res = BY_PATH.get((info.group, version, info.resource))
        if res is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if not cluster.faults.allowed(info.verb, res.plural, info.subresource, res.group, info.namespace):
            raise errors.forbidden(res, info.verb, cluster.options.user, info.namespace or None,
                                   info.name or _selected_name(info) or None, info.subresource or None)
        if info.verb not in res.verbs:
            raise errors.method_not_allowed()
        if res.plural == "selfsubjectaccessreviews":
            self.send_json(201, self._access_review(body))
            return
        self._crud(res, info, body)

    def _crud(self, res: Resource, info: RequestInfo, body: Any) -> None:
        api, q = self.cluster.api, info.query
        ns = info.namespace if res.namespaced and info.namespace else None
        if res.namespaced and info.name and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        sub = info.subresource or None
        if sub and sub not in res.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        verb = info.verb
        if verb == "get" and sub == "log":
            streams.serve_log(self, ns or "default", info.name, q)
        elif verb == "get":
            self.send_json(200, api.get(res, ns, info.name))
        elif verb in ("list", "watch", "deletecollection"):
            labels = parse_label_selector(q.get("labelSelector"))
            fields = parse_field_selector(q.get("fieldSelector"), res)
            if verb == "watch":
                streams.serve_watch(self, res, ns, labels, fields, q)
            elif verb == "list":
                limit = int(q.get("limit") or 0)
                self.send_json(200, api.list(res, ns, labels, fields, limit, q.get("continue") or None))
            else:
                grace, prop = self._delete_options(q, body)
                self.send_json(200, api.delete_collection(res, ns, labels, fields, grace, prop))
        elif verb == "create":
            if sub:
                raise errors.method_not_allowed()
            dry = q.get("dryRun") == "All"
            self.send_json(201, api.create(res, body, ns, dry_run=dry))
        elif verb == "update":
            self.send_json(200, api.update(res, ns, info.name, body, sub))
        elif verb == "patch":
            ctype = self.headers.get("Content-Type") or "application/json"
            self.send_json(200, api.patch(res, ns, info.name, ctype, body, sub))
        elif verb == "delete":
            grace, prop = self._delete_options(q, body)
            pre = (body or {}).get("preconditions") or {}
            result, warnings = api.delete(res, ns, info.name, grace=grace, propagation=prop,
                                          uid=pre.get("uid"), rv=pre.get("resourceVersion"))
            self.send_json(200, result, {"Warning": warnings[0]} if warnings else None)
        else:
            raise errors.method_not_allowed()

    @staticmethod
    def _delete_options(q: dict[str, str], body: Any) -> tuple[int | None, str | None]:
        opts = body if isinstance(body, dict) else {}
        grace = opts.get("gracePeriodSeconds", q.get("gracePeriodSeconds"))
        prop = opts.get("propagationPolicy") or q.get("propagationPolicy") or None
        orphan = opts.get("orphanDependents", q.get("orphanDependents"))
        if prop is None and orphan is not None:
            prop = "Orphan" if str(orphan).lower() == "true" else "Background"
        return (int(grace) if grace not in (None, "") else None), prop

    def _access_review(self, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was in an unknown format")
        review: Obj = json.loads(json.dumps(body))
        review.setdefault("apiVersion", "authorization.k8s.io/v1")
        review.setdefault("kind", "SelfSubjectAccessReview")
        review.setdefault("metadata", {})["creationTimestamp"] = None
        attrs = (review.get("spec") or {}).get("resourceAttributes")
        if attrs is None:
            allowed = True
        else:
            resource = attrs.get("resource") or ""
            allowed = self.cluster.faults.allowed(attrs.get("verb") or "", resource, attrs.get("subresource") or "",
                                                  attrs.get("group") or "", attrs.get("namespace") or "")
        status: Obj = {"allowed": allowed}
        if allowed:
            status["reason"] = (f'RBAC: allowed by ClusterRoleBinding "fakekube-admin" of ClusterRole '
                                f'"cluster-admin" to User "{self.cluster.options.user}"')
        review["status"] = status
        return review


def _selected_name(info: RequestInfo) -> str:
    """A list or watch with fieldSelector metadata.name=x is authorized as a request on "x" (as the apiserver's
    RequestInfoFactory does), so its 403 names the object."""
    if info.verb not in ("list", "watch"):
        return ""
    for term in (info.query.get("fieldSelector") or "").split(","):
        key, sep, value = term.partition("=")
        if key.strip() == "metadata.name" and sep and not value.startswith("="):
            return value.strip()
        if key.strip() == "metadata.name" and value.startswith("="):
            return value[1:].strip()
    return ""
