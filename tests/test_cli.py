"""The ``kjupyter`` command as a new user meets it: pipes, help, doctor, render, jobs."""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kjupyter import ConfigError, remote
from kjupyter.backends.base import Check, RunInfo
from kjupyter.backends.kubernetes import records
from kjupyter.backends.kubernetes.render import render
from kjupyter.backends.local.backend import LocalBackend
from kjupyter.cli import build_parser, main
from kjupyter.cli_format import format_elapsed, run_duration
from kjupyter.config import Profile, load_config
from kjupyter.run_events import Phase
from kjupyter.session import Session
from kjupyter.spec import RunSpec
from tests.sessions import installed_session

PROFILES = """
default = "local"
[clusters.local]
backend = "local"
[clusters.plain]
backend = "kubernetes"
kubeconfig = "/nonexistent"
namespace = "ml"
image = "reg/img:1"
[clusters.h100]
backend = "kubernetes"
kubeconfig = "/nonexistent"
image = "reg/img:1"
[clusters.h100.gpus.H100]
node_selector = { "gpu" = "h100" }
"""


@pytest.fixture
def profiles(isolated_home: Path, tmp_path: Path) -> Iterator[Session]:
    """local (default), a Kubernetes profile with no GPU types, one with H100s (neither is contacted)."""
    path = tmp_path / "profiles.toml"
    path.write_text(PROFILES)
    with installed_session(load_config(files=[path])) as sess:
        yield sess


def chatty(lines: int) -> int:
    for i in range(lines):
        print(f"line {i:06d} " + "x" * 60)
    return lines


def wait_for_file(path: str) -> str:
    print("waiting", flush=True)
    while not os.path.exists(path):
        time.sleep(0.01)
    return "released"


def boom() -> None:
    raise ValueError("no")


# --- 1. a reader that goes away --------------------------------------------------------------


@pytest.mark.parametrize("follow", [[], ["-f"]], ids=["logs", "logs-f"])
def test_a_reader_that_goes_away_ends_the_command_quietly(local_session: Session, follow: list[str]) -> None:
    """`kjupyter logs RUN | head -1`: the first line, then exit 141 (128 + SIGPIPE) and nothing on stderr."""
    future = remote(chatty).submit(30_000)  # ~2 MB of log: far more than a pipe holds
    assert future.result(60) == 30_000
    cli = subprocess.Popen([sys.executable, "-m", "kjupyter.cli", "logs", *follow, future.run_id],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    head = subprocess.Popen(["head", "-1"], stdin=cli.stdout, stdout=subprocess.PIPE)
    assert cli.stdout is not None and cli.stderr is not None
    cli.stdout.close()  # only head reads it now: when head exits, the pipe has no reader
    first, _ = head.communicate(timeout=60)
    err = cli.stderr.read().decode()
    assert cli.wait(60) == 141, err
    assert first.decode() == "line 000000 " + "x" * 60 + "\n"
    assert err == ""  # no Traceback, no "Exception ignored ... BrokenPipeError" at exit


# --- 5. every option says what it is for -----------------------------------------------------


def test_every_option_of_every_command_has_help() -> None:
    missing = []
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            if not (action.help or "").strip():
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


# --- 2. doctor ---------------------------------------------------------------------------------


def test_doctor_on_local_reports_its_checks_and_one_verdict(local_session: Session,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["[ok] python", "[ok] store"]
    assert lines[-1] == "local (local): ready: all 2 checks passed"
    assert "more checks" not in "\n".join(lines)
    monkeypatch.setattr(LocalBackend, "doctor", lambda self: [Check("python", True, "3"), Check("store", False, "no")])
    assert main(["doctor"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "local (local): NOT READY: 1 of 2 checks failed (store)"


# --- 3. render prints YAML ---------------------------------------------------------------------


def test_render_prints_yaml_documents_on_every_backend(profiles: Session, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render"]) == 0  # local: the worker processes it would start
    text = capsys.readouterr().out
    [local] = yaml.safe_load_all(text)
    assert local["kind"] == "LocalRun" and local["command"][-3:-1] == ["kjupyter.runner", "--serve"]
    assert not text.lstrip().startswith("{")
    assert main(["render", "--cluster", "plain", "--memory", "2Gi"]) == 0  # no store: the Job and its Secret
    text = capsys.readouterr().out
    assert [o["kind"] for o in yaml.safe_load_all(text)] == ["Job", "Secret"] and text.count("\n---\n") == 1
    assert "&id" not in text and "*id" not in text  # objects the manifests share are written out, not aliased
    job = next(yaml.safe_load_all(text))
    assert job["metadata"]["namespace"] == "ml" and job["spec"]["template"]["spec"]["containers"][0]["resources"][
        "limits"] == {"memory": "2Gi"}  # fmt: skip
    assert main(["render", "--cluster", "plain", "--memory", "2Gi", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == list(yaml.safe_load_all(text))
    assert main(["render", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == local  # one object alone, as before


# --- 4. a GPU type is honoured or refused ------------------------------------------------------


def test_a_gpu_type_is_honoured_or_refused_never_dropped(profiles: Session,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["render", "--cluster", "h100", "--gpu", "H100:2"]) == 0
    pod = next(yaml.safe_load_all(capsys.readouterr().out))["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["containers"][0]["resources"]["limits"] == {
        "nvidia.com/gpu": "2"}  # fmt: skip
    assert main(["render", "--gpu", "H100:1"]) == 0  # no cluster named: the one that has them, as a run picks it
    assert next(yaml.safe_load_all(capsys.readouterr().out))["metadata"]["annotations"]["kjupyter.io/cluster"] == "h100"
    assert main(["render", "--cluster", "plain", "--gpu", "H100:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kjupyter: error: cluster 'plain' has no H100 GPUs configured (its GPU types: none)"), err
    assert "clusters that have them: h100" in err and "gpu=1" in err and "[clusters.plain.gpus.H100]" in err
    assert main(["render", "--cluster", "h100", "--gpu", "A100:1"]) == 1
    assert "its GPU types: H100" in capsys.readouterr().err
    # @remote and %%kube go through the same Session: refused before anything is sent
    with pytest.raises(ConfigError, match="cluster 'plain' has no H100 GPUs configured"):
        remote(boom, cluster="plain", gpu="H100:1")()
    # and the manifests themselves never drop a type they cannot place
    with pytest.raises(ConfigError, match="has no A100 GPUs"):
        render(Profile("bare", backend="kubernetes"), RunSpec.build(gpu="A100:1"))
    # the local backend runs no GPUs at all: it says so (a warning), whatever the type
    assert main(["render", "--cluster", "local", "--gpu", "H100:1"]) == 0
    assert next(yaml.safe_load_all(capsys.readouterr().out))["ignored"] == ["gpu"]


# --- 7. jobs: cluster, duration, diagnosis -------------------------------------------------------


def test_elapsed_times_read_like_a_clock() -> None:
    assert [format_elapsed(s) for s in (None, 0, 12.7, 60, 184, 3599, 7500, 90000)] == [
        "-", "0s", "12s", "1m00s", "3m04s", "59m59s", "2h05m", "1d01h"]  # fmt: skip
    ended = RunInfo("r", "c", Phase.SUCCEEDED, created=100.0, finished=112.0)
    going = RunInfo("r", "c", Phase.RUNNING, created=100.0)
    lost = RunInfo("r", "c", Phase.FAILED, created=100.0)  # its client died before it recorded an end
    assert (run_duration(ended, 1000.0), run_duration(going, 284.0), run_duration(lost, 1000.0)) == (12.0, 184.0, None)


def test_jobs_shows_cluster_duration_and_diagnosis(local_session: Session, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert remote(chatty, gpu=1)(1) == 1  # succeeds, with a warning: no GPUs here
    failed = remote(boom).submit()
    with pytest.raises(ValueError):
        failed.result(60)
    marker = tmp_path / "release"
    going = remote(wait_for_file).submit(str(marker))
    seen = threading.Event()
    going.subscribe(lambda e: seen.set() if getattr(e, "text", "") == "waiting" else None)
    assert seen.wait(30)
    time.sleep(1.1)
    capsys.readouterr()  # (the runs' own lines)
    assert main(["jobs"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["RUN", "STATUS", "KIND", "FUNCTION", "CLUSTER", "CREATED", "DURATION", "GPU-H", "COST",
                              "DIAGNOSIS"]  # fmt: skip
    by_function = {row.split()[3]: row for row in rows}
    assert set(by_function) == {"chatty", "boom", "wait_for_file"}, rows
    cols = {name: row.split(None, 10) for name, row in by_function.items()}  # (CREATED is two words)
    assert {c[4] for c in cols.values()} == {"local"}
    assert cols["chatty"][1] == "Succeeded" and cols["chatty"][10].endswith(
        "The local backend has no GPUs: gpu= is ignored here.")  # fmt: skip
    assert cols["chatty"][8:10] == ["0.00", "-"]  # GPU-hours: none used; cost: the local profile has no prices
    assert cols["boom"][1] == "Failed" and cols["boom"][10].endswith("1 of 1 task(s) failed.")
    running = cols["wait_for_file"][7]
    assert cols["wait_for_file"][1] == "Running" and running != "-" and running.endswith("s") and running != "0s"
    assert main(["jobs", "--json"]) == 0
    listed = {r["function"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["boom"]["cluster"] == "local" and listed["boom"]["diagnosis"] == "1 of 1 task(s) failed."
    assert listed["wait_for_file"]["duration"] >= 1.0 and listed["wait_for_file"]["finished"] is None
    assert 0 <= listed["chatty"]["duration"] == listed["chatty"]["finished"] - listed["chatty"]["created"]
    marker.touch()
    assert going.result(30) == "released"


def job(name: str, **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "creationTimestamp": "2026-01-01T10:00:00Z", "labels": {"kjupyter.io/kind": "call"},
            "annotations": {"kjupyter.io/function": "train"}}  # fmt: skip
    meta.update(extra.pop("metadata", {}))
    return {"metadata": meta, "spec": {"completions": 1, "backoffLimit": 0}, **extra}


def test_kubernetes_jobs_say_why_from_the_job_alone() -> None:
    """The listing's Jobs are all it reads: why a run failed or was stopped, and when it ended."""
    info = functools.partial(records.job_entry, cluster="gpu")  # (no run.json: the Job alone)
    failed = info(job("r-1", status={"failed": 1, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "lastTransitionTime": "2026-01-01T10:03:04Z"}]}))  # fmt: skip
    assert (failed.phase, failed.cluster, failed.diagnosis) == (Phase.FAILED, "gpu", "The task failed and has no retries left.")
    assert failed.finished is not None and failed.finished - failed.created == 184
    done = info(job("r-2", status={"succeeded": 1, "completionTime": "2026-01-01T10:00:12Z",
                                   "conditions": [{"type": "Complete", "status": "True"}]}))  # fmt: skip
    assert (done.phase, done.diagnosis, (done.finished or 0) - done.created) == (Phase.SUCCEEDED, "", 12)
    stopped = info(job("r-3", status={"active": 1}, metadata={
        "deletionTimestamp": "2026-01-01T10:01:00Z",
        "annotations": {"kjupyter.io/stopped": "ImagePullFailed: The image reg/x:1 cannot be pulled."}}))  # fmt: skip
    assert (stopped.phase, stopped.diagnosis) == (Phase.FAILED, "The image reg/x:1 cannot be pulled.")
    cancelled = info(job("r-4", metadata={"deletionTimestamp": "2026-01-01T10:01:00Z",
                                          "annotations": {"kjupyter.io/cancelled-by": "ada"}}))  # fmt: skip
    assert (cancelled.phase, cancelled.diagnosis) == (Phase.CANCELLED, "The run was cancelled by ada.")
    running = info(job("r-5", status={"active": 1}))
    assert (running.phase, running.diagnosis, running.finished) == (Phase.RUNNING, "", None)


def odd_one_out(x: int) -> int:
    if x == 2:
        raise ValueError(f"item {x} is odd")
    return x


def test_jobs_counts_a_maps_items_as_its_widget_does(local_session: Session,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    returned = remote(odd_one_out).submit_map(range(5), return_exceptions=True)
    assert [type(v).__name__ for v in returned.result(60)] == ["int", "int", "ValueError", "int", "int"]
    stopped = remote(odd_one_out).submit_map(range(40), parallelism=1)
    with pytest.raises(ValueError):
        stopped.result(60)
    assert returned.wait_ended(30) and stopped.wait_ended(30)
    capsys.readouterr()
    assert main(["jobs", "--json"]) == 0
    listed = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    for future in (returned, stopped):
        row = listed[future.run_id]
        counts = future.counts  # what the widget and the terminal count
        assert {k: row[k] for k in ("succeeded", "failed", "cancelled")} == {
            k: counts[k] for k in ("succeeded", "failed", "cancelled")}, (row, counts)  # fmt: skip
    assert listed[returned.run_id]["failed"] == 1 and listed[returned.run_id]["cancelled"] == 0
    assert listed[stopped.run_id]["failed"] == 1 and listed[stopped.run_id]["cancelled"] > 0  # not counted as failed
    assert main(["jobs"]) == 0
    table = capsys.readouterr().out
    assert "map 4/5 (1 failed)" in table
    assert f"map 2/40 (1 failed, {stopped.counts['cancelled']} cancelled)" in table, table


def test_logs_of_a_failed_run_end_with_its_traceback_once(local_session: Session,
                                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    failed = remote(boom).submit()
    with pytest.raises(ValueError):
        failed.result(60)
    assert failed.wait_ended(30)
    capsys.readouterr()
    assert main(["logs", failed.run_id]) == 0
    out, err = capsys.readouterr()
    assert "[kjupyter] raised ValueError: no (its traceback went back with the result)" in out, out
    assert "Traceback" not in out  # the log has one line for it ...
    assert err.startswith(f"kjupyter: ValueError · run {failed.run_id} on local\n"), err  # ... and then the failure
    assert 'raise ValueError("no")' in err and err.count("ValueError: no") == 1 and "kjupyter/" not in err, err
