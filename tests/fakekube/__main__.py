"""Run the fake cluster by hand:

    python -m tests.fakekube --kubeconfig /tmp/fake.kubeconfig \
        --node cpu-1:cpu=4,memory=16Gi --node gpu-1:cpu=8,memory=64Gi,gpu=2,label.gpu=a100,taint.nvidia.com/gpu=present:NoSchedule

then `KUBECONFIG=/tmp/fake.kubeconfig kubectl get nodes` (or point kjupyter at it). Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from typing import Any

from .cluster import FakeCluster
from .nodes import NodeSpec


def parse_node(text: str) -> NodeSpec:
    """NAME[:key=value,...] with keys cpu, memory, gpu, pods, label.K=V, taint.K=V:EFFECT."""
    name, _, rest = text.partition(":")
    spec = NodeSpec(name=name)
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key in ("cpu", "memory"):
            setattr(spec, key, value)
        elif key in ("gpu", "pods"):
            setattr(spec, key, int(value))
        elif key.startswith("label."):
            spec.labels[key[6:]] = value
        elif key.startswith("taint."):
            tvalue, _, effect = value.rpartition(":")
            spec.taints.append({"key": key[6:], "value": tvalue, "effect": effect or "NoSchedule"})
        else:
            spec.extra[key] = value
    return spec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fakekube", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: random)")
    p.add_argument("--node", action="append", default=[], metavar="SPEC", help="a node, see parse_node; repeatable")
    p.add_argument("--nodes", help="JSON list of node dicts (or @file.json), e.g. "
                   '\'[{"name": "gpu-1", "cpu": "8", "gpu": 2}]\'')
    p.add_argument("--namespace", action="append", default=[], help="extra namespace; repeatable")
    p.add_argument("--kubernetes-version", default="1.33.0")
    p.add_argument("--token", help="bearer token (default: random)")
    p.add_argument("--missing-image", action="append", default=None,
                   help='glob of images that do not exist (default "*does-not-exist*"); repeatable')
    p.add_argument("--gpu-autoscaler", action="store_true", help="enable an autoscaler group of 1-GPU nodes")
    args = p.parse_args(argv)
    nodes: list[Any] = [parse_node(n) for n in args.node]
    if args.nodes:
        raw = Path(args.nodes[1:]).read_text() if args.nodes.startswith("@") else args.nodes
        nodes += [NodeSpec.coerce(n) for n in json.loads(raw)]
    options: dict[str, Any] = {"kubeconfig_path": args.kubeconfig, "port": args.port,
                               "namespaces": args.namespace, "kubernetes_version": args.kubernetes_version}
    if nodes:
        options["nodes"] = nodes
    if args.token:
        options["token"] = args.token
    if args.missing_image is not None:
        options["images_missing"] = tuple(args.missing_image)
    if args.gpu_autoscaler:
        from .scheduler import Autoscaler, NodeGroup
        options["autoscaler"] = Autoscaler([NodeGroup("gpu-pool", NodeSpec("gpu", cpu="8", memory="32Gi", gpu=1))])
    cluster = FakeCluster(**options).start()
    print(f"fakekube serving {cluster.url} (Kubernetes v{args.kubernetes_version})")
    print(f"kubeconfig: {cluster.kubeconfig_path}")
    print("nodes: " + ", ".join(n["metadata"]["name"] for n in cluster.objects("nodes")), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
