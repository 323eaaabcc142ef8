"""JupyterLab in a real browser against the fake Kubernetes cluster (tests/fakekube).

A real ``jupyter lab`` process and its kernel share one kjupyter configuration with a
``local`` profile (the default) and a ``fake`` Kubernetes profile. The user picks ``fake``
in the status bar; a notebook cell then launches a map there (one Indexed Job), the
sidebar shows it with its progress, its log follows the pods, and a second run is
cancelled from the sidebar: the fake API server records the Job's deletion. Screenshots in
light and dark theme go to ``tests/artifacts/``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .browser import KERNEL_READY, command, notebook, run_cell, running_lab, save_screenshot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SETUP = """\
import os, pathlib, time
from kjupyter import remote

GATES = pathlib.Path(os.environ["KJ_TEST_GATES"])

@remote(memory="256Mi")
def square(i):
    print(f"item {i} started", flush=True)
    while not (GATES / f"go-{i}").exists():
        time.sleep(0.05)
    print(f"item {i} done", flush=True)
    return i * i

@remote(memory="256Mi")
def sleeper():
    print("sleeping", flush=True)
    time.sleep(600)

squares = square.submit_map(range(3), parallelism=1)
print("launched map on", squares.cluster)
"""
SECOND = """\
nap = sleeper.submit()
print("launched sleeper on", nap.cluster)
"""
THIRD = """\
nap.wait_ended(60)
print("kernel sees", nap.phase.value, "and", squares.result(timeout=60))
"""


def test_fake_cluster_runs_in_the_sidebar(
    browser_page: Any, tmp_path: Path, isolated_home: Path, make_fake_cluster: Callable[..., Any]
) -> None:
    page = browser_page
    problems: list[str] = []
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.method} {r.url} {r.failure}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    cluster = make_fake_cluster(nodes=[{"name": "cpu-1", "cpu": "8", "memory": "32Gi"}])
    lab_log: list[Path] = []
    try:
        _scenario(page, tmp_path, isolated_home, cluster, lab_log)
    except BaseException:
        save_screenshot(page, "lab-kube-FAILED.png")
        print("\n".join(problems))
        if lab_log and lab_log[0].exists():
            print(lab_log[0].read_text()[-6000:])
        raise


def _scenario(page: Any, tmp_path: Path, isolated_home: Path, cluster: Any, lab_log: list[Path]) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    config_dir = tmp_path / "xdgconfig" / "kjupyter"
    config_dir.mkdir(parents=True)
    # A third cluster whose API server does not answer (the fake's kubeconfig, pointed at a closed port).
    down = tmp_path / "down-kubeconfig"
    down.write_text(re.sub(r"server: http(s?)://127\.0\.0\.1:\d+", f"server: http\\1://127.0.0.1:{_closed_port()}",
                           Path(cluster.kubeconfig_path).read_text()))  # fmt: skip
    (config_dir / "config.toml").write_text(
        'default = "local"\n\n[clusters.local]\nbackend = "local"\n\n'
        f'[clusters.fake]\nbackend = "kubernetes"\nkubeconfig = "{cluster.kubeconfig_path}"\nnamespace = "default"\n'
        f'image = "python:3.11"\npending_timeout = "60s"\nstore = "file://{tmp_path / "store"}"\n\n'
        f'[clusters.down]\nbackend = "kubernetes"\nkubeconfig = "{down}"\nnamespace = "team-b"\nimage = "python:3.11"\n'
    )
    # The lab server and its kernels see the same home, configuration and cluster.
    env = {"KJUPYTER_HOME": str(isolated_home), "XDG_CONFIG_HOME": str(tmp_path / "xdgconfig"),
           "KUBECONFIG": str(cluster.kubeconfig_path), "KJ_TEST_GATES": str(gates)}  # fmt: skip
    with running_lab(tmp_path / "lab", env) as lab:
        lab_log.append(lab.log)
        notebook(lab.root / "kube.ipynb", SETUP, SECOND, THIRD)
        lab.start_kernel_for("kube.ipynb")
        page.goto(lab.page_url("lab/tree/kube.ipynb"))
        page.locator(".jp-Notebook").wait_for()
        page.wait_for_function(KERNEL_READY, timeout=60000)

        # The palette has the extension's commands.
        command(page, "apputils:activate-command-palette")
        page.locator(".lm-CommandPalette-input").fill("Kubernetes")
        items = page.locator(".lm-CommandPalette-item")
        items.filter(has_text="Switch Kubernetes Cluster").wait_for()
        labels = set(items.all_inner_texts())
        for label in ("Show Kubernetes Runs", "Refresh Kubernetes Runs", "Switch Kubernetes Cluster"):
            assert any(label in text for text in labels), labels
        page.keyboard.press("Escape")

        # The status bar shows the configured default; the user switches to the fake cluster there. The
        # picker shows each cluster's namespace and whether it answers; the one that does not says why.
        status = page.locator(".kj-status")
        status.and_(page.locator("[data-cluster='local']")).wait_for()
        assert f"`default` in {config_dir / 'config.toml'}" in (status.get_attribute("title") or "")
        status.click()
        dialog = page.locator(".jp-Dialog")
        dialog.filter(has_text="Kubernetes cluster for this lab's kernels").wait_for()
        fake = dialog.locator(".kj-picker-row[data-cluster='fake']")
        fake.and_(page.locator("[data-reachable='reachable']")).wait_for()
        assert fake.locator(".kj-picker-label").inner_text() == "fake · namespace default · reachable"
        assert "namespace default" in (fake.get_attribute("title") or "")  # (what the API server said)
        gone = dialog.locator(".kj-picker-row[data-cluster='down']")
        gone.and_(page.locator("[data-reachable='unreachable']")).wait_for()
        assert gone.locator(".kj-picker-label").inner_text() == "down · namespace team-b · not reachable"
        why = gone.locator(".kj-picker-why").inner_text()
        assert why and why in (gone.get_attribute("title") or ""), why
        assert dialog.locator(".kj-picker-row[data-cluster='local'] input").is_checked()
        save_screenshot(page, "lab-kube-picker-light.png")
        fake.locator("input").check()
        dialog.locator("button.jp-mod-accept").click()
        status.and_(page.locator("[data-cluster='fake']")).wait_for()
        assert "chosen in this lab's status bar" in (status.get_attribute("title") or "")
        # The choice is this lab's: a file of its server's, named to its kernels, not one every process reads.
        (choice,) = Path(lab.env["JUPYTER_RUNTIME_DIR"]).glob("kjupyter-cluster-*")
        assert choice.read_text().strip() == "fake"
        assert not (isolated_home / "current-cluster").exists()

        # The kernel (started before the switch) sends the map to the chosen cluster: one Indexed Job.
        run_cell(page, 0, "launched map on fake")
        page.locator(".jp-SideBar [data-id='kjupyter-runs']").click()
        square = page.locator(".kj-run", has=page.locator(".kj-run-name", has_text="square"))
        square.and_(page.locator("[data-phase='Running']")).wait_for()
        map_id = square.get_attribute("data-run-id")
        assert map_id and square.locator(".kj-run-meta").inner_text() == f"{map_id} · fake"
        job = cluster.get("Job", map_id)
        assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 1  # one worker pod
        square.locator(".kj-progress-text", has_text="0/3 done · 1 running").wait_for()

        # Its log opens and follows the pods: lines printed after it opened arrive.
        square.locator(".kj-logs-button").click()
        log = page.locator(".kj-logs-text")
        log.filter(has_text="item 0 started").wait_for()
        page.locator(".kj-logs-state[data-state='following']").wait_for()
        (gates / "go-0").touch()
        log.filter(has_text="item 0 done").wait_for()
        log.filter(has_text="[1] item 1 started").wait_for()  # the worker's next item, tagged with its index
        square.locator(".kj-progress-text", has_text="1/3 done").wait_for()
        save_screenshot(page, "lab-kube-running-light.png")
        (gates / "go-1").touch()
        (gates / "go-2").touch()
        log.filter(has_text="item 2 done").wait_for()
        square.and_(page.locator("[data-phase='Succeeded']")).wait_for()
        page.locator(".kj-logs-state[data-state='ended']").wait_for()
        assert "3/3 done" in square.locator(".kj-progress-text").inner_text()
        text = log.inner_text()
        for i in range(3):
            assert text.count(f"item {i} started") == 1 and text.count(f"item {i} done") == 1, text

        # A second run is cancelled from the sidebar after a confirmation; the fake cluster deletes its Job.
        run_cell(page, 1, "launched sleeper on fake")
        sleeper = page.locator(".kj-run", has=page.locator(".kj-run-name", has_text="sleeper"))
        sleeper.and_(page.locator("[data-phase='Running']")).wait_for()
        nap_id = sleeper.get_attribute("data-run-id")
        assert nap_id and cluster.get("Job", nap_id)
        cluster.wait_for(lambda: "sleeping" in cluster.logs(_pod_of(cluster, nap_id)), timeout=30)
        assert cluster.requests("delete", "jobs", name=nap_id) == []
        sleeper.locator(".kj-cancel-button").click()
        confirm = page.locator(".jp-Dialog").filter(has_text="Cancel this run?")
        confirm.wait_for()
        save_screenshot(page, "lab-kube-cancel-dialog-light.png")
        confirm.locator("button.jp-mod-warn").click()
        sleeper.and_(page.locator("[data-phase='Cancelled']")).wait_for()
        assert sleeper.locator(".kj-cancel-button").count() == 0
        cluster.wait_for(lambda: not any(j["metadata"]["name"] == nap_id for j in cluster.objects("Job")), timeout=30)
        deletes = cluster.requests("delete", "jobs", name=nap_id)
        assert len(deletes) == 1 and deletes[0].status == 200, deletes
        cluster.wait_for(lambda: not any(p["metadata"]["name"].startswith(nap_id) for p in cluster.objects("pods")),
                         timeout=60)  # fmt: skip
        assert cluster.get("Job", map_id)  # the finished map was left alone
        # The kernel saw its run end (the Kubernetes backend reports a Job deleted by someone else
        # as Failed, "JobDeleted") and got the map's results back from the pods.
        run_cell(page, 2, re.compile(r"kernel sees (Cancelled|Failed) and \[0, 1, 4\]"))

        # Filters: by cluster (the runs are all on fake) and by status.
        cluster_filter = page.locator("select.kj-filter-cluster")
        cluster_filter.select_option("fake")
        assert page.locator(".kj-run").count() == 2
        page.locator("select.kj-filter-status").select_option("Cancelled")
        page.locator(".kj-run").first.and_(page.locator(f"[data-run-id='{nap_id}']")).wait_for()
        assert page.locator(".kj-run").count() == 1
        page.locator("select.kj-filter-status").select_option("Running")
        page.locator(".kj-empty", has_text="No run matches these filters.").wait_for()
        page.locator("select.kj-filter-status").select_option("")
        cluster_filter.select_option("")
        page.locator(".kj-run").nth(1).wait_for()
        save_screenshot(page, "lab-kube-runs-light.png")

        command(page, "apputils:change-theme", {"theme": "JupyterLab Dark"})
        page.wait_for_function("document.body.dataset.jpThemeLight === 'false'")
        page.locator("#jupyterlab-splash").wait_for(state="detached")
        # The panel follows the theme: its background is the dark layout colour, not a fixed one.
        colours = page.evaluate(
            """() => [getComputedStyle(document.querySelector('.kj-runs')).backgroundColor,
                      getComputedStyle(document.body).getPropertyValue('--jp-layout-color1').trim()]"""
        )
        assert _luminance(colours[0]) < 0.3, colours
        save_screenshot(page, "lab-kube-runs-dark.png")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # (closed again when this returns: nothing listens there)


def _pod_of(cluster: Any, run_id: str) -> str:
    pods = [p["metadata"]["name"] for p in cluster.objects("pods") if p["metadata"]["name"].startswith(run_id)]
    return pods[0] if pods else ""


def _luminance(css: str) -> float:
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
