"""The ``kjupyter`` command: clusters, gpus, jobs, logs, cancel, gc, render, doctor, version.

Every subcommand is a small function ``cmd_NAME(args) -> int`` registered in
:func:`build_parser`; errors kjupyter raises on purpose become one line on
stderr and exit code 1, never a traceback. Output whose reader goes away
(``kjupyter logs RUN | head``) ends quietly, with exit code 141 (see :func:`main`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from kjupyter import __version__, lab_choice, usage
from kjupyter.backends.base import Backend, Check
from kjupyter.cli_format import _table, _when, format_elapsed, map_counts, render_text, run_duration
from kjupyter.errors import KjupyterError
from kjupyter.session import Session, get_session
from kjupyter.stored_failure import failure_lines

Command = Callable[[argparse.Namespace], int]


def _session(args: argparse.Namespace) -> Session:
    """The process's session; ``--cluster`` is checked (an unknown name lists the known ones), never stored."""
    session = get_session()
    if getattr(args, "cluster", None):
        session.config.profile(args.cluster)
    return session


def _backend(session: Session, args: argparse.Namespace) -> Backend:
    """The backend of ``--cluster`` (or of the session's cluster, or the default)."""
    name = getattr(args, "cluster", None) or session.cluster
    return session.backend(session.config.profile(name) if name else session.default_profile())


def cmd_version(args: argparse.Namespace) -> int:
    import cloudpickle

    print(f"kjupyter {__version__} (Python {sys.version.split()[0]}, cloudpickle {cloudpickle.__version__})")
    return 0


def clusters_rows(session: Session, probe: bool) -> list[dict[str, Any]]:
    """One row per profile: name, backend, where, GPU types, whether runs from here go there
    (``current``, and ``chosen_by`` what), and (if ``probe``) reachability."""
    choice = session.choice()
    rows = []
    for name, p in sorted(session.config.profiles.items()):
        row = {"name": name, "default": name == session.config.default, "current": name == choice.name,
               "chosen_by": choice.source if name == choice.name else "", "backend": p.backend, "where": p.where,
               "gpus": sorted(p.gpus), "store": p.store or "(default)", "reachable": None, "detail": ""}  # fmt: skip
        if probe:
            try:
                row.update(session.backend(p).describe())
            except KjupyterError as exc:
                row.update(reachable=False, detail=str(exc))
        rows.append(row)
    return rows


def cmd_clusters(args: argparse.Namespace) -> int:
    session = get_session()
    rows = clusters_rows(session, probe=not args.no_probe)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    reach = {True: "yes", False: "NO", None: "?"}
    table = [
        [("* " if r["current"] else "  ") + r["name"], r["backend"], r["where"], ",".join(r["gpus"]) or "-",
         reach[r["reachable"]] + (f" ({r['detail']})" if r["detail"] else "")]
        for r in rows
    ]  # fmt: skip
    print(_table(table, ["  PROFILE", "BACKEND", "CONTEXT/NAMESPACE", "GPUS", "REACHABLE"]))
    (current,) = [r for r in rows if r["current"]]
    print(f"\n(*) runs that name no cluster go to {current['name']!r}; what chose it: {current['chosen_by']}.")
    print("Which cluster a run goes to, the first that applies: " + " > ".join(lab_choice.PRECEDENCE) + ".")
    lab = lab_choice.read_lab_choice(lab_choice.lab_file())
    if lab is not None and not lab_choice.in_kernel():
        print(f"(The JupyterLab this runs in chose {lab!r} in its status bar: that applies to its kernels, not here.)")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    session = _session(args)
    backend = _backend(session, args)
    profile = backend.profile
    runs = backend.list_runs(args.user)
    for problem in getattr(runs, "problems", ()):  # (a store that could not be read: the listing is partial)
        _say(f"kjupyter: warning: {problem}")
    now = time.time()
    used = {r.run_id: usage.summary(r.usage, session.config.profiles.get(r.cluster, profile).prices) for r in runs}
    if args.json:
        print(json.dumps([{**r.as_dict(), "duration": run_duration(r, now), **used[r.run_id]} for r in runs],
                         indent=1))  # fmt: skip
        return 0
    rows = [[r.run_id, r.phase.value, r.kind + (f" {map_counts(r)}" if r.kind == "map" else "")
             + (f" ({r.warm})" if r.warm else ""),
             r.function, r.cluster, _when(r.created), format_elapsed(run_duration(r, now)),
             *usage.table_cells(used[r.run_id]), r.diagnosis]
            for r in runs]  # fmt: skip
    cost = f"COST/{profile.prices.currency}" if profile.prices else "COST"  # (estimated from the profile's prices)
    header = ["RUN", "STATUS", "KIND", "FUNCTION", "CLUSTER", "CREATED", "DURATION", "GPU-H", cost, "DIAGNOSIS"]
    print(_table(rows, header) if rows else f"no runs on {profile.name}")
    return 0


def cmd_gpus(args: argparse.Namespace) -> int:
    from kjupyter.placement import gpus_table

    reports = get_session().gpu_reports()
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in reports], indent=1))
    else:
        print(gpus_table(reports))
    return 0


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def cmd_logs(args: argparse.Namespace) -> int:
    """The run's logs, on ``--cluster``, else on whichever configured cluster has the run (said on stderr)."""
    backend = _session(args).backend_of_run(args.run, args.cluster, notice=_say)
    for line in backend.logs(args.run, args.index, follow=args.follow):
        print(line, flush=args.follow)  # (followed: each line as it comes)
    for line in failure_lines(backend, args.run, args.index or 0, backend.profile.name, item=args.index):
        _say(line)  # the task's traceback, from its error envelope (the log has one line for it)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Each run is looked for as by ``logs``; one that cannot be cancelled is said, and the others still are."""
    session, code = _session(args), 0
    for run_id in args.runs:
        try:
            done = session.backend_of_run(run_id, args.cluster, notice=_say).cancel(run_id)
        except KjupyterError as exc:
            _say(f"kjupyter: error: {exc}")
            code = 1
            continue
        print(f"{run_id}: {'cancelled' if done else 'already finished'}")
    return code


def _profile_store(session: Session, cluster: str | None) -> tuple[Any, Any]:
    from kjupyter.store import RunStore

    profile = session.config.profile(cluster)
    return profile, RunStore(profile.store, dict(profile.store_options))


def cmd_gc(args: argparse.Namespace) -> int:
    from kjupyter import retention, run_keys
    from kjupyter.spec import parse_duration

    session = _session(args)
    backend = _backend(session, args)
    profile, store = _profile_store(session, backend.profile.name)
    older = parse_duration(args.older_than, "--older-than")
    report = retention.collect_runs(store, session.user, older, dry_run=args.dry_run,
                                    include_unfinished=args.include_unfinished)  # fmt: skip
    if not args.dry_run:
        backend.forget_runs(report.deleted)
        for run_id in report.deleted:
            run_keys.forget_key(run_id)  # a deleted run's key authenticates nothing any more
    for run_id in report.deleted:
        print(f"{'would delete' if args.dry_run else 'deleted'} {store.url}/{session.user}/{run_id}")
    print(f"{profile.name}: {report.summary(args.dry_run)}")
    return 0


def check_store(session: Session, cluster: str | None, *, remote: bool = False) -> list[str]:
    """``kjupyter doctor --store``: write, read and delete a probe object, and say who we are."""
    import secrets

    from kjupyter.identity import whoami

    profile, store = _profile_store(session, cluster)
    lines = [f"store of {profile.name}: {store.url}"]
    probe = store.run(session.user, f".doctor-{secrets.token_hex(4)}")
    probe.write_bytes("probe", b"kjupyter doctor")
    ok = probe.read_bytes("probe") == b"kjupyter doctor"
    probe.delete()
    verdict = "ok" if ok else "READ BACK DIFFERENT BYTES"
    lines.append(f"  write/read/delete under {store.url}/{session.user}/: {verdict}")
    lines.append(f"  here: {whoami(store.url, store.options)}")
    if remote:
        from kjupyter.decorator import remote as remote_

        who = remote_(cluster=profile.name, name="whoami")(whoami)(store.url)
        lines.append(f"  in a pod: {who}")
    return lines


def cmd_doctor(args: argparse.Namespace) -> int:
    session = _session(args)
    backend = _backend(session, args)
    checks = backend.doctor()
    for check in checks:
        print(f"[{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
    if args.store:
        for line in check_store(session, backend.profile.name, remote=args.remote):
            print(line)
    print(verdict(backend, checks))
    return 0 if all(c.ok for c in checks) else 1


def verdict(backend: Backend, checks: Sequence[Check]) -> str:
    """The last line of ``kjupyter doctor``: can runs go to this profile, from the backend's own checks."""
    where = f"{backend.profile.name} ({backend.profile.backend})"
    failed = [c.name for c in checks if not c.ok]
    if failed:
        return f"{where}: NOT READY: {len(failed)} of {len(checks)} checks failed ({', '.join(failed)})"
    return f"{where}: ready: all {len(checks)} checks passed"


def cmd_render(args: argparse.Namespace) -> int:
    session = _session(args)
    if args.reaper:
        print(render_text(_backend(session, args).render_reaper(), as_json=args.json))
        return 0
    keys = ("cluster", "cpu", "memory", "gpu", "image", "timeout", "retries", "parallelism")
    options = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.secret:
        options["secrets"] = args.secret
    # As a run picks it: named, `%kube use`, or one offering the GPU type (a fallback list: its first place).
    profile, spec, places = session.placed(options)
    if len(places) > 1:
        _say(f"kjupyter: the first place of the fallback list; then {', '.join(p.label for p in places[1:])}")
    objects = session.backend(profile).render(spec, count=args.map or 1, kind="map" if args.map else "call",
                                              user=session.user, session=session.session_id, function=args.name)  # fmt: skip
    print(render_text(objects, as_json=args.json))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kjupyter", description="Run Python on Kubernetes from notebooks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do (kjupyter COMMAND -h lists its options)")  # fmt: skip

    def add(name: str, fn: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        return p

    add("version", cmd_version, "print kjupyter's version")
    p = add(
        "clusters",
        cmd_clusters,
        "list the configured cluster profiles, whether they are reachable, and which one "
        "runs that name no cluster go to (starred), with what chose it",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-probe", action="store_true", help="do not contact the clusters")
    p = add("gpus", cmd_gpus, "per profile: its GPU types, and how many are allocatable and free right now")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("jobs", cmd_jobs, "list your runs on a cluster")
    p.add_argument("--cluster", help="profile name (default: the default profile)")
    p.add_argument("--user", help="whose runs (default: you)")
    p.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output (durations in seconds; usage in resource-seconds, gpu_hours, cost)",
    )
    p = add("logs", cmd_logs, "print a run's logs")
    p.add_argument("run", help="run id, as printed by `kjupyter jobs`")
    p.add_argument("--cluster", help="profile name (default: the cluster that has the run, the default one first)")
    p.add_argument("--index", type=int, help="only this task of a map")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    p = add("cancel", cmd_cancel, "cancel runs (deletes their Job and pods)")
    p.add_argument("runs", nargs="+", help="run ids")
    p.add_argument("--cluster", help="profile name (default: the cluster that has the run, the default one first)")
    p = add("gc", cmd_gc, "delete your finished runs from the store")
    p.add_argument("--older-than", default="7d", help="only runs that finished before this long ago (default 7d)")
    p.add_argument("--cluster", help="profile name (default: the default profile)")
    p.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    p.add_argument("--include-unfinished", action="store_true",
                   help="also runs that never recorded an end (their client died)")  # fmt: skip
    p = add("render", cmd_render, "print the exact objects a run with these options would send (YAML)")
    p.add_argument("--cluster", help="profile name (default: as a run picks it, e.g. one that offers --gpu's type)")
    p.add_argument("--cpu", help="CPU per task: cores or millicores, e.g. 2 or 500m")
    p.add_argument("--memory", help="memory per task, e.g. 16Gi or 512Mi")
    p.add_argument(
        "--gpu",
        help="GPUs per task: N, TYPE:N (e.g. A100:1) for a GPU type of the profile, "
        "or a fallback list H100:1,A100:1 (its first place is rendered)",
    )
    p.add_argument("--image", help="container image (default: the profile's)")
    p.add_argument("--timeout", help="longest the run may take, e.g. 1h30m or 600 (seconds)")
    p.add_argument("--retries", type=int, help="retries of a failed task (default 0)")
    p.add_argument("--parallelism", type=int, help="with --map: at most this many tasks at once")
    p.add_argument("--secret", action="append", help="a Secret to mount as env (repeatable)")
    p.add_argument("--map", type=int, metavar="N", help="render a map of N items (one Indexed Job)")
    p.add_argument("--name", default="run", help="function name for the labels")
    p.add_argument("--reaper", action="store_true",
                   help="print instead the CronJob (and its Role) that deletes runs pending past their timeout")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON (one object, or a list of several), not YAML")
    p = add("doctor", cmd_doctor, "check that kjupyter can work with a cluster profile")
    p.add_argument("--cluster", help="profile name (default: the default profile)")
    p.add_argument("--store", action="store_true", help="check the run store: access, and which identity is used")
    p.add_argument("--remote", action="store_true", help="with --store: also ask a pod which identity it uses")
    return parser


# 128 + SIGPIPE: what a shell reports for any command its pipe's reader left (`yes | head -1`), so
# `set -o pipefail` sees kjupyter as it sees cat or grep, and output cut short is not called a success.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code: 0, 1 (an error, said in one line), 130 (Ctrl-C), 141 (reader gone)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        sys.stdout.flush()  # (`kjupyter -h | head -1`: the pipe breaks here, not at exit)
        raise
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # what is still buffered meets a closed pipe here, where main() handles it
        return code
    except KjupyterError as exc:
        print(f"kjupyter: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _drop_stdout() -> None:
    """stdout's reader went away (``| head``): nothing more can be said there, and nothing is said about it.

    Python ignores SIGPIPE, so a write raises BrokenPipeError; the bytes still buffered would raise it
    again when the interpreter flushes stdout at exit ("Exception ignored ..."). As the Python docs'
    "Note on SIGPIPE" recommends, stdout now points at /dev/null. (Restoring SIGPIPE's default instead
    would also kill the process on a broken connection to a cluster.) Only this process's own stdout:
    a kernel that calls :func:`main` keeps its streams.
    """
    stdout = sys.__stdout__
    if stdout is None or sys.stdout is not stdout:
        return
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
