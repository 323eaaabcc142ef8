"""Remote tracebacks name the user's files and show their lines, with every supported cloudpickle.

cloudpickle 3.1 renames the code it pickles by value to ``<dynamic-code>``; kjupyter keeps the
real file names and ships the source lines of that code with the payload. Each test makes sure the
worker cannot read the source from disk (a notebook cell has no file; a script or a helper module
is deleted before the call), so the lines in the traceback can only have travelled with the payload.
"""

from __future__ import annotations

import importlib
import io
import linecache
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from kjupyter import payload as pl
from kjupyter import pickler, remote
from kjupyter.session import Session

CELL = """\
def cell_fail(x):
    y = x + 1
    raise ValueError(f"the cell says {y}")
"""


def _remote_traceback(fn: Any, *args: Any) -> str:
    with pytest.raises(Exception) as info:  # (the remote exception, re-raised)
        remote(fn)(*args)
    text: str = info.value.remote_traceback  # type: ignore[attr-defined]
    assert "<dynamic-code>" not in text, text
    return text


def test_pickled_code_keeps_its_file_name_and_reports_it() -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(CELL, "/nonexistent/cell-7.py", "exec"), namespace)
    buf = io.BytesIO()
    spans = pickler.dump(namespace["cell_fail"], buf, pickler.PROTOCOL)
    fn = cloudpickle.loads(buf.getvalue())
    assert spans == {"/nonexistent/cell-7.py": [(1, 3)]} and fn.__code__.co_filename == "/nonexistent/cell-7.py"
    assert pickler.dump(divmod, io.BytesIO(), pickler.PROTOCOL) == {}  # by reference: no code travels


def test_a_notebook_cells_function(local_session: Session) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell(CELL, store_history=True)
    fn = shell.user_ns.pop("cell_fail")
    filename = fn.__code__.co_filename
    assert not os.path.exists(filename)  # IPython keeps the cell in linecache only
    text = _remote_traceback(fn, 1)
    assert f'File "{filename}", line 3, in cell_fail' in text
    assert 'raise ValueError(f"the cell says {y}")' in text


def test_an_ipykernel_cells_function(local_session: Session) -> None:
    # ipykernel names each cell /tmp/ipykernel_<pid>/<hash>.py and puts its lines in linecache, not on disk.
    filename = f"/tmp/ipykernel_{os.getpid()}/2793484163.py"
    linecache.cache[filename] = (len(CELL), None, CELL.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(CELL, filename, "exec"), namespace)
    try:
        text = _remote_traceback(namespace["cell_fail"], 4)
    finally:
        linecache.cache.pop(filename, None)
    assert f'File "{filename}", line 3, in cell_fail' in text and "the cell says {y}" in text


def test_a_scripts_function(local_session: Session, tmp_path: Path) -> None:
    script = tmp_path / "train_script.py"
    script.write_text(
        textwrap.dedent(
            """\
            import linecache, os
            from kjupyter import remote

            def fail_in_script(x):
                raise RuntimeError(f"the script says {x}")

            linecache.getlines(__file__)  # the client read it ...
            os.remove(__file__)           # ... and it is gone: the worker cannot read it
            try:
                remote(fail_in_script)(3)
            except RuntimeError as exc:
                print(exc.remote_traceback)
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert f'File "{script}", line 5, in fail_in_script' in done.stdout, done.stdout
    assert 'raise RuntimeError(f"the script says {x}")' in done.stdout and "<dynamic-code>" not in done.stdout


def test_a_local_helper_modules_function(local_session: Session, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    name = f"kj_tb_helpers_{os.getpid()}"
    path = tmp_path / f"{name}.py"
    path.write_text(
        textwrap.dedent(
            """\
            def clean(value):
                return _check(value)


            def _check(value):
                if value < 0:
                    raise ValueError(f"negative: {value}")
                return value

            NOT_SENT = "a line of the module that no shipped code spans"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module: types.ModuleType = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)
    linecache.getlines(str(path))
    path.unlink()  # shipped by value (not installed), and its file is gone
    assert b"no shipped code spans" not in pl.dump_call(module.clean, (1,), {}, key=bytes(32))  # only its lines go
    try:
        text = _remote_traceback(module.clean, -2)
    finally:
        linecache.cache.pop(str(path), None)
    assert f'File "{path}", line 2, in clean' in text and "return _check(value)" in text
    assert f'File "{path}", line 7, in _check' in text and 'raise ValueError(f"negative: {value}")' in text
