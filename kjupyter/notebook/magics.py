"""``%%kube`` (run a cell remotely) and ``%kube`` (use, clusters, gpus, jobs, logs, cancel, attach, doctor, render).

The only module that imports IPython. A cell becomes ``CellTask(code)(**inputs)``
(see :mod:`kjupyter.notebook.cell`), submitted like any ``@remote`` call.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import shlex
import sys
from collections.abc import Callable
from typing import Any

import IPython
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display

from kjupyter import failure_text as ft
from kjupyter.errors import ConfigError, KjupyterError, SerializationError, SpecError
from kjupyter.futures import RunFuture
from kjupyter.notebook import cell as cl
from kjupyter.notebook import wait
from kjupyter.runner.cell_task import CellResult, CellTask, rebind_globals
from kjupyter.session import Session, get_session
from kjupyter.spec import RunSpec


class _HelpShown(Exception):
    """``--help`` printed the help: nothing to run."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        if status or message:
            raise UsageError(f"{self.prog}: {(message or 'error').strip()}")
        raise _HelpShown


# IPython 9.8 counts a cell before it runs it (ipython/ipython#15088); before, after. The number of the cell that
# runs now is execution_count - 1 from 9.8 on, execution_count before (a cell's frames say "Cell In[N]").
COUNTED_FIRST = tuple(IPython.version_info[:2]) >= (9, 8)


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%kube", description="Run this cell on a cluster.", allow_abbrev=False)
    p.add_argument("--cluster", help="cluster profile (default: %%kube use NAME, or the default profile)")
    p.add_argument(
        "--gpu",
        help="N, TYPE:N (e.g. A100:2) for a GPU type the cluster offers, or a fallback list "
        "H100:1,A100:1 (the first that can start, on any cluster that offers it)",
    )
    p.add_argument("--cpu", help="e.g. 2 or 500m")
    p.add_argument("--memory", help="e.g. 16Gi")
    p.add_argument("--image", help="container image")
    p.add_argument("--timeout", help="e.g. 1h30m")
    p.add_argument("--retries", help="retries on failure")
    p.add_argument("--keep-warm", dest="keep_warm", metavar="DURATION",
                   help="how long the pod waits for the next compatible cell, e.g. 2m; 0: it ends with the cell")  # fmt: skip
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable (repeatable)")
    p.add_argument("--secret", action="append", default=[], metavar="NAME", help="Secret mounted as env (repeatable)")
    p.add_argument("--out", help="bring back only these names: a,b")
    p.add_argument("--detach", action="store_true", help="return at once; reattach with %%kube attach RUN")
    p.add_argument("--name", help="run name")
    p.add_argument(
        "--cache",
        action="store_true",
        default=None,
        help="reuse the result of an earlier run of the same cell with the same inputs",
    )
    return p


def parse_cell_options(line: str, session: Session) -> tuple[dict[str, Any], argparse.Namespace]:
    """``%%kube`` arguments as run options, validated (UsageError: one line, no traceback)."""
    try:
        args = _cell_parser().parse_args(shlex.split(line))
    except ValueError as exc:  # unbalanced quotes
        raise UsageError(f"%%kube: {exc}") from None
    options: dict[str, Any] = {}
    for key in ("cluster", "gpu", "cpu", "memory", "image", "timeout", "retries", "name", "keep_warm", "cache"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.env:
        env = {}
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"%%kube: --env takes K=V, got {item!r}")
            env[key] = value
        options["env"] = env
    if args.secret:
        options["secrets"] = list(args.secret)
    try:
        RunSpec.build(**{k: v for k, v in options.items() if k != "cluster"})
        if args.cluster:
            session.config.profile(args.cluster)
    except (SpecError, ConfigError) as exc:
        raise UsageError(f"%%kube: {exc}") from None
    return options, args


def _present(exc: BaseException) -> BaseException:
    """A kjupyter error that has no rendering of its own yet shows as one line, not kjupyter's frames."""
    if isinstance(exc, KjupyterError) and not hasattr(exc, "_render_traceback_"):
        ft.attach(exc, [f"kjupyter: {exc}"])
    return exc


@magics_class
class KubeMagics(Magics):  # type: ignore[misc]
    @property
    def session(self) -> Session:
        session = get_session()
        session.notice = lambda text: print(text, file=sys.stderr)
        return session

    # IPython 9 types cell_magic("kube") as returning `_F | Callable[[_F], _F]`: mypy >= 2 applies that union
    # with _F unsolved ("expected Never") [arg-type]. IPython 8 has no types [misc, untyped-decorator].
    @cell_magic("kube")  # type: ignore[arg-type,misc,untyped-decorator,unused-ignore]
    def kube_cell(self, line: str, cell: str) -> Any:
        """Run the cell remotely: ``%%kube --gpu 1 --memory 16Gi``. ``%%kube --help`` lists the options."""
        session = self.session
        try:
            options, args = parse_cell_options(line, session)
        except _HelpShown:
            return None
        try:
            analysis = cl.analyze(cell)
        except SyntaxError as exc:
            raise UsageError(f"%%kube: the cell has a syntax error (line {exc.lineno}): {exc.msg}") from None
        ns = self.shell.user_ns  # type: ignore[union-attr,unused-ignore]
        wanted = [n.strip() for n in args.out.split(",") if n.strip()] if args.out else None
        count = getattr(self.shell, "execution_count", None)
        if isinstance(count, int) and COUNTED_FIRST:  # IPython counted this cell already: it is In[count - 1]
            count -= 1
        count = count if isinstance(count, int) and count >= 1 else None
        task = CellTask(cell, wanted if wanted is not None else analysis.assigns, display=analysis.has_value,
                        strict=wanted is not None, deletes=analysis.deletes,
                        name=f"In[{count}]" if isinstance(count, int) else "", first_line=2)  # fmt: skip
        inputs = cl.shippable(analysis.reads, ns)
        try:
            future = session.submit_call(task, (), inputs, options)
        except SerializationError as exc:
            raise UsageError(str(exc).replace("argument ", "variable ", 1).replace(" (position 0)", "")) from None
        except KjupyterError as exc:
            raise UsageError(f"%%kube: {exc}") from None
        if args.detach:
            future.detached = True
            print(f"kjupyter: run {future.run_id} started on {future.cluster}; "
                  f"collect it with %kube attach {future.run_id}")  # fmt: skip
            return future
        return self._collect(future)

    def _collect(self, future: RunFuture) -> Any:
        try:
            result = wait.wait(future)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            raise _present(exc) from None
        if not isinstance(result, CellResult):
            return result  # attached to a run that was not a cell
        ns = self.shell.user_ns  # type: ignore[union-attr,unused-ignore]
        for name, value in result.outputs.items():
            ns[name] = rebind_globals(value, ns)
        for name in result.deleted:
            ns.pop(name, None)
        return result.value

    @line_magic("kube")  # type: ignore[arg-type,misc,untyped-decorator,unused-ignore]  # as cell_magic above
    def kube_line(self, line: str) -> Any:
        """``%kube use NAME | clusters | gpus | jobs | logs RUN | cancel RUN | attach RUN | doctor | render [OPTIONS] | tb``."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%kube: {exc}") from None
        if not words:
            raise UsageError("%kube: use one of: " + ", ".join(sorted(_COMMANDS)))
        command = _COMMANDS.get(words[0])
        if command is None:
            raise UsageError(f"%kube: unknown command {words[0]!r}; use one of: {', '.join(sorted(_COMMANDS))}")
        try:
            return command(self, words[1:])
        except KjupyterError as exc:
            raise UsageError(f"%kube {words[0]}: {exc}") from None

    # --- line commands ----------------------------------------------------------------------

    def _use(self, argv: list[str]) -> None:
        if len(argv) != 1:
            raise UsageError("%kube use NAME")
        session = self.session
        profile = session.config.profile(argv[0])
        session.cluster = profile.name
        print(f"kjupyter: this session's runs go to {profile.name!r} ({profile.backend})")

    def _clusters(self, argv: list[str]) -> None:
        """The profiles as a table (HTML in a notebook, text elsewhere): ``%kube clusters [--no-probe]``."""
        if any(a not in ("--no-probe",) for a in argv):
            raise UsageError("%kube clusters [--no-probe]")
        from kjupyter.cli import clusters_rows  # the rows `kjupyter clusters` prints

        rows = clusters_rows(self.session, probe="--no-probe" not in argv)
        display({"text/plain": clusters_text(rows), "text/html": clusters_html(rows)}, raw=True)  # type: ignore[no-untyped-call,unused-ignore]

    def _jobs(self, argv: list[str]) -> Any:
        return _cli(["jobs", *self._with_cluster(argv)])

    def _logs(self, argv: list[str]) -> Any:
        return _cli(["logs", *self._with_cluster(argv)])

    def _cancel(self, argv: list[str]) -> Any:
        return _cli(["cancel", *self._with_cluster(argv)])

    def _gpus(self, argv: list[str]) -> Any:
        return _cli(["gpus", *argv])

    def _doctor(self, argv: list[str]) -> Any:
        return _cli(["doctor", *self._with_cluster(argv)])

    def _render(self, argv: list[str]) -> None:
        """The objects the next ``%%kube`` with these options would send: ``%kube render [--json] --gpu 1``.

        What ``kjupyter render`` prints (the backend's own rendering: a Kubernetes profile's Job, the
        local backend's worker processes), on the profile and spec ``%%kube`` would use (so ``--env``,
        a GPU type's cluster, ``%kube use`` all count), the same way: YAML, or JSON with ``--json``.
        """
        session = self.session
        as_json = "--json" in argv
        argv = [a for a in argv if a != "--json"]
        try:
            options, _ = parse_cell_options(" ".join(shlex.quote(a) for a in argv), session)  # same errors as %%kube
        except _HelpShown:
            return
        from kjupyter.cli_format import render_text

        profile, spec, _ = session.placed(options)  # (a fallback list: its first place)
        objects = session.backend(profile).render(spec, user=session.user, session=session.session_id,
                                                  function="cell")  # fmt: skip
        print(render_text(objects, as_json=as_json))

    def _tb(self, argv: list[str]) -> None:
        """The full remote traceback of the last failure (kjupyter's own frames included)."""
        exc = getattr(sys, "last_value", None)
        text = str(getattr(exc, "remote_traceback", "") or "")
        if not text:
            what = f"{type(exc).__name__}, which has no remote traceback" if exc is not None else "nothing yet"
            raise UsageError(f"%kube tb: the last failure was {what}; %tb shows its local traceback")
        print(text.rstrip("\n"))

    def _attach(self, argv: list[str]) -> Any:
        if not argv or len(argv) > 2:
            raise UsageError("%kube attach RUN [CLUSTER]")
        future = self.session.attach(argv[0], argv[1] if len(argv) > 1 else None)
        return self._collect(future)

    def _with_cluster(self, argv: list[str]) -> list[str]:
        if "--cluster" not in argv and self.session.cluster:
            return [*argv, "--cluster", self.session.cluster]
        return argv


_COMMANDS: dict[str, Callable[[KubeMagics, list[str]], Any]] = {
    "use": KubeMagics._use,
    "clusters": KubeMagics._clusters,
    "gpus": KubeMagics._gpus,
    "jobs": KubeMagics._jobs,
    "logs": KubeMagics._logs,
    "cancel": KubeMagics._cancel,
    "attach": KubeMagics._attach,
    "doctor": KubeMagics._doctor,
    "render": KubeMagics._render,
    "tb": KubeMagics._tb,
}


def _cli(argv: list[str]) -> None:
    """Run a ``kjupyter`` CLI command in this process; its errors are one line, its exit code an error."""
    from kjupyter import cli

    errors = io.StringIO()  # the CLI's error sentence becomes the magic's one-line error
    try:
        with contextlib.redirect_stderr(errors):
            code = cli.main(argv)
    except SystemExit as exc:  # argparse: unknown option or command
        code = exc.code if isinstance(exc.code, int) else 2
    lines = errors.getvalue().rstrip().splitlines()
    last = lines.pop() if code and lines else ""
    if lines:
        print("\n".join(lines), file=sys.stderr)
    if code:
        raise UsageError(last.removeprefix("kjupyter: ").removeprefix("error: ") or f"%kube {argv[0]} failed")


_CLUSTER_COLUMNS = ("PROFILE", "BACKEND", "CONTEXT/NAMESPACE", "GPU TYPES", "REACHABLE")


def _cluster_cells(row: dict[str, Any]) -> list[str]:
    reach = {True: "yes", False: "no", None: "not checked"}[row["reachable"]]
    return [row["name"] + (" (default)" if row["default"] else ""), row["backend"], row["where"],
            ", ".join(row["gpus"]) or "-", reach + (f": {row['detail']}" if row["detail"] else "")]  # fmt: skip


def clusters_text(rows: list[dict[str, Any]]) -> str:
    """The plain-text table of ``%kube clusters``."""
    table = [list(_CLUSTER_COLUMNS), *(_cluster_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_CLUSTER_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table)


def clusters_html(rows: list[dict[str, Any]]) -> str:
    """The HTML table of ``%kube clusters``; unreachable profiles are marked."""
    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in _CLUSTER_COLUMNS)
    body = []
    for row in rows:
        cells = _cluster_cells(row)
        cls = {True: "kjupyter-reachable", False: "kjupyter-unreachable", None: "kjupyter-unchecked"}[row["reachable"]]
        tds = "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in cells)
        body.append(f"<tr class='{cls}'>{tds}</tr>")
    return f"<table class='kjupyter-clusters'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def help_with_a_body(lines: list[str]) -> list[str]:
    """A cell that is only ``%%kube --help`` (or ``-h``) gets an empty line as its body.

    IPython refuses a cell magic with an empty body before calling it ("the cell body is
    empty"), so the help would never be shown. An IPython input transformer (cleanup stage,
    before magics are turned into calls); every other cell passes unchanged.
    """
    if len(lines) != 1 or not lines[0].startswith("%%kube"):
        return lines
    name, _, rest = lines[0][2:].strip().partition(" ")
    try:
        words = shlex.split(rest)
    except ValueError:
        return lines
    if name != "kube" or not {"-h", "--help"} & set(words):
        return lines
    return [lines[0].rstrip("\n") + "\n", "\n"]


def register(ipython: Any) -> None:
    """Register ``%%kube`` and ``%kube`` with an IPython shell (``%load_ext kjupyter``)."""
    ipython.register_magics(KubeMagics)
    cleanup = ipython.input_transformers_cleanup
    if help_with_a_body not in cleanup:
        cleanup.append(help_with_a_body)
