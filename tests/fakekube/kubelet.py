"""A kubelet for all fake nodes: runs each container's command as a local
process (own process group), keeps its log, and reports container states,
pod phase, conditions and events like the real one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import podenv
from .controller import Controller
from .images import ImagePuller
from .nodes import node_ip
from .oom import OomMonitor
from .podstatus import ContainerRun, PodRun
from .resources import CONFIGMAPS, NODES, PODS, SECRETS
from .store import Change
from .util import Obj, get_path, now_iso, parse_quantity, random_suffix

if TYPE_CHECKING:
    from .cluster import FakeCluster


def _exit_code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


class Kubelet(Controller):
    name = "kubelet"

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(cluster)
        self.opts = cluster.options
        self.runs: dict[tuple[str, str], PodRun] = {}
        self.lock = threading.RLock()
        self._ip = 0
        self.images = ImagePuller(self)
        self.oom = OomMonitor(self)

    def start(self) -> None:
        super().start()
        self.oom.start()

    # -- feed ---------------------------------------------------------------------------
    def on_change(self, change: Change) -> None:
        meta = change.obj["metadata"]
        if change.resource == PODS.key:
            if get_path(change.obj, "spec", "nodeName") or (meta["namespace"], meta["name"]) in self.runs:
                self.enqueue((meta["namespace"], meta["name"]))
        elif change.resource in (SECRETS.key, CONFIGMAPS.key):
            for key, run in list(self.runs.items()):
                if run.namespace == meta["namespace"] and (run.volumes is None or any(
                        c.reason in ("CreateContainerConfigError", "ContainerCreating") and c.state == "waiting"
                        for c in run.containers)):
                    self.enqueue(key)

    def retry_images(self) -> None:
        for key, run in list(self.runs.items()):
            if any(c.pull_state for c in run.containers):
                self.enqueue(key)

    # -- reconcile ----------------------------------------------------------------------
    def reconcile(self, key: Any) -> None:
        ns, name = key
        with self.lock:
            pod = self.store.get(PODS.key, ns, name)
            run = self.runs.get(key)
            if run is not None and (pod is None or pod["metadata"]["uid"] != run.uid):
                self._discard(key, run)
                run = None
            if pod is None:
                return
            node = get_path(pod, "spec", "nodeName")
            if not node or self.store.get(NODES.key, "", node, copy=False) is None:
                return
            if run is None:
                if get_path(pod, "status", "phase") in ("Succeeded", "Failed"):
                    return
                run = self._new_run(pod)
                self.runs[key] = run
            if run.lost:
                return
            self._collect_exits(pod, run)
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod, run)
            elif not run.done:
                self._progress(pod, run)

    def _new_run(self, pod: Obj) -> PodRun:
        meta, spec = pod["metadata"], pod["spec"]
        root = Path(self.opts.workdir or ".") / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        root.mkdir(parents=True, exist_ok=True)

        def crun(c: Obj, init: bool) -> ContainerRun:
            cr = ContainerRun(c["name"], c, init)
            limit = get_path(c, "resources", "limits", "memory")
            cr.memory_limit = int(parse_quantity(limit)) if limit else None
            cr.termination_file = root / "containers" / c["name"] / "termination-log"
            cr.termination_file.parent.mkdir(parents=True, exist_ok=True)
            cr.fallback_to_logs = c.get("terminationMessagePolicy") == "FallbackToLogsOnError"
            return cr
        node = self.store.get(NODES.key, "", spec["nodeName"], copy=False) or {}
        run = PodRun(meta["uid"], meta["namespace"], meta["name"], spec["nodeName"], root,
                     spec.get("restartPolicy", "Always"), [crun(c, True) for c in spec.get("initContainers") or []],
                     [crun(c, False) for c in spec.get("containers") or []], host_ip=node_ip(node))
        for c in run.mains if run.inits else []:
            c.reason = "PodInitializing"
        return run

    def event(self, pod: Obj, run: PodRun, reason: str, message: str, c: ContainerRun | None = None,
               type: str = "Normal") -> None:
        self.cluster.events.record(pod, reason, message, component="kubelet", host=run.node, type=type,
                                   field_path=c.field_path if c else None)

    def _write(self, pod: Obj, run: PodRun, phase: str | None = None) -> None:
        phase = phase or run.phase()
        self.api.mutate(PODS, run.namespace, run.name, lambda p: run.apply_status(p, phase), uid=run.uid)

    def _progress(self, pod: Obj, run: PodRun) -> None:
        if run.start_time is None:
            run.start_time = now_iso()
            self._ip += 1
            run.pod_ip = f"127.1.{self._ip // 250}.{self._ip % 250 + 1}"
        if run.volumes is None:
            try:
                run.volumes = podenv.materialise_volumes(self._view(pod, run), run.root, self.store.get,
                                                         self._alloc(run))
            except podenv.MountError as e:
                self.event(pod, run, "FailedMount", str(e), type="Warning")
                self._write(pod, run)
                self.enqueue((run.namespace, run.name), 1.0)
                return
        for c in run.inits:
            if c.state == "terminated" and c.exit_code == 0:
                continue
            if c.state == "terminated" and run.restart_policy == "Never":
                for m in run.mains:
                    m.reason = "PodInitializing"
                break
            if c.state == "terminated" or c.restart_at:
                self._maybe_restart(pod, run, c)
            if c.state == "waiting":
                self._try_start(pod, run, c)
            break
        else:
            for c in run.mains:
                if c.state == "terminated" or c.restart_at:
                    self._maybe_restart(pod, run, c)
                if c.state == "waiting":
                    self._try_start(pod, run, c)
        phase = run.phase()
        self._write(pod, run, phase)
        if phase in ("Succeeded", "Failed"):
            run.done = True

    def _maybe_restart(self, pod: Obj, run: PodRun, c: ContainerRun) -> None:
        if run.restart_policy == "Never" or (run.restart_policy == "OnFailure" and c.exit_code == 0):
            return
        now = time.monotonic()
        if c.restart_at == 0.0:
            c.restart_at = now + min(self.opts.crash_backoff * 2 ** c.restart_count, self.opts.crash_backoff_max)
            c.reason = "CrashLoopBackOff"
            delay = int(10 * 2 ** c.restart_count)
            c.message = f"back-off {delay}s restarting failed container={c.name} pod={run.name}_{run.namespace}" \
                        f"({run.uid})"
            self.event(pod, run, "BackOff", f"Back-off restarting failed container {c.name} in pod "
                        f"{run.name}_{run.namespace}({run.uid})", c, "Warning")
            c.last_state = {"terminated": dict(c.terminated or {})}
            c.previous_log, c.log = c.log, type(c.log)()
            c.state, c.terminated, c.exit_code, c.proc, c.oom = "waiting", None, None, None, False
        if now >= c.restart_at:
            c.restart_at = 0.0
            c.restart_count += 1
        else:
            self.enqueue((run.namespace, run.name), c.restart_at - now)

    # -- starting containers ------------------------------------------------------------
    def _view(self, pod: Obj, run: PodRun) -> Obj:
        """The pod as the downward API sees it (IPs are known before containers start)."""
        view = dict(pod)
        view["status"] = dict(pod.get("status") or {}, podIP=run.pod_ip, hostIP=run.host_ip,
                              podIPs=[{"ip": run.pod_ip}], hostIPs=[{"ip": run.host_ip}])
        return view

    def _alloc(self, run: PodRun) -> dict[str, str]:
        node = self.store.get(NODES.key, "", run.node, copy=False)
        alloc: dict[str, str] = get_path(node, "status", "allocatable", default={})
        return alloc

    def base_env(self, pod: Obj, run: PodRun) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
               "HOME": os.environ.get("HOME", "/root"),
               "LANG": os.environ.get("LANG", "C.UTF-8"),
               "HOSTNAME": get_path(pod, "spec", "hostname") or run.name,
               "TMPDIR": str(run.root / "tmp"),
               "KUBERNETES_SERVICE_HOST": "127.0.0.1",
               "KUBERNETES_SERVICE_PORT": str(self.cluster.port)}
        if self.opts.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(self.opts.pythonpath)
        env.update(self.opts.extra_env)
        return env

    def _try_start(self, pod: Obj, run: PodRun, c: ContainerRun) -> None:
        if c.restart_at:
            return
        if not c.image_ok and not self.images.pull(pod, run, c):
            return
        try:
            env = podenv.container_env(self._view(pod, run), c.spec, self.store.get, self._alloc(run))
        except podenv.ConfigError as e:
            c.reason, c.message = "CreateContainerConfigError", str(e)
            self.event(pod, run, "Failed", f"Error: {e}", c, "Warning")
            self.enqueue((run.namespace, run.name), 1.0)
            return
        assert run.volumes is not None and c.termination_file is not None
        mounts = podenv.mounts_for(c.spec, run.volumes, c.termination_file)
        env = {k: podenv.translate(v, mounts) for k, v in env.items()}
        full_env = self.base_env(pod, run)
        full_env.update(env)
        argv = podenv.build_command(c.spec, env, mounts) or [self.opts.python, "-c", "pass"]
        cwd = podenv.translate(c.spec.get("workingDir") or "", mounts)
        if not cwd or not os.path.isdir(cwd):
            cwd = str(run.root / "containers" / c.name / "workdir")
            os.makedirs(cwd, exist_ok=True)
        (run.root / "tmp").mkdir(exist_ok=True)
        c.container_id = "containerd://" + "".join(random_suffix(8) for _ in range(8))[:64]
        self.event(pod, run, "Created", f"Created container: {c.name}", c)
        c.started_at = now_iso()
        try:
            proc = subprocess.Popen(argv, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            msg = (f"failed to create containerd task: failed to create shim task: OCI runtime create failed: runc "
                   f'create failed: unable to start container process: exec: "{argv[0]}": {e.strerror}: unknown')
            c.state, c.exit_code = "terminated", 128
            c.terminated = {"exitCode": 128, "reason": "StartError", "message": msg, "startedAt": "1970-01-01T00:00:00Z",
                            "finishedAt": now_iso(), "containerID": c.container_id}
            c.log.close()
            self.event(pod, run, "Failed", f"Error: {msg}", c, "Warning")
            return
        c.proc, c.state, c.reason, c.message = proc, "running", "", None
        self.cluster.pids.add(proc.pid)
        self.event(pod, run, "Started", f"Started container {c.name}", c)
        reader = threading.Thread(target=self._read, args=(c, proc), daemon=True, name=f"fakekube-log-{c.name}")
        waiter = threading.Thread(target=self._wait, args=((run.namespace, run.name), c, proc, reader), daemon=True,
                                  name=f"fakekube-wait-{c.name}")
        c.threads = [reader, waiter]
        reader.start()
        waiter.start()

    @staticmethod
    def _read(c: ContainerRun, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        log = c.log
        try:
            for line in iter(lambda: proc.stdout.readline(16384), b""):  # type: ignore[union-attr]
                log.append(line)
        except (OSError, ValueError):
            pass

    def _wait(self, key: tuple[str, str], c: ContainerRun, proc: subprocess.Popen[bytes],
              reader: threading.Thread) -> None:
        rc = proc.wait()
        self.killpg(proc.pid, signal.SIGKILL)   # PID 1 exited: the whole "container" goes
        reader.join(timeout=2)
        if proc.stdout:
            proc.stdout.close()
        self.cluster.pids.discard(proc.pid)
        c.finished_at = now_iso()
        c.exit_code = _exit_code(rc)
        self.enqueue(key)

    @staticmethod
    def killpg(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _collect_exits(self, pod: Obj, run: PodRun) -> None:
        for c in run.containers:
            if c.state != "running" or c.exit_code is None:
                continue
            code = c.exit_code
            reason = "OOMKilled" if c.oom else ("Completed" if code == 0 else "Error")
            term: Obj = {"exitCode": code, "reason": reason, "startedAt": c.started_at, "finishedAt": c.finished_at,
                         "containerID": c.container_id}
            message = ""
            if c.termination_file and c.termination_file.exists():
                message = c.termination_file.read_text(errors="replace")[:4096]
            if not message and c.fallback_to_logs and code != 0:
                message = b"".join(d for _, d in c.log.lines()[-80:])[-2048:].decode(errors="replace")
            if message:
                term["message"] = message
            c.state, c.terminated = "terminated", term
            c.log.close()

    # -- deletion -----------------------------------------------------------------------
    def _terminate(self, pod: Obj, run: PodRun) -> None:
        key = (run.namespace, run.name)
        grace = int(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
        now = time.monotonic()
        running = [c for c in run.containers if c.state == "running"]
        if not run.killing:
            run.killing = True
            run.kill_deadline = now + grace
            for c in running:
                self.event(pod, run, "Killing", f"Stopping container {c.name}", c)
                if c.proc is not None:
                    self.killpg(c.proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        elif running and now >= run.kill_deadline and not run.sigkill_sent:
            run.sigkill_sent = True
            for c in running:
                if c.proc is not None:
                    self.killpg(c.proc.pid, signal.SIGKILL)
        if running:
            if not run.sigkill_sent:
                self.enqueue(key, max(0.0, run.kill_deadline - now))
            return
        if not run.done:
            phase = "Succeeded" if all(c.state == "terminated" and c.exit_code == 0 for c in run.mains) else "Failed"
            self._write(pod, run, phase)
            run.done = True

        def final(p: Obj) -> None:
            p["metadata"]["deletionGracePeriodSeconds"] = 0
        self.api.mutate(PODS, run.namespace, run.name, final, uid=run.uid)

    def _discard(self, key: tuple[str, str], run: PodRun) -> None:
        for c in run.containers:
            if c.state == "running" and c.proc is not None:
                self.killpg(c.proc.pid, signal.SIGKILL)
            c.log.close()
        self.runs.pop(key, None)
        shutil.rmtree(run.root, ignore_errors=True)

    def lose_node(self, node: str) -> list[PodRun]:
        """The node vanished: its processes die with it and nothing more is reported."""
        lost = []
        with self.lock:
            for run in self.runs.values():
                if run.node == node and not run.lost:
                    run.lost = True
                    for c in run.containers:
                        if c.state == "running" and c.proc is not None:
                            self.killpg(c.proc.pid, signal.SIGKILL)
                    lost.append(run)
        return lost

    def log_of(self, namespace: str, name: str, uid: str) -> PodRun | None:
        with self.lock:
            run = self.runs.get((namespace, name))
            return run if run is not None and run.uid == uid else None

    def stop(self) -> None:
        self.oom.stop()
        super().stop()
        with self.lock:
            for key, run in list(self.runs.items()):
                self._discard(key, run)
        for pid in list(self.cluster.pids):
            self.killpg(pid, signal.SIGKILL)
