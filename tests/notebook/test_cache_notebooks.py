"""``@remote(cache=True)`` across two real kernels (nbclient, ipykernel): each kernel has its own process id
(so its own cell file names), hash seed and class ids; the second kernel's call is served from the cache."""

from __future__ import annotations

from pathlib import Path

from tests.notebook.helpers import notebook, result, run, text

CELLS = (
    "from kjupyter import remote\nTAGS = {'red', 'green', 'blue', 'cyan', 'magenta'}\n"
    "class Box:\n    def __init__(self, v):\n        self.v = v",
    "@remote(cache=True)\ndef label(box):\n    print('computing', flush=True)\n    return sorted(TAGS)[0] + str(box.v * 2)",
    "label(Box(21))",
)


def test_a_second_kernel_gets_the_first_kernels_result_from_the_cache(tmp_path: Path) -> None:
    first = run(notebook(*CELLS), tmp_path)
    assert result(first.cells[2]) == "'blue42'"
    assert "computing" in text(first.cells[2]) and "cached:" not in text(first.cells[2])
    second = run(notebook(*CELLS), tmp_path)
    assert result(second.cells[2]) == "'blue42'"
    shown = text(second.cells[2])
    assert "computing" not in shown and "kjupyter: cached: result of run label-" in shown, shown
    changed = run(notebook(*CELLS[:2], "label(Box(22))"), tmp_path)  # another argument: it runs
    assert result(changed.cells[2]) == "'blue44'" and "computing" in text(changed.cells[2])
