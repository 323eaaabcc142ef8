"""`python -m tests.fakekube` runs the fake by hand and a plain kubeconfig reaches it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from kubernetes import client, config  # type: ignore[import-untyped]

from tests.fakekube.__main__ import parse_node
from tests.fakekube.cluster import REPO_ROOT


def test_parse_node() -> None:
    spec = parse_node("gpu-1:cpu=8,memory=64Gi,gpu=2,label.accel=a100,taint.nvidia.com/gpu=present:NoSchedule")
    assert (spec.name, spec.cpu, spec.memory, spec.gpu) == ("gpu-1", "8", "64Gi", 2)
    assert spec.labels == {"accel": "a100"}
    assert spec.taints == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]


def test_run_by_hand(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakekube", "--kubeconfig", str(kubeconfig),
                             "--node", "cpu-1:cpu=2", "--node", "gpu-1:gpu=1", "--namespace", "ml"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": REPO_ROOT})
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(3)]
        assert banner[0].startswith("fakekube serving http://127.0.0.1:")
        assert banner[2].strip() == "nodes: cpu-1, gpu-1"
        api = config.new_client_from_config(config_file=str(kubeconfig))
        keys = api.configuration.api_key
        keys.setdefault("BearerToken", keys.get("authorization"))   # kubernetes 36.0.0 drops kubeconfig tokens
        core = client.CoreV1Api(api)
        nodes = {n.metadata.name: n for n in core.list_node().items}
        assert nodes["gpu-1"].status.allocatable["nvidia.com/gpu"] == "1"
        assert core.read_namespace("ml").status.phase == "Active"
        api.close()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
