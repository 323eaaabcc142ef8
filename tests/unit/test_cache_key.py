"""The cache key of ``@remote(cache=True)``: the same for the same call in any kernel, different when
the code, a captured value, an argument or a result-changing option changes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from kjupyter import cache
from kjupyter.config import GpuType, Profile
from kjupyter.errors import SpecError
from kjupyter.spec import RunSpec

KUBE = Profile(name="kube", backend="kubernetes", image="python:3.11", store="file:///tmp/x",
               gpus={"A100": GpuType("A100"), "L4": GpuType("L4")})  # fmt: skip

# What a notebook defines: a function with a closure, globals (a dict, a set, a helper, a class of its own).
NOTEBOOK = """
SCALE = {"a": 2.0, "b": 3.0}
TAGS = {"red", "green", "blue", "cyan", "magenta"}

class Point:
    def __init__(self, x):
        self.x = x

def helper(v):
    return v + len(TAGS)

def make(offset):
    def step(p, *, k=1):
        return helper(p.x * SCALE["a"] + offset + k) if "red" in TAGS else 0
    return step

step = make(5)
"""


def notebook(source: str = NOTEBOOK, filename: str = "/tmp/ipykernel_1/123.py") -> dict[str, Any]:
    """Run ``source`` as a kernel runs a cell: in a module that cannot be imported (so code goes by value)."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), ns)
    return ns


def key_of(ns: dict[str, Any], arg: Any = None, profile: Profile = KUBE, **options: Any) -> str:
    spec = RunSpec.build(**options)
    return cache.call_key("call", ns["step"], (arg if arg is not None else ns["Point"](1.5),), {"k": 2}, spec, profile)


def test_two_pickles_of_the_same_call_in_one_kernel_have_one_key() -> None:
    ns = notebook()
    assert key_of(ns) == key_of(ns)
    assert key_of(ns) == key_of(notebook(filename="/tmp/ipykernel_2/456.py"))  # the cell's file name does not count


def test_two_kernels_with_different_hash_seeds_get_the_same_key(tmp_path: Path) -> None:
    script = tmp_path / "kernel.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from tests.unit.test_cache_key import notebook, key_of
        ns = notebook(filename=sys.argv[1])
        print(key_of(ns))
    """))  # fmt: skip
    keys = []
    for seed, name in (("1", "/tmp/ipykernel_100/aaa.py"), ("2", "/tmp/ipykernel_200/bbb.py")):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, str(script), name], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        keys.append(out.stdout.strip())
    assert len(keys[0]) == 64 and keys[0] == keys[1]
    assert keys[0] == key_of(notebook())  # and this process agrees


@pytest.mark.parametrize(
    "change",
    [
        ('return helper(p.x * SCALE["a"] + offset + k)', 'return helper(p.x * SCALE["a"] + offset - k)'),  # code
        ('SCALE = {"a": 2.0', 'SCALE = {"a": 2.5'),  # a global it reads
        ('TAGS = {"red",', 'TAGS = {"pink",'),  # a set it reads
        ("return v + len(TAGS)", "return v - len(TAGS)"),  # a helper it calls
        ("step = make(5)", "step = make(6)"),  # its closure
    ],
)
def test_a_change_of_code_or_of_what_it_captures_changes_the_key(change: tuple[str, str]) -> None:
    old, new = change
    assert old in NOTEBOOK
    assert key_of(notebook(NOTEBOOK.replace(old, new))) != key_of(notebook())


def test_an_unrelated_global_and_a_blank_line_above_do_not_change_the_key() -> None:
    base = key_of(notebook())
    assert key_of(notebook("UNUSED = 42\n\n\n" + NOTEBOOK)) == base


def test_arguments_change_the_key() -> None:
    ns = notebook()
    assert key_of(ns, ns["Point"](1.5)) != key_of(ns, ns["Point"](2.5))
    assert key_of(ns, {1, 2, 3}) == key_of(ns, {3, 2, 1})
    assert key_of(ns, [1, 2]) != key_of(ns, (1, 2))


def test_only_the_options_that_change_results_are_in_the_key() -> None:
    ns = notebook()
    base = key_of(ns)
    for options in ({"image": "python:3.12"}, {"env": {"SEED": "1"}}, {"packages": ["numpy==2.1"]},
                    {"secrets": ["aws-creds"]}, {"gpu": "A100:1"}, {"gpu": "L4:1"}, {"gpu": "A100:2"}):  # fmt: skip
        assert key_of(ns, **options) != base, options
    assert key_of(ns, gpu="A100:1") != key_of(ns, gpu="L4:1")
    for options in ({"cluster": "other"}, {"timeout": "1h"}, {"cpu": 4}, {"memory": "64Gi"}, {"retries": 3},
                    {"name": "again"}, {"pending_timeout": "5m"}, {"parallelism": 3}, {"cache": True}):  # fmt: skip
        assert key_of(ns, **options) == base, options
    other_cluster = Profile(name="gpu-west", backend="kubernetes", image="python:3.11", store="s3://b/p")
    assert key_of(ns, profile=other_cluster) == base  # same image, another cluster: the same result
    local = Profile(name="local", backend="local", image="python:3.11")
    assert key_of(ns, profile=local) != base  # the client's own Python, not the image


def test_a_function_of_an_importable_module_counts_by_its_code_too() -> None:
    from tests.unit import test_cache_key as module

    spec = RunSpec.build()
    before = cache.call_key("call", module.notebook, (), {}, spec, KUBE)
    original = module.notebook.__code__
    try:
        module.notebook.__code__ = key_of.__code__.replace(co_name="notebook")
        assert cache.call_key("call", module.notebook, (), {}, spec, KUBE) != before
    finally:
        module.notebook.__code__ = original
    assert cache.call_key("call", module.notebook, (), {}, spec, KUBE) == before


def test_cache_takes_true_or_false_only() -> None:
    assert RunSpec.build(cache=True).cache is True
    with pytest.raises(SpecError, match="invalid cache='yes': must be True or False"):
        RunSpec.build(cache="yes")


def test_what_cannot_be_pickled_is_named_as_without_cache() -> None:
    import threading

    from kjupyter.errors import SerializationError

    ns = notebook()
    with pytest.raises(SerializationError, match=r"argument 'p' \(position 0\) cannot be pickled"):
        cache.call_key("call", ns["step"], (threading.Lock(),), {}, RunSpec(), KUBE)
    with pytest.raises(SerializationError, match="item 1 of the map cannot be pickled: items\\[1\\] is a _thread.lock"):
        cache.call_key("map", ns["step"], [1, threading.Lock()], {}, RunSpec(), KUBE)
