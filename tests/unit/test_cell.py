"""Cell analysis (what a cell reads and assigns) and the cell task that runs it."""

from __future__ import annotations

import pickle

import cloudpickle
import pytest

from kjupyter.notebook.cell import analyze, shippable
from kjupyter.runner.cell_task import CellResult, CellTask, rebind_globals


@pytest.mark.parametrize(
    ("code", "reads", "assigns"),
    [
        ("y = x + 1", {"x"}, ("y",)),
        ("x = 1\nprint(x)", {"print"}, ("x",)),
        ("x = x + 1", {"x"}, ("x",)),
        ("z += 1", {"z"}, ("z",)),
        ("import numpy as np\nimport os.path\nfrom a import b as c", set(), ("np", "os", "c")),
        ("[i * k for i in xs]", {"xs", "k"}, ()),
        ("{k: v for k, v in pairs}\n(n for n in ns if n > lim)", {"pairs", "ns", "lim"}, ()),
        ("def f(a):\n    return a + g(b)\nr = f(1)", {"g", "b"}, ("f", "r")),
        ("def f():\n    return h()\ndef h():\n    return 1", set(), ("f", "h")),
        ("def f(d=default):\n    pass", {"default"}, ("f",)),
        ("class A(Base):\n    v = val\n    def m(self):\n        return glob", {"Base", "val", "glob"}, ("A",)),
        ("if c:\n    w = 1\nw", {"c", "w"}, ("w",)),
        ("if c:\n    w = 1\nelse:\n    w = 2\nw", {"c"}, ("w",)),
        ("for i in range(n):\n    t = i\nt", {"range", "n", "t"}, ("i", "t")),
        ("try:\n    a = 1\n    b = a\nexcept E as e:\n    print(e)", {"E", "print"}, ("a", "b", "e")),
        ("with open(p) as f:\n    data = f.read()\ndata", {"open", "p"}, ("f", "data")),
        ("if (m := pat.match(s)):\n    pass\nm", {"pat", "s", "m"}, ("m",)),  # a walrus may not run: m may be read
        ("items['k'] = v\nobj.attr += 1", {"items", "v", "obj"}, ("items", "obj")),
        ("def bump():\n    global count\n    count += 1\nbump()", {"count"}, ("bump", "count")),
        ("lambda q: q + offset", {"offset"}, ()),
        ("a, (b, *c) = triple", {"triple"}, ("a", "b", "c")),
    ],
)
def test_reads_and_assigns(code: str, reads: set[str], assigns: tuple[str, ...]) -> None:
    found = analyze(code)
    assert set(found.reads) == reads
    assert found.assigns == assigns


def test_del_and_display() -> None:
    found = analyze("x = 1\ndel old, x")
    assert found.deletes == {"old", "x"} and "old" in found.reads and not found.has_value
    assert analyze("1 + 1").has_value and not analyze("1 + 1;").has_value and not analyze("x = 1").has_value
    with pytest.raises(SyntaxError):
        analyze("x = = 1")


def test_shippable_leaves_out_ipython_entries() -> None:
    ns = {"x": 1, "_": 2, "_5": 3, "_i3": "code", "In": [], "Out": {}, "get_ipython": print, "_private": 4}
    assert shippable({"x", "_", "_5", "_i3", "In", "Out", "get_ipython", "_private", "missing"}, ns) == {
        "x": 1, "_private": 4,
    }  # fmt: skip


def test_cell_task_runs_and_returns_outputs_value_and_deletions() -> None:
    code = "import math\ny = x * 2\nroot = math.sqrt(y)\ndel gone\ndef f(v):\n    return v + y\nf(1)"
    task = CellTask(code, analyze(code).assigns, display=True, deletes=analyze(code).deletes)
    task = pickle.loads(cloudpickle.dumps(task))  # it travels as the runner's function
    result = task(x=8, gone=0)
    assert isinstance(result, CellResult)
    assert result.value == 17 and result.deleted == ("gone",)
    assert result.outputs["y"] == 16 and result.outputs["root"] == 4.0 and result.outputs["math"].__name__ == "math"
    namespace = {"y": 100}
    f = rebind_globals(cloudpickle.loads(cloudpickle.dumps(result.outputs["f"])), namespace)
    assert f(1) == 101  # a function that came back sees the notebook's variables


def test_cell_task_errors_keep_the_cell_source_in_the_traceback() -> None:
    import traceback

    task = CellTask("a = 1\nraise ValueError('boom')", ["a"], display=False)
    with pytest.raises(ValueError, match="boom") as info:
        task()
    text = "".join(traceback.format_exception(info.value))
    assert "<kube-cell>" in text and "raise ValueError('boom')" in text


def test_unpicklable_outputs_are_skipped_unless_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    code = "import threading\nlock = threading.Lock()\nn = 1"
    result = CellTask(code, ["lock", "n"], display=False)()
    assert set(result.outputs) == {"n"} and "not bringing back 'lock'" in capsys.readouterr().out
    with pytest.raises(TypeError, match="'lock' cannot be sent back"):
        CellTask(code, ["lock"], display=False, strict=True)()
    with pytest.raises(NameError, match="'nope'"):
        CellTask(code, ["nope"], display=False, strict=True)()
