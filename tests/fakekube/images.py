"""Image pulls as the kubelet reports them: which images "exist" is a rule of the test
(FakeCluster.set_images); a missing one goes ErrImagePull -> ImagePullBackOff -> retry."""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .podstatus import ContainerRun, PodRun, normalize_image
from .util import Obj

if TYPE_CHECKING:
    from .kubelet import Kubelet


@dataclass
class FlakyImage:
    """The registry answers the first `failures` pulls of matching images with an error (503 by default)."""

    pattern: str
    failures: int = 1
    message: str | None = None
    hits: int = 0

    def matches(self, image: str) -> bool:
        return self.hits < self.failures and (image == self.pattern or fnmatch.fnmatchcase(image, self.pattern))


def registry_503(image: str) -> str:
    """containerd's words for a registry that answers 503 while resolving the manifest."""
    ref = normalize_image(image)
    name, _, tag = ref.rpartition(":") if "@" not in ref else (ref.partition("@")[0], "", ref.partition("@")[2])
    host, _, repo = name.partition("/")
    host = "registry-1.docker.io" if host == "docker.io" else host
    return (f'rpc error: code = Unknown desc = failed to pull and unpack image "{ref}": failed to resolve reference '
            f'"{ref}": unexpected status from HEAD request to https://{host}/v2/{repo}/manifests/{tag}: '
            "503 Service Unavailable")


class ImagePuller:
    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self.node_images: dict[str, set[str]] = {}

    def pull(self, pod: Obj, run: PodRun, c: ContainerRun) -> bool:
        """True when the image is there; otherwise the container waits (ErrImagePull / ImagePullBackOff)."""
        now = time.monotonic()
        image = c.spec["image"]
        key = (run.namespace, run.name)
        if c.pull_state and now < c.pull_next:
            self.kubelet.enqueue(key, c.pull_next - now)
            return False
        if c.pull_state == "ErrImagePull":
            c.pull_state = c.reason = "ImagePullBackOff"
            c.message = f'Back-off pulling image "{image}"'
            self.kubelet.event(pod, run, "BackOff", c.message, c)
            self.kubelet.event(pod, run, "Failed", "Error: ImagePullBackOff", c, "Warning")
            c.pull_next = now + min(self.kubelet.opts.image_pull_backoff * 2 ** c.pull_failures, 5.0)
            self.kubelet.enqueue(key, c.pull_next - now)
            return False
        present = image in self.node_images.setdefault(run.node, set())
        policy = c.spec.get("imagePullPolicy", "IfNotPresent")
        if policy == "Never" and self.kubelet.cluster.image_exists(image):
            present = True   # images that "exist" count as preloaded on every node
        if present and policy != "Always":
            self.kubelet.event(pod, run, "Pulled", f'Container image "{image}" already present on machine', c)
        elif policy == "Never":
            c.reason = "ErrImageNeverPull"
            c.message = f'Container image "{image}" is not present with pull policy of Never'
            self.kubelet.event(pod, run, "Failed", c.message, c, "Warning")
            self.kubelet.event(pod, run, "Failed", "Error: ErrImageNeverPull", c, "Warning")
            c.pull_state, c.pull_next = "ErrImageNeverPull", now + self.kubelet.opts.image_pull_backoff
            self.kubelet.enqueue(key, self.kubelet.opts.image_pull_backoff)
            return False
        else:
            self.kubelet.event(pod, run, "Pulling", f'Pulling image "{image}"', c)
            exists = self.kubelet.cluster.image_exists(image)
            flaky = self._flaky(image) if exists else None
            if not exists or flaky is not None:
                ref = normalize_image(image)
                c.pull_failures += 1
                c.pull_state = c.reason = "ErrImagePull"
                c.message = flaky or (f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": '
                                      f'failed to resolve reference "{ref}": {ref}: not found')
                self.kubelet.event(pod, run, "Failed", f'Failed to pull image "{image}": {c.message}', c, "Warning")
                self.kubelet.event(pod, run, "Failed", "Error: ErrImagePull", c, "Warning")
                c.pull_next = now + self.kubelet.opts.image_pull_delay
                self.kubelet.enqueue(key, self.kubelet.opts.image_pull_delay)
                return False
            self.node_images[run.node].add(image)
            self.kubelet.event(pod, run, "Pulled", f'Successfully pulled image "{image}" in 12ms (12ms including '
                               "waiting). Image size: 1048576 bytes.", c)
        c.image_ok, c.pull_state, c.message = True, "", None
        return True

    def _flaky(self, image: str) -> str | None:
        """The error of a flaky_image rule that still fails this pull, if any (counts the attempt)."""
        cluster = self.kubelet.cluster
        with cluster.faults.lock:
            for rule in cluster.flaky_images:
                if rule.matches(image):
                    rule.hits += 1
                    return rule.message or registry_503(image)
        return None
