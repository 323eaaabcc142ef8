"""The one failure renderer: header fields, frame filtering, one-sentence ends, the hints policy, map words."""

from __future__ import annotations

import pickle

from kjupyter import failure_text as ft
from kjupyter.errors import BackendError, RemoteError, RunCancelled, RunFailed, RunTimeout
from kjupyter.run_events import Diagnosis, Phase

REMOTE = """\
Traceback (most recent call last):
  File "/usr/lib/python3/site-packages/kjupyter/runner/entry.py", line 101, in run
    value = task()
            ^^^^^^
  File "/usr/lib/python3/site-packages/kjupyter/runner/cell_task.py", line 60, in __call__
    exec(compile(tree, filename, "exec"), namespace)
  File "<kube-cell In[4]>", line 6, in <module>
    inner(41)
  File "/home/me/lib/helpers.py", line 3, in inner
    raise ValueError(f'bad value {v}')
  File "/usr/lib/python3.11/concurrent/futures/_base.py", line 401, in __get_result
    raise self._exception
ValueError: bad value 41
"""


def remote_error() -> ValueError:
    exc = ValueError("bad value 41")
    exc.remote_traceback = REMOTE  # type: ignore[attr-defined]
    return exc


def test_frames_are_the_users_own_named_as_the_user_knows_them() -> None:
    lines = ft.clean_traceback(REMOTE)
    assert lines == [
        "Traceback (most recent call last):",
        "  Cell In[4], line 6, in <module>",
        "    inner(41)",
        '  File "/home/me/lib/helpers.py", line 3, in inner',
        "    raise ValueError(f'bad value {v}')",
        "ValueError: bad value 41",
    ]
    named = ft.clean_traceback(REMOTE, lambda f: "Cell In[2]" if f.endswith("helpers.py") else None)
    assert "  Cell In[2], line 3, in inner" in named
    only_ours = 'Traceback (most recent call last):\n  File "/x/kjupyter/runner/entry.py", line 1, in run\n    go()\nE: e\n'
    assert ft.clean_traceback(only_ours) == ["E: e"]  # a header with no frame left says nothing


def test_a_users_own_folder_named_kjupyter_is_not_taken_for_kjupyters_frames() -> None:
    assert ft.is_own_frame("/site-packages/kjupyter/runner/entry.py")
    assert not ft.is_own_frame("/home/me/kjupyter/my_training.py")


def test_the_header_names_type_function_item_run_and_node() -> None:
    where = ft.Where("sq-ab12", "gpu", "sq", "node-7", 3, "'x.csv'")
    assert ft.header(remote_error(), where) == "ValueError in sq · item 3 ('x.csv') · run sq-ab12 on gpu · node node-7"
    assert ft.header(RemoteError("mylib.Oops", "no", "tb"), ft.Where(function="cell")).startswith(
        "mylib.Oops in the %%kube cell"
    )
    lines = ft.render(remote_error(), where)
    assert lines[0] == "kjupyter: " + ft.header(remote_error(), where)
    assert lines.count("ValueError: bad value 41") == 1 and not any("kjupyter/" in line for line in lines)


def test_cancel_interrupt_and_timeouts_are_one_sentence() -> None:
    assert ft.render(RunCancelled("x", run_id="r-1"), ft.Where("r-1")) == ["kjupyter: run r-1 was cancelled."]
    assert ft.render(KeyboardInterrupt(), ft.Where("r-1")) == ["kjupyter: run r-1 was cancelled (interrupted)."]
    timeout = RunTimeout("run r-1 failed (DeadlineExceeded): …", run_id="r-1", reason="DeadlineExceeded",
                         sentence="The run exceeded its timeout of 60s and was stopped.",
                         hint="Raise timeout= if the work needs longer.")  # fmt: skip
    assert ft.render(timeout, ft.Where("r-1")) == [
        "kjupyter: run r-1 stopped: the run exceeded its timeout of 60s and was stopped; raise timeout= if the work "
        "needs longer."
    ]
    pending = RunFailed("…", run_id="r-2", reason="PendingTimeout", sentence="The run was still pending after 5s and "
                        "was deleted.", hint="Ask for fewer GPUs.")  # fmt: skip
    [line] = ft.render(pending, ft.Where("r-2"))
    assert line == "kjupyter: run r-2 stopped: the run was still pending after 5s and was deleted; ask for fewer GPUs."


def test_diagnosis_and_hint_are_two_lines_once_and_retries_only_where_a_retry_helps() -> None:
    oom = RunFailed("run r-1 failed (OOMKilled): killed.", run_id="r-1", reason="OOMKilled",
                    sentence="The container ran out of memory (limit 1Gi).", hint="Raise memory=, or retries=.")  # fmt: skip
    d = Diagnosis("r-1", "OOMKilled", "The container ran out of memory (limit 1Gi).", "Raise memory=, or retries=.",
                  fatal=True)  # fmt: skip
    lines = ft.render(oom, ft.Where("r-1"), d)
    assert lines[-2:] == ["RunFailed: The container ran out of memory (limit 1Gi).", "  hint: Raise memory=, or retries=."]
    assert sum("out of memory" in line for line in lines) == 1, lines  # what happened once, the hint on its own line
    other = ft.render(RunFailed("run r-1 failed (Error): exit 3.", reason="Error", sentence="it exited 3"),
                      ft.Where("r-1"), d)  # fmt: skip
    assert other[-1] == "  why: The container ran out of memory (limit 1Gi)."  # (its reason is no transient one:
    assert not any("hint" in line for line in other)  # the retries hint goes, and nothing else was left of it)
    backoff = Diagnosis("r-1", "BackoffLimitExceeded", "The task failed and has no retries left.",
                        "Raise retries= to try again automatically.", fatal=True)  # fmt: skip
    assert ft.hint_for(remote_error(), backoff) == ""  # the user's own ValueError: a retry would raise it again
    assert not any("retries" in line or "why:" in line for line in ft.render(remote_error(), ft.Where(), backoff))
    failed = RunFailed("run r-1 failed: it exited 1.", reason="Error", hint="Retry the run, or set retries= to do it.")
    assert ft.hint_for(failed) == ""  # not a transient failure: no retries hint
    evicted = RunFailed("…", reason="Evicted", hint="The node ran short; retry with retries=.")
    assert ft.hint_for(evicted) == "The node ran short; retry with retries=."


def test_a_rendered_exception_still_pickles() -> None:
    exc = ft.attach(remote_error(), ["kjupyter: ValueError"])
    again = pickle.loads(pickle.dumps(exc))
    assert again._render_traceback_() == ["kjupyter: ValueError"]


def test_map_words_put_failures_first() -> None:
    counts = {"total": 30, "succeeded": 27, "failed": 3, "cancelled": 0}
    assert ft.map_status(counts, ended=True, return_exceptions=True) == "27 ok · 3 raised (returned)"
    stopped = {"total": 30, "succeeded": 6, "failed": 1, "cancelled": 23}
    assert ft.map_status(stopped, ended=True, return_exceptions=False, stopped_at=7, stop_error=ValueError()) == (
        "stopped at item 7: ValueError · 6 ok · 23 cancelled"
    )
    running = {"total": 30, "succeeded": 10, "failed": 0, "cancelled": 0}
    assert ft.map_status(running, ended=False, return_exceptions=False, running=4) == "10/30 done · 10 ok · 4 running"
    cancelled = {"total": 10, "succeeded": 4, "failed": 0, "cancelled": 6}
    assert ft.map_status(cancelled, ended=True, return_exceptions=False) == "4 ok · 6 cancelled"  # not "failed"


def test_a_run_failed_message_says_what_happened_once_and_the_hint_on_its_own_line() -> None:
    from kjupyter import run_events as ev
    from kjupyter.futures import RunFuture

    class NoOutcome:  # the pod was killed before it wrote one
        def open_outcome(self, run_id: str, index: int) -> None:
            raise BackendError(f"run {run_id} task {index} left no result")

    future = RunFuture("r-1", NoOutcome(), cluster="kube")  # type: ignore[arg-type]
    sentence = "The container ran out of memory (limit 1Gi)."
    future.handle(ev.LogLine("r-1", "allocating"))
    future.handle(ev.Diagnosis("r-1", "OOMKilled", sentence, "Raise memory=.", fatal=True))
    future._on_run(ev.RunFinished("r-1", Phase.FAILED, "OOMKilled", sentence))
    exc = future.exception(0)
    assert isinstance(exc, RunFailed)
    assert str(exc) == "run r-1 failed (OOMKilled): The container ran out of memory (limit 1Gi).\nhint: Raise memory=."
    assert exc.logs == "allocating" and exc.sentence == sentence and exc.hint == "Raise memory=."  # the log is kept
    assert exc._render_traceback_() == [  # type: ignore[attr-defined]
        "kjupyter: RunFailed · run r-1 on kube",
        "RunFailed: The container ran out of memory (limit 1Gi).",
        "  hint: Raise memory=.",
    ]
