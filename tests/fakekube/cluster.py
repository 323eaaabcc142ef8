"""FakeCluster: the fake API server, its controllers, and the Python API tests use."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import validate
from .admission import Admission, QuotaController
from .api import Api
from .events import EventRecorder
from .faultapi import FaultApi
from .faults import Faults, RequestLog, RequestRecord, Tokens
from .gc import GarbageCollector, TTLAfterFinished
from .images import FlakyImage
from .jobs import JobController
from .kubelet import Kubelet
from .nodes import NodeSpec, default_nodes, node_object
from .resources import NAMESPACES, NODES, SERVICEACCOUNTS, lookup
from .scheduler import Autoscaler, Scheduler
from .server import HTTPServer
from .store import Store
from .util import Obj, get_path

REPO_ROOT = str(Path(__file__).resolve().parents[2])


def _default_pythonpath() -> list[str]:
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [REPO_ROOT] + [p for p in extra if p != REPO_ROOT]


@dataclass
class Options:
    nodes: list[Any] = field(default_factory=default_nodes)
    namespaces: list[str] = field(default_factory=list)
    kubernetes_version: str = "1.33.0"
    watch_history: int = 1000            # N: changes kept for watch resume; older rv -> 410 Expired
    validate: bool = True                # kubernetes_validate strict schema validation of created/updated objects
    user: str = "system:serviceaccount:default:default"
    token: str | None = None             # random when None
    host: str = "127.0.0.1"
    port: int = 0                        # random free port when 0
    images_available: tuple[str, ...] = ("*",)
    images_missing: tuple[str, ...] = ("*does-not-exist*",)
    image_pull_delay: float = 0.3        # time in ErrImagePull before ImagePullBackOff
    image_pull_backoff: float = 0.5      # ImagePullBackOff before the next pull attempt (doubles, max 5 s)
    crash_backoff: float = 0.2           # CrashLoopBackOff delay (doubles, up to crash_backoff_max)
    crash_backoff_max: float = 5.0
    job_backoff: float = 0.0             # Job pod-failure backoff base (the real one is 10 s)
    job_api_backoff: float = 0.1         # Job controller retry after a failed pod creation (real: 1 s ...
    job_api_backoff_max: float = 2.0     # ... doubling up to 60 s)
    event_aggregation: bool = True       # client-go's EventCorrelator: >= 10 similar events -> "(combined from ...)"
    oom_interval: float = 0.05           # RSS-vs-memory-limit check period
    bookmark_interval: float = 1.0
    pythonpath: list[str] = field(default_factory=_default_pythonpath)
    extra_env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    autoscaler: Autoscaler | None = None
    python: str = sys.executable
    kubeconfig_path: str | None = None


class FakeCluster(FaultApi):
    def __init__(self, **options: Any) -> None:
        self.options = Options(**options)
        o = self.options
        self.tokens = Tokens(o.token or secrets.token_hex(16))
        self._own_workdir = o.workdir is None
        o.workdir = o.workdir or tempfile.mkdtemp(prefix="fakekube-")
        self.store = Store(history=o.watch_history)
        self.api = Api(self.store, o.kubernetes_version, o.validate)
        self.events = EventRecorder(self.api, aggregate=o.event_aggregation)
        self.faults = Faults()
        self.flaky_images: list[FlakyImage] = []
        self.admission = Admission(self)
        self.api.admit = self.admission.admit
        self.request_log = RequestLog()
        self.errors: list[str] = []
        self.pids: set[int] = set()
        self.stopped = False
        self._clients: list[Any] = []
        self._node_count = 0
        self._httpd: HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self.port = o.port
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease", *o.namespaces]:
            self.add_namespace(ns)
        for spec in o.nodes:
            self.add_node(spec)
        self.kubelet = Kubelet(self)
        self.scheduler = Scheduler(self, o.autoscaler)
        self.job_controller = JobController(self)
        self.gc = GarbageCollector(self)
        self.ttl = TTLAfterFinished(self)
        self.quota_controller = QuotaController(self)
        self.controllers = [self.scheduler, self.job_controller, self.gc, self.ttl, self.kubelet,
                            self.quota_controller]
        self.kubeconfig_path = o.kubeconfig_path or os.path.join(o.workdir, "kubeconfig")

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> FakeCluster:
        if self.options.validate:
            validate.warm_up(self.options.kubernetes_version)
        for c in self.controllers:
            c.start()
        self._serve()
        self._write_kubeconfig()
        return self

    def _serve(self) -> None:
        self._httpd = HTTPServer((self.options.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._serve_thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                              name="fakekube-http", daemon=True)
        self._serve_thread.start()

    def _close_http(self) -> None:
        httpd = self._httpd
        if httpd is None:
            return
        httpd.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.cut_connections()
        httpd.join_handlers()
        self._httpd = None

    def restart(self, down_for: float = 0.0) -> None:
        """Cut every connection (open watches and log streams included), keep the state, same port."""
        self._close_http()
        if down_for:
            time.sleep(down_for)
        self._serve()

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._close_http()
        self.store.close_watchers()
        for c in self.controllers:
            c.stop()
        deadline = time.monotonic() + 3.0
        while self.pids and time.monotonic() < deadline:
            time.sleep(0.01)
        for client in self._clients:
            try:
                client.close()
            except Exception:
                pass
        if self._own_workdir and self.options.workdir:
            shutil.rmtree(self.options.workdir, ignore_errors=True)

    def __enter__(self) -> FakeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def token(self) -> str:
        """The bearer token the server accepts (and the kubeconfig holds); see rotate_token()."""
        return self.tokens.current

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.port}"

    def _write_kubeconfig(self) -> None:
        text = f"""apiVersion: v1
kind: Config
clusters:
- name: fakekube
  cluster:
    server: {self.url}
contexts:
- name: fakekube
  context:
    cluster: fakekube
    namespace: default
    user: fakekube
current-context: fakekube
users:
- name: fakekube
  user:
    token: {self.token}
preferences: {{}}
"""
        # Atomic: a client (a kernel, kubectl) reading it meanwhile sees the old file or the whole new one.
        target = Path(self.kubeconfig_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` configured from the generated kubeconfig (closed at stop)."""
        from kubernetes import config  # type: ignore[import-untyped]

        client = config.new_client_from_config(config_file=self.kubeconfig_path)
        keys = client.configuration.api_key
        if "authorization" in keys and "BearerToken" not in keys:
            # kubernetes 36.0.0 drops kubeconfig tokens (client bug fixed in 36.0.1): keep the helper usable.
            keys["BearerToken"] = keys["authorization"]
        self._clients.append(client)
        return client

    def record_error(self, where: str, text: str) -> None:
        self.errors.append(f"[{where}] {text}")

    # -- state --------------------------------------------------------------------------
    def add_namespace(self, name: str) -> Obj:
        if self.store.get(NAMESPACES.key, "", name) is None:
            self.api.create(NAMESPACES, {"metadata": {"name": name}}, validate=False)
            self.api.create(SERVICEACCOUNTS, {"metadata": {"name": "default"}}, name, validate=False)
        return self.api.get(NAMESPACES, None, name)

    def add_node(self, spec: NodeSpec | dict[str, Any] | str | None = None, **kwargs: Any) -> Obj:
        """add_node("gpu-1", cpu="8", memory="64Gi", gpu=2, labels={...}, taints=[{...}])"""
        if spec is None or isinstance(spec, str):
            spec = NodeSpec(name=spec or f"node-{self._node_count + 1}", **kwargs)
        node = NodeSpec.coerce(spec)
        self._node_count += 1
        obj = node_object(node, self._node_count - 1)
        obj["status"]["nodeInfo"]["kubeletVersion"] = "v" + self.options.kubernetes_version.lstrip("v")
        return self.api.create(NODES, obj, validate=False)

    def set_images(self, available: Iterable[str] = ("*",), missing: Iterable[str] = ()) -> None:
        """Images that exist: those matching a pattern (exact name or glob) in `available` and none in `missing`."""
        self.options.images_available = tuple(available)
        self.options.images_missing = tuple(missing)
        self.kubelet.retry_images()

    def image_exists(self, image: str) -> bool:
        o = self.options
        return any(fnmatch.fnmatchcase(image, p) for p in o.images_available) and \
            not any(fnmatch.fnmatchcase(image, p) for p in o.images_missing)

    def objects(self, kind: str, namespace: str | None = None) -> list[Obj]:
        """Stored objects of a kind ("Job", "jobs", "pods", "Event", ...), optionally in one namespace."""
        return self.store.list(lookup(kind).key, namespace)[0]

    def get(self, kind: str, name: str, namespace: str = "default") -> Obj | None:
        res = lookup(kind)
        return self.store.get(res.key, namespace if res.namespaced else "", name)

    def create(self, obj: Obj, namespace: str | None = None) -> Obj:
        """Create an object directly (same defaults and validation as the API)."""
        return self.api.create(lookup(obj["kind"]), obj, namespace or get_path(obj, "metadata", "namespace"))

    def events_for(self, name: str, namespace: str = "default", reason: str | None = None) -> list[Obj]:
        return [e for e in self.objects("events", namespace)
                if e["involvedObject"]["name"] == name and (reason is None or e["reason"] == reason)]

    def logs(self, pod: str, namespace: str = "default", container: str | None = None) -> str:
        obj = self.get("pods", pod, namespace)
        run = self.kubelet.log_of(namespace, pod, obj["metadata"]["uid"]) if obj else None
        if run is None:
            return ""
        cr = run.find(container) if container else run.mains[0]
        return cr.log.text() if cr else ""

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, message: str = "") -> Any:
        """Re-evaluate predicate on every store change (and every 50 ms); return its first truthy value."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.store.rv
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"fakekube: condition not met within {timeout}s {message}".rstrip())
            with self.store.changed:
                if self.store.rv == seen:
                    self.store.changed.wait(min(0.05, remaining))

    # -- request log --------------------------------------------------------------------
    def requests(self, verb: str | None = None, resource: str | None = None, *, namespace: str | None = None,
                 method: str | None = None, name: str | None = None, status: int | None = None,
                 ) -> list[RequestRecord]:
        return self.request_log.find(verb=verb, resource=resource, namespace=namespace, method=method, name=name,
                                     status=status)

    def clear_requests(self) -> None:
        self.request_log.clear()
