"""OOM killer emulation: a container whose process group's RSS exceeds its memory limit
is SIGKILLed and reported as OOMKilled (exit code 137), as the kernel's cgroup OOM killer would."""

from __future__ import annotations

import signal
import threading
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .kubelet import Kubelet


class OomMonitor:
    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fakekube-oom", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        import psutil

        while not self._stop.wait(self.kubelet.opts.oom_interval):
            with self.kubelet.lock:
                watched = [c for run in self.kubelet.runs.values() for c in run.containers
                           if c.state == "running" and c.memory_limit and c.proc is not None and c.exit_code is None]
            for c in watched:
                assert c.proc is not None and c.memory_limit is not None
                try:
                    root = psutil.Process(c.proc.pid)
                    rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                except psutil.Error:
                    continue
                except Exception:
                    self.kubelet.cluster.record_error("oom", traceback.format_exc())
                    continue
                if rss > c.memory_limit:
                    c.oom = True
                    self.kubelet.killpg(c.proc.pid, signal.SIGKILL)
