"""examples/s3_fanout.py runs as it is (against its own throw-away moto S3 server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "s3_fanout.py"


@pytest.mark.slow
def test_s3_fanout_example_runs_as_a_script() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_", "RAW_URL"))}
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "41 files" in out
    assert "failed: s3://demo-bucket/raw/day-999.csv: ValueError" in out
    assert "40 files, total sales 3360, 1 failed" in out
    assert out.count("calls act as arn:aws:sts::") == 2
