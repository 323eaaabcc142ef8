"""The runner's worker loop (kjupyter/runner/worker.py): how a worker finds its items."""

from __future__ import annotations

from pathlib import Path

import pytest

from kjupyter.runner.channels import StoreChannel
from kjupyter.runner.worker import Worker


def worker(tmp_path: Path, **options: int) -> Worker:
    channel = StoreChannel(f"file://{tmp_path}/run", {})
    return Worker(channel, b"k" * 32, worker=options.get("worker", 0), workers=options.get("workers", 2),
                  count=options.get("count", 16), retries=0, dynamic=True, chunk=options.get("chunk", 1))  # fmt: skip


def test_a_lone_worker_claims_every_block(tmp_path: Path) -> None:
    assert sorted(worker(tmp_path)._claimed()) == list(range(16))


def test_a_claim_whose_create_was_retried_is_still_worked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store library retried a create whose first try had landed: the retry's 412 must not orphan the block."""
    w = worker(tmp_path)
    assert w.run_dir is not None
    real = w.run_dir.create_exclusive

    def landed_then_refused(name: str, data: bytes) -> bool:
        real(name, data)
        return False

    monkeypatch.setattr(w.run_dir, "create_exclusive", landed_then_refused)
    assert sorted(w._claimed()) == list(range(16))


def test_two_workers_share_the_blocks_without_overlap(tmp_path: Path) -> None:
    first, second = worker(tmp_path, worker=0), worker(tmp_path, worker=1)
    a, b = first._claimed(), second._claimed()
    got: dict[int, list[int]] = {0: [], 1: []}
    for _ in range(20):  # interleaved, as two pods would
        for w, it in ((0, a), (1, b)):
            got[w] += [i for i in [next(it, None)] if i is not None]
    assert sorted(got[0] + got[1]) == list(range(16)) and got[0] and got[1]


def test_items_per_pod_gives_an_index_its_consecutive_items(tmp_path: Path) -> None:
    assert list(worker(tmp_path, worker=2, workers=4, count=10, chunk=3)._indices()) == [6, 7, 8]
    assert list(worker(tmp_path, worker=3, workers=4, count=10, chunk=3)._indices()) == [9]
