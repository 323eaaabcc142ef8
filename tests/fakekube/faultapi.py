"""The fault-injection part of FakeCluster's Python API (a mixin): request faults, stream faults, RBAC,
tokens, pod-creation denials, flaky images, node loss and preemption. Every fault is lifted by
clear_faults(); none leaves a thread behind."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, cast

from . import disruption
from .admission import Admission, PodDenial, QuotaController, quota_object
from .faults import Denial, Faults, Rule, Tokens
from .images import FlakyImage
from .resources import RESOURCEQUOTAS
from .util import Obj

if TYPE_CHECKING:
    from .api import Api
    from .cluster import FakeCluster
    from .kubelet import Kubelet
    from .store import Store


class FaultApi:
    if TYPE_CHECKING:   # provided by FakeCluster
        faults: Faults
        tokens: Tokens
        store: Store
        api: Api
        admission: Admission
        quota_controller: QuotaController
        flaky_images: list[FlakyImage]
        kubelet: Kubelet

        def _write_kubeconfig(self) -> None: ...

    # -- request faults -------------------------------------------------------------------
    def fail_requests(self, count: int | None = 1, *, status: int = 500, method: str = "*",
                      path: str = "*", verb: str | None = None, resource: str | None = None,
                      retry_after: int | None = None, message: str = "fakekube injected fault") -> Rule:
        """Answer the next `count` matching requests (None: all) with `status` (500 InternalError by default)."""
        return self.faults.add(Rule("status", method, path, verb, resource, count, status=status,
                                    retry_after=retry_after, message=message))

    def throttle(self, count: int | None = 1, *, retry_after: int = 1, method: str = "*",
                 path: str = "*", verb: str | None = None, resource: str | None = None) -> Rule:
        """429 TooManyRequests with Retry-After on the next `count` matching requests."""
        return self.fail_requests(count, status=429, method=method, path=path, verb=verb, resource=resource,
                                  retry_after=retry_after)

    def add_latency(self, seconds: float, *, count: int | None = None, method: str = "*",
                    path: str = "*", verb: str | None = None, resource: str | None = None) -> Rule:
        return self.faults.add(Rule("latency", method, path, verb, resource, count, seconds=seconds))

    def hang_requests(self, count: int | None = 1, verb: str | None = "create",
                      resource: str | None = "jobs", apply: bool = True, *, method: str = "*", path: str = "*",
                      namespace: str | None = None) -> Rule:
        """The next `count` matching requests never get an answer: the connection stays open, silent, until the
        client gives up (closes it) or the server stops/restarts. apply=True: the request is processed first (a
        create does create: the answer is what gets lost); apply=False: it is never processed. Watches and logs
        are never processed. Hung requests are logged with status 0."""
        return self.faults.add(Rule("hang", method, path, verb, resource, count, namespace=namespace, apply=apply))

    # -- stream faults --------------------------------------------------------------------
    def drop_watches(self, after_events: int = 0, *, count: int | None = 1, resource: str | None = None,
                     path: str = "*", clean: bool = False) -> Rule:
        """Cut the next `count` watches after `after_events` events (abruptly, or a clean end when clean=True)."""
        return self.faults.add(Rule("drop_watch", "GET", path, "watch", resource, count, after_events=after_events,
                                    clean=clean))

    def silence_watches(self, count: int | None = 1, resource: str | None = None, after_events: int = 0,
                        *, path: str = "*") -> Rule:
        """The next `count` watches go silent after `after_events` events, without closing: no more events, no
        BOOKMARKs, timeoutSeconds ignored (as behind a dead proxy). Open until the client closes it or the server
        stops/restarts."""
        return self.faults.add(Rule("silence_watch", "GET", path, "watch", resource, count,
                                    after_events=after_events))

    def silence_logs(self, count: int | None = 1, pod: str | None = None, after_lines: int = 0, *,
                     namespace: str | None = None) -> Rule:
        """The next `count` followed logs (follow=true) of `pod` (glob; None: any) go silent after `after_lines`
        lines while the container keeps printing. Open until the client closes it or the server stops/restarts."""
        return self.faults.add(Rule("silence_log", "GET", "*", "get", "pods/log", count, after_events=after_lines,
                                    name=pod, namespace=namespace))

    def end_logs_early(self, count: int | None = 1, pod: str | None = None, after_lines: int = 0, *,
                       namespace: str | None = None) -> Rule:
        """The next `count` followed logs of `pod` end cleanly (a proper end of the chunked body) after
        `after_lines` lines although the container still runs, as after a log rotation
        (kubernetes/kubernetes#115701). Resume with sinceTime + timestamps=true."""
        return self.faults.add(Rule("end_log", "GET", "*", "get", "pods/log", count, after_events=after_lines,
                                    name=pod, namespace=namespace))

    def expire_next_watch(self, count: int | None = 1, *, resource: str | None = None,
                          path: str = "*") -> Rule:
        """The next `count` watches get an ERROR event with a 410 Expired Status."""
        return self.faults.add(Rule("expire_watch", "GET", path, "watch", resource, count))

    def compact(self) -> None:
        """Forget the watch history: every resourceVersion seen so far becomes too old (410)."""
        self.store.compact()

    # -- authn / authz --------------------------------------------------------------------
    def deny(self, verb: str, resource: str, namespace: str | None = None) -> Denial:
        """RBAC: refuse `verb` ("*" for all; "watch", "get", ...) on `resource` ("jobs", "pods/log", "*") with 403."""
        d = Denial(verb, resource, namespace)
        with self.faults.lock:
            self.faults.denials.append(d)
        return d

    def allow(self, verb: str, resource: str, namespace: str | None = None) -> None:
        with self.faults.lock:
            self.faults.denials = [d for d in self.faults.denials if d != Denial(verb, resource, namespace)]

    def rotate_token(self, new_token: str | None = None, grace: float = 0.0) -> str:
        """Replace the bearer token: the kubeconfig at kubeconfig_path is rewritten atomically with the new one;
        the old one keeps working for `grace` seconds, then gets 401 Unauthorized. Returns the new token."""
        token = new_token or secrets.token_hex(16)
        self.tokens.rotate(token, grace)
        self._write_kubeconfig()
        return token

    # -- pods that cannot be created ------------------------------------------------------
    def deny_pod_creation(self, reason: str = "quota", message: str | None = None, *,
                          count: int | None = None, namespace: str | None = None,
                          webhook: str = "policy.example.com", code: int = 403) -> PodDenial:
        """Refuse the next `count` pod creations (None: until cleared), by any client (the Job controller
        included, which then records FailedCreate events on the Job). reason="quota": 403 `pods "x" is forbidden:
        <message>` (default: an exceeded-quota message); reason="webhook": `admission webhook "<webhook>" denied
        the request: <message>` with status `code`."""
        denial = PodDenial(reason, message, count, namespace, webhook, code)
        self.admission.add_denial(denial)
        return denial

    def quota(self, namespace: str = "default", hard: dict[str, Any] | None = None, *,
              name: str = "fakekube-quota") -> Obj:
        """Create (or replace the `hard` of) a ResourceQuota enforced on pod creation as the ResourceQuota
        admission plugin does, e.g. quota("ml", {"requests.nvidia.com/gpu": "0", "pods": "10"}).
        Lifted by deleting it (API or clear_faults())."""
        obj = quota_object(name, hard or {})
        current = self.store.get(RESOURCEQUOTAS.key, namespace, name)
        if current is None:
            created = self.api.create(RESOURCEQUOTAS, obj, namespace)
        else:
            created = self.api.mutate(RESOURCEQUOTAS, namespace, name,
                                      lambda q: q.__setitem__("spec", obj["spec"])) or current
        self.admission.quotas_made.add((namespace, name))
        self.quota_controller.enqueue(namespace)
        return created

    def flaky_image(self, pattern: str, failures: int = 1, *, message: str | None = None) -> FlakyImage:
        """The first `failures` pull attempts of images matching `pattern` (glob or exact) fail with a registry 503
        (ErrImagePull, then ImagePullBackOff, then a retry), later ones succeed. Counted over all pods and nodes."""
        rule = FlakyImage(pattern, failures, message)
        with self.faults.lock:
            self.flaky_images.append(rule)
        return rule

    # -- disruptions ----------------------------------------------------------------------
    def remove_node(self, name: str, how: str = "gone") -> None:
        """Make a node disappear.

        how="gone": the Node object is deleted; its pods are marked Failed with condition
        DisruptionTarget (reason DeletionByPodGC, "PodGC: node no longer exists") and deleted, as the pod GC does.
        how="evicted": the node stays (MemoryPressure, tainted); its pods fail with reason "Evicted" and a
        DisruptionTarget condition (reason TerminationByKubelet), as a node-pressure eviction does.
        """
        disruption.remove_node(cast("FakeCluster", self), name, how)

    def preempt(self, pod_name: str, namespace: str = "default", *, by: str | None = None) -> Obj:
        """Preempt a running pod as kube-scheduler does: DisruptionTarget (PreemptionByScheduler), graceful
        delete with the pod's grace period, event `Preempted`. `by`: the preemptor pod's name, if any."""
        return disruption.preempt(cast("FakeCluster", self), pod_name, namespace, by)

    # -- lifting --------------------------------------------------------------------------
    def clear_faults(self) -> None:
        """Lift every fault: request/stream rules, RBAC denials, pod-creation denials, quotas made by quota(),
        flaky images, and revoked tokens (all accepted again; the kubeconfig keeps the newest). Connections
        already held silent stay so until closed."""
        self.faults.clear()
        with self.faults.lock:
            self.flaky_images.clear()
        self.tokens.forgive()
        for ns, name in self.admission.clear():
            try:
                self.api.delete(RESOURCEQUOTAS, ns, name)
            except Exception:
                pass
        self.kubelet.retry_images()
