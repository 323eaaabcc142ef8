"""The kubelet's in-memory view of a pod's containers, and the pod status it reports."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .logs import ContainerLog
from .util import Obj, set_condition


def normalize_image(image: str) -> str:
    """"busybox" -> "docker.io/library/busybox:latest" (what containerd reports)."""
    ref = image
    first = ref.split("/", 1)[0]
    if "/" not in ref:
        ref = f"docker.io/library/{ref}"
    elif "." not in first and ":" not in first and first != "localhost":
        ref = f"docker.io/{ref}"
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in ref:
        ref += ":latest"
    return ref


def image_id(image: str) -> str:
    digest = hashlib.sha256(normalize_image(image).encode()).hexdigest()
    return f"{normalize_image(image).rsplit(':', 1)[0]}@sha256:{digest}"


@dataclass
class ContainerRun:
    name: str
    spec: Obj
    init: bool
    state: str = "waiting"                 # waiting / running / terminated
    reason: str = "ContainerCreating"      # waiting reason
    message: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    container_id: str = ""
    started_at: str | None = None
    terminated: Obj | None = None
    last_state: Obj | None = None
    restart_count: int = 0
    log: ContainerLog = field(default_factory=ContainerLog)
    previous_log: ContainerLog | None = None
    image_ok: bool = False
    pull_state: str = ""                   # "", ErrImagePull, ImagePullBackOff
    pull_next: float = 0.0
    pull_failures: int = 0
    restart_at: float = 0.0
    exit_code: int | None = None           # set by the waiter thread
    finished_at: str | None = None
    oom: bool = False
    memory_limit: int | None = None
    termination_file: Path | None = None
    fallback_to_logs: bool = False
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def field_path(self) -> str:
        return f"spec.{'initContainers' if self.init else 'containers'}{{{self.name}}}"

    def status(self) -> Obj:
        state: Obj
        if self.state == "running":
            state = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": dict(self.terminated or {})}
        else:
            waiting: Obj = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        st: Obj = {"name": self.name, "state": state, "lastState": dict(self.last_state or {}),
                   "ready": self.state == "running", "restartCount": self.restart_count,
                   "image": self.spec.get("image", ""), "imageID": image_id(self.spec["image"]) if self.image_ok else "",
                   "started": self.state == "running"}
        if self.container_id:
            st["containerID"] = self.container_id
        return st


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    node: str
    root: Path
    restart_policy: str
    inits: list[ContainerRun]
    mains: list[ContainerRun]
    pod_ip: str = ""
    host_ip: str = ""
    start_time: str | None = None
    volumes: dict[str, Path] | None = None
    killing: bool = False
    kill_deadline: float = 0.0
    sigkill_sent: bool = False
    done: bool = False
    lost: bool = False

    @property
    def containers(self) -> list[ContainerRun]:
        return self.inits + self.mains

    def find(self, name: str) -> ContainerRun | None:
        return next((c for c in self.containers if c.name == name), None)

    def init_failed(self) -> bool:
        return any(c.state == "terminated" and c.exit_code != 0 for c in self.inits) and \
            self.restart_policy == "Never"

    def initialized(self) -> bool:
        return all(c.state == "terminated" and c.exit_code == 0 for c in self.inits)

    def phase(self) -> str:
        """The kubelet's getPhase()."""
        if self.init_failed():
            return "Failed"
        if not self.initialized():
            return "Pending"
        running = waiting = stopped = succeeded = 0
        for c in self.mains:
            if c.state == "running":
                running += 1
            elif c.state == "terminated":
                stopped += 1
                succeeded += c.exit_code == 0
            elif c.last_state:
                stopped += 1   # restarting after a failure
            else:
                waiting += 1
        if waiting:
            return "Pending"
        if running:
            return "Running"
        if self.restart_policy == "Always":
            return "Running"
        if self.restart_policy == "OnFailure":
            return "Succeeded" if stopped == succeeded else "Running"
        return "Succeeded" if stopped == succeeded else "Failed"

    def apply_status(self, pod: Obj, phase: str) -> None:
        status = pod.setdefault("status", {})
        status["phase"] = phase
        status["hostIP"] = self.host_ip
        status["hostIPs"] = [{"ip": self.host_ip}]
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if self.start_time:
            status["startTime"] = self.start_time
        conds = status.setdefault("conditions", [])
        terminal = phase in ("Succeeded", "Failed")
        set_condition(conds, "PodReadyToStartContainers", "False" if terminal else "True")
        pending_inits = [c.name for c in self.inits if not (c.state == "terminated" and c.exit_code == 0)]
        if pending_inits and not terminal:
            set_condition(conds, "Initialized", "False", "ContainersNotInitialized",
                          f"containers with incomplete status: [{' '.join(pending_inits)}]")
        else:
            set_condition(conds, "Initialized", "True")
        unready = [c.name for c in self.mains if c.state != "running"]
        for ctype in ("Ready", "ContainersReady"):
            if phase == "Succeeded":
                set_condition(conds, ctype, "False", "PodCompleted")
            elif phase == "Failed":
                set_condition(conds, ctype, "False", "PodFailed")
            elif unready:
                set_condition(conds, ctype, "False", "ContainersNotReady",
                              f"containers with unready status: [{' '.join(unready)}]")
            else:
                set_condition(conds, ctype, "True")
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        conds.sort(key=lambda c: order.index(c["type"]) if c["type"] in order else len(order))
        for c in conds:
            c.setdefault("lastProbeTime", None)
        if self.inits:
            status["initContainerStatuses"] = [c.status() for c in self.inits]
        status["containerStatuses"] = [c.status() for c in self.mains]
