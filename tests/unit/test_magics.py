"""%%kube and %kube in a real IPython shell (terminal IPython: the plain-text view), on the local backend."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from IPython.core.error import UsageError

from kjupyter.notebook import magics
from kjupyter.session import Session


def test_cell_round_trip(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ip.user_ns.update(k=4, scale=lambda v: v * 10)
    value = ip.run_cell_magic("kube", "--memory 1Gi", "print('remote line', flush=True)\nm = scale(k)\nm + 1")
    assert value == 41 and ip.user_ns["m"] == 40
    out, err = capsys.readouterr()
    assert "remote line" in out and "Succeeded" in err  # the console view: plain lines and the summary


def test_out_restricts_and_del_deletes(ip: Any) -> None:
    ip.user_ns.update(old=1)
    assert ip.run_cell_magic("kube", "--out a", "a = 1\nb = 2") is None
    assert ip.user_ns["a"] == 1 and "b" not in ip.user_ns
    ip.run_cell_magic("kube", "", "del old\nnew = 2")
    assert "old" not in ip.user_ns and ip.user_ns["new"] == 2


def test_remote_exception_renders_the_remote_traceback(ip: Any) -> None:
    from kjupyter.notebook.magics import COUNTED_FIRST

    ip.execution_count = 1 if COUNTED_FIRST else 0  # (a shared shell: as if it had run no cell, whatever ran before)
    with pytest.raises(ZeroDivisionError) as info:
        ip.run_cell_magic("kube", "", "x = 1\n1 / 0")
    lines = info.value._render_traceback_()  # type: ignore[attr-defined]
    assert lines[0].startswith("kjupyter: ZeroDivisionError in the %%kube cell · run cell-"), lines
    assert "ZeroDivisionError: division by zero" in lines
    assert not any("kjupyter" in line for line in lines[1:]) and "File" not in "".join(lines), lines
    # the cell's own frame and line (this shell has run no cell: the notebook tests check "Cell In[N]")
    [frame] = [line for line in lines if line.startswith("  %%kube cell")]
    assert frame.endswith(", line 3, in <module>"), lines  # line 3 under "%%kube" and "x = 1"


def test_kube_tb_prints_the_whole_remote_traceback_of_the_last_failure(ip: Any, capsys: pytest.CaptureFixture[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with pytest.raises(ZeroDivisionError) as info:
        ip.run_cell_magic("kube", "", "1 / 0")
    monkeypatch.setattr(sys, "last_value", info.value, raising=False)  # (IPython sets it when it shows an error)
    capsys.readouterr()
    ip.run_line_magic("kube", "tb")
    out = capsys.readouterr().out
    assert out.startswith("Traceback (most recent call last):") and '  File "<kube-cell' in out, out  # as the pod wrote it
    assert out.rstrip().endswith("ZeroDivisionError: division by zero")
    monkeypatch.setattr(sys, "last_value", KeyError("k"), raising=False)
    with pytest.raises(UsageError, match="the last failure was KeyError, which has no remote traceback; %tb shows"):
        ip.run_line_magic("kube", "tb")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--bogus", "unrecognized arguments: --bogus"),
        ("--mem 1Gi", "unrecognized arguments: --mem"),  # no abbreviations: a typo is an error
        ("--memory lots", "invalid memory='lots'"),
        ("--cluster nowhere", "unknown cluster 'nowhere'"),
        ("--env NOEQUALS", "--env takes K=V"),
        ("--timeout forever", "invalid timeout"),
    ],
)
def test_argument_errors_are_usage_errors(ip: Any, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ip.run_cell_magic("kube", line, "x = 1")


def test_unpicklable_variable_is_named(ip: Any) -> None:
    import threading

    ip.user_ns["lock"] = threading.Lock()
    with pytest.raises(UsageError, match="variable 'lock' cannot be pickled"):
        ip.run_cell_magic("kube", "", "with lock:\n    y = 1")


def test_syntax_error_is_one_line(ip: Any) -> None:
    with pytest.raises(UsageError, match=r"syntax error \(line 1\)"):
        ip.run_cell_magic("kube", "", "x = = 1")


def test_line_commands(ip: Any, local_session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("kube", "use local")
    assert local_session.cluster == "local"
    with pytest.raises(UsageError, match="unknown cluster 'nowhere'"):
        ip.run_line_magic("kube", "use nowhere")
    with pytest.raises(UsageError, match="unknown command 'frobnicate'"):
        ip.run_line_magic("kube", "frobnicate")
    ip.run_line_magic("kube", "clusters --no-probe")
    assert "local" in capsys.readouterr().out
    future = ip.run_cell_magic("kube", "--detach --name later", "answer = 42\nanswer")
    assert "%kube attach later-" in capsys.readouterr().out
    ip.run_line_magic("kube", "jobs")
    assert future.run_id in capsys.readouterr().out
    ip.user_ns.pop("answer", None)
    assert ip.run_line_magic("kube", f"attach {future.run_id}") == 42 and ip.user_ns["answer"] == 42
    ip.run_line_magic("kube", f"logs {future.run_id}")
    ip.run_line_magic("kube", f"cancel {future.run_id}")
    assert "already finished" in capsys.readouterr().out
    with pytest.raises(UsageError) as unknown:  # the CLI's own sentence, as the one line
        ip.run_line_magic("kube", "cancel no-such-run")
    assert str(unknown.value).startswith("no run 'no-such-run' in ") and "\n" not in str(unknown.value)
    assert capsys.readouterr().err == ""


def test_help_runs_nothing(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert ip.run_cell_magic("kube", "--help", "raise SystemExit") is None
    assert "--memory" in capsys.readouterr().out
    assert magics.parse_cell_options("--gpu A100:2 --env A=1 --secret s3", Session())[0] == {
        "gpu": "A100:2", "env": {"A": "1"}, "secrets": ["s3"],
    }  # fmt: skip


def test_help_alone_in_a_cell_prints_the_options_and_runs_nothing(
    ip: Any, local_session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    """`%%kube --help` with no body: IPython refuses an empty cell magic before calling it, unless given a body."""
    for cell in ("%%kube --help", "%%kube -h\n", "%%kube --memory 1Gi --help"):
        result = ip.run_cell(cell)
        assert result.success, (cell, result.error_before_exec, result.error_in_exec)
        out = capsys.readouterr().out
        assert "usage: %%kube" in out and "--memory MEMORY" in out and "--gpu GPU" in out, cell
    assert local_session.backend(local_session.default_profile()).list_runs() == []  # nothing ran
    # every other cell is left as it was: an empty %%kube is still IPython's own error
    for lines in (["%%kube --memory 1Gi\n"], ["%%kubernetes --help\n"], ["%%kube --help\n", "x = 1\n"], ["x = 1\n"]):
        assert magics.help_with_a_body(list(lines)) == lines
    assert not ip.run_cell("%%kube").success
    assert "the cell body is empty" in capsys.readouterr().err


def test_a_gpu_type_the_named_cluster_lacks_is_refused(ip: Any, local_session: Session, tmp_path: Any) -> None:
    from kjupyter.config import load_config

    path = tmp_path / "k.toml"
    path.write_text('default = "local"\n[clusters.local]\nbackend = "local"\n'
                    '[clusters.k]\nbackend = "kubernetes"\nkubeconfig = "/nonexistent"\n')  # fmt: skip
    local_session.reload(load_config(files=[path]))
    with pytest.raises(UsageError, match=r"^%%kube: cluster 'k' has no A100 GPUs configured \(its GPU types: none\)"):
        ip.run_cell_magic("kube", "--gpu A100:1 --cluster k", "x = 1")


def test_kube_jobs_on_another_cluster_leaves_the_sessions_cluster_alone(
    ip: Any, local_session: Session, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kjupyter.config import load_config

    path = tmp_path / "two.toml"
    path.write_text('default = "local"\n[clusters.local]\nbackend = "local"\n[clusters.other]\nbackend = "local"\n'
                    f'store = "file://{tmp_path / "other-store"}"\n')  # fmt: skip
    local_session.reload(load_config(files=[path]))
    ip.run_line_magic("kube", "use local")
    ip.run_line_magic("kube", "jobs --cluster other")
    assert "no runs on other" in capsys.readouterr().out
    assert local_session.cluster == "local"  # a listing changes nothing
    from kjupyter import cli

    assert cli.main(["jobs", "--cluster", "other"]) == 0
    assert local_session.cluster == "local"
