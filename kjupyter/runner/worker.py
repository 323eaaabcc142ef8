"""A worker pod of a map: it takes items until none are left (``--workers P --items N``).

One loop for both backends (:meth:`Worker.run_item`: an item's attempts, its frames, its one
signed outcome); what differs is where the next item comes from:

- a worker pod (``--workers P --items N``) claims items through the store, or takes a
  static share of them (below);
- a local worker (``--serve LOG_DIR``, :class:`PipeWorker`) is handed items one at a time by
  its client over stdin, and each item's output goes to ``LOG_DIR/<i>.log``.

A map of N items runs on P worker pods (one Indexed Job, completion index = worker index).
Each worker runs the map's function on item after item and writes one signed result (or
error) per item, exactly as a pod of one item would. How items are shared:

- ``dynamic`` (a store with an atomic create-if-absent, :func:`kjupyter.store.atomic_create`: local
  files, S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``):
  items are claimed in blocks by creating ``claims/<block>`` holding the worker's index; the
  first to create it owns it. Worker ``w`` starts in its own region of the blocks and, when a
  claim fails, lists the claims once and moves to a free block, so fast workers take over the
  work of slow ones.
- ``static`` (no atomic create, or no store at all): worker ``w`` takes items ``w, w+P, ...``.
- ``chunks`` (``items_per_pod=k``, and ``map_files(chunk_size=k)``): index ``w`` of ``ceil(N/k)``
  takes items ``w*k`` to ``w*k+k-1``, in a pod of its own.

A worker that dies (OOMKilled, evicted, preempted, a lost node) is replaced by the Job under
the same index (``backoffLimitPerIndex``); the new pod finds the items of its own claims (or
partition) that have no result yet and does them first. The item that was in flight when it
died has used one attempt (``workers/<w>.json`` counts them): past its ``retries`` it gets an
error result instead of another try. So no item is lost, and none is recorded twice.

The client learns what each worker does from its log: a signed ``item`` frame when an item
starts, is retried, is done or failed (:func:`kjupyter.inline_frames.item_line`), which tags
the lines in between with their item.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

from kjupyter import payload as pl
from kjupyter import store as st
from kjupyter.errors import SerializationError
from kjupyter.inline_frames import item_line
from kjupyter.runner.channels import Channel
from kjupyter.runner.entry import EXIT_OK, EXIT_RUNNER_ERROR, _report, _what, load_payload, run

FAILURES_ENV = "KJUPYTER_WORKER_FAILURES"  # the Job's failure count of this worker index (downward API)
BLOCKS_PER_WORKER = 4  # claims per worker on average: balance against claim requests


def block_size(count: int, workers: int) -> int:
    """Items per claim: about BLOCKS_PER_WORKER claims per worker."""
    return max(1, math.ceil(count / (max(1, workers) * BLOCKS_PER_WORKER)))


class Worker:
    def __init__(self, channel: Channel, key: bytes, *, worker: int, workers: int, count: int, retries: int,
                 dynamic: bool, chunk: int = 1) -> None:  # fmt: skip
        self.channel = channel
        self.key = key
        self.worker = worker
        self.workers = max(1, workers)
        self.count = count
        self.retries = retries
        self.run_dir: st.RunDir | None = getattr(channel, "run", None)  # None inline: no store
        self.chunk = chunk  # > 1: this index runs items [worker * chunk, (worker + 1) * chunk) (items_per_pod)
        self.dynamic = dynamic and self.run_dir is not None and self.run_dir.atomic_create
        self.block = block_size(count, self.workers) if self.dynamic else 1
        self.blocks = math.ceil(count / self.block)
        self.deaths: dict[int, int] = {}
        self.function: Callable[[Any], Any] | None = None
        self.load_error: BaseException | None = None

    # --- the function, read once per worker ------------------------------------------------
    def load(self, channel: Channel, index: int, key: bytes) -> Callable[[], Any]:
        if self.load_error is not None:
            raise self.load_error
        if self.function is None:
            try:
                kind, body = load_payload(channel, key)
                if kind == pl.CALL:  # (a local worker runs calls too: one item, the call itself)
                    fn, args, kwargs = body
                    return lambda: fn(*args, **kwargs)
                if kind != pl.MAP:
                    raise SerializationError(f"a map worker cannot execute a {kind!r} payload")
            except BaseException as exc:
                self.load_error = exc
                raise
            self.function = body
        fn = self.function
        item = pl.load_item(channel.read_item(index), key=key, index=index,
                            what=_what(f"item {index}", channel, "items.pkl"))  # fmt: skip
        return lambda: fn(item)

    # --- the loop ---------------------------------------------------------------------------
    def work(self) -> int:
        for index in self._unfinished():
            self.run_item(index)
        for index in self._claimed() if self.dynamic else self._partition():
            self.run_item(index)
        return EXIT_OK

    def _indices(self) -> range:
        if self.chunk > 1:
            return range(self.worker * self.chunk, min(self.count, (self.worker + 1) * self.chunk))
        return range(self.worker, self.count, self.workers)

    def _frame(self, index: int, attempt: int, state: str) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        out = sys.__stdout__ or sys.stdout
        out.write("\n" + item_line(index, attempt, state, self.key) + "\n")
        out.flush()

    def run_item(self, index: int) -> int:
        """Run item ``index`` until it succeeds or its attempts are spent; its exit code.

        Attempts already spent by dead workers (``deaths``) count: past ``retries`` the item gets
        an error result without another try. Only the last attempt writes an error outcome.
        """
        attempt = self.deaths.get(index, 0)
        if attempt > self.retries:  # its worker died on it once more than its retries allow
            died = RuntimeError(f"item {index}: the worker running it died {attempt} time(s) (killed, evicted, "
                                "out of memory or its node was lost); see the run's diagnosis")  # fmt: skip
            _report(self.channel, index, died, "runner", self.key)
            self._frame(index, attempt, "fail")
            return EXIT_RUNNER_ERROR
        while True:
            final = attempt >= self.retries
            self._frame(index, attempt, "start")
            code = run(self.channel, index, self.key, final=final, loader=self.load)
            if code == EXIT_OK:
                self._frame(index, attempt, "done")
                return code
            if final or code == EXIT_RUNNER_ERROR:
                self._frame(index, attempt, "fail")
                return code
            self._frame(index, attempt, "retry")
            attempt += 1

    def _done(self, index: int) -> bool:
        return self.run_dir is not None and self.run_dir.exists(st.result_name(index))

    def _partition(self) -> Iterator[int]:
        restarted = int(os.environ.get(FAILURES_ENV) or 0) > 0
        for index in self._indices():
            if not (restarted and self._done(index)):  # (a replaced worker skips what its predecessor did)
                yield index

    def _own_blocks(self) -> list[int]:
        assert self.run_dir is not None
        mine = []
        for name in self.run_dir.list_names("claims"):
            if (
                name.isdigit()
                and self.run_dir.read_bytes(st.claim_name(int(name))).strip() == str(self.worker).encode()
            ):
                mine.append(int(name))
        return sorted(mine)

    def _unfinished(self) -> list[int]:
        """A replaced worker's items: those of its claims without a result; the first was in flight."""
        if not self.dynamic or self.run_dir is None:
            return []
        todo = [i for b in self._own_blocks() for i in self._block_items(b) if not self._done(i)]
        if todo:
            workers_file = f"workers/{self.worker}.json"
            if self.run_dir.exists(workers_file):
                self.deaths = {int(k): int(v) for k, v in self.run_dir.read_json(workers_file).items()}
            self.deaths[todo[0]] = self.deaths.get(todo[0], 0) + 1
            self.run_dir.write_json(workers_file, {str(k): v for k, v in self.deaths.items()})
        return todo

    def _block_items(self, block: int) -> range:
        return range(block * self.block, min(self.count, (block + 1) * self.block))

    def _claimed(self) -> Iterator[int]:
        assert self.run_dir is not None
        taken: set[int] = set()
        block: int | None = self.worker * self.blocks // self.workers  # its own region first: few collisions
        while block is not None:
            won = block not in taken and self.run_dir.create_exclusive(st.claim_name(block), str(self.worker).encode())
            # Ours after all: a create retried by the store library after its first try had landed
            # (412 on the retry), or our predecessor's claim. Its items with a result are skipped.
            recovered = not won and block not in taken and self._claim_holder(block) == self.worker
            if won or recovered:
                taken.add(block)
                items = self._block_items(block)
                yield from (i for i in items if not self._done(i)) if recovered else items
                block = block + 1 if block + 1 < self.blocks and block + 1 not in taken else self._free(taken)
                continue
            taken.add(block)
            taken |= {int(n) for n in self.run_dir.list_names("claims") if n.isdigit()}
            block = self._free(taken)

    def _claim_holder(self, block: int) -> int | None:
        assert self.run_dir is not None
        text = self.run_dir.read_bytes(st.claim_name(block)).strip()
        return int(text) if text.isdigit() else None

    def _free(self, taken: set[int]) -> int | None:
        free = [b for b in range(self.blocks) if b not in taken]
        return free[self.worker % min(len(free), self.workers)] if free else None


class PipeWorker(Worker):
    """A local worker (``--serve LOG_DIR``): its client hands it ``"<index> <attempts spent>"`` lines.

    Each item's output (file descriptors 1 and 2, so child processes too) goes to
    ``LOG_DIR/<index>.log``; a retry is told to the client as ``"<index> retry <attempt>"``, the
    end as ``"<index> <exit code>"`` (and in ``<index>.exit``), on ``control_out``.
    """

    def __init__(self, channel: Channel, key: bytes, *, control_in: IO[str], control_out: IO[str], log_dir: str,
                 retries: int) -> None:  # fmt: skip
        super().__init__(channel, key, worker=0, workers=1, count=0, retries=retries, dynamic=False)
        self.control_in = control_in
        self.control_out = control_out
        self.log_dir = log_dir

    def work(self) -> int:
        for line in self.control_in:
            index, spent = (int(x) for x in line.split())
            self.deaths[index] = spent
            log_fd = os.open(os.path.join(self.log_dir, f"{index}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            code = self.run_item(index)
            sys.stdout.flush()
            sys.stderr.flush()
            with open(os.path.join(self.log_dir, f"{index}.exit"), "w") as f:
                f.write(str(code))
            self._tell(f"{index} {code}")
        return EXIT_OK

    def _frame(self, index: int, attempt: int, state: str) -> None:
        if state == "retry":
            self._tell(f"{index} retry {attempt + 1}")

    def _tell(self, line: str) -> None:
        self.control_out.write(line + "\n")
        self.control_out.flush()
