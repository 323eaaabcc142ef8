"""fakekube: a fake Kubernetes API server with Job controller, scheduler and a
kubelet that runs containers as local processes. See README.md."""

from .cluster import FakeCluster, Options
from .nodes import NodeSpec
from .scheduler import Autoscaler, NodeGroup

__all__ = ["Autoscaler", "FakeCluster", "NodeGroup", "NodeSpec", "Options"]
