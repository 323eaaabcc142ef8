"""The ``kjupyter`` command: clusters, jobs, logs, cancel, version (and more, per backend).

Every subcommand is a small function ``cmd_NAME(args) -> int`` registered in
:func:`build_parser`; errors kjupyter raises on purpose become one line on
stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from kjupyter import __version__
from kjupyter.errors import KjupyterError
from kjupyter.session import Session, get_session

Command = Callable[[argparse.Namespace], int]


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _when(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _session(args: argparse.Namespace) -> Session:
    session = get_session()
    if getattr(args, "cluster", None):
        session.config.profile(args.cluster)  # unknown names fail here, listing the known ones
        session.cluster = args.cluster
    return session


def cmd_version(args: argparse.Namespace) -> int:
    import cloudpickle

    print(f"kjupyter {__version__} (Python {sys.version.split()[0]}, cloudpickle {cloudpickle.__version__})")
    return 0


def clusters_rows(session: Session, probe: bool) -> list[dict[str, Any]]:
    """One row per profile: name, backend, where, GPU types, and (if ``probe``) reachability."""
    rows = []
    for name, p in sorted(session.config.profiles.items()):
        where = p.context or ("in-cluster" if p.in_cluster else "") if p.backend == "kubernetes" else "this machine"
        if p.backend == "kubernetes":
            where = f"{where or 'current context'}/{p.namespace or 'default'}"
        row = {"name": name, "default": name == session.config.default, "backend": p.backend, "where": where,
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
        [("* " if r["default"] else "  ") + r["name"], r["backend"], r["where"], ",".join(r["gpus"]) or "-",
         reach[r["reachable"]] + (f" ({r['detail']})" if r["detail"] else "")]
        for r in rows
    ]  # fmt: skip
    print(_table(table, ["  PROFILE", "BACKEND", "CONTEXT/NAMESPACE", "GPUS", "REACHABLE"]))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    session = _session(args)
    profile = session.config.profile(args.cluster)
    runs = session.backend(profile).list_runs(args.user)
    if args.json:
        print(json.dumps([r.as_dict() for r in runs], indent=1))
        return 0
    rows = [[r.run_id, r.phase.value, r.kind + (f" {r.succeeded}/{r.total}" if r.kind == "map" else ""),
             r.function, _when(r.created), r.diagnosis] for r in runs]  # fmt: skip
    print(
        _table(rows, ["RUN", "STATUS", "KIND", "FUNCTION", "CREATED", "DIAGNOSIS"])
        if rows
        else f"no runs on {profile.name}"
    )
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    session = _session(args)
    backend = session.backend(session.config.profile(args.cluster))
    for line in backend.logs(args.run, args.index, follow=args.follow):
        print(line, flush=True)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    session = _session(args)
    backend = session.backend(session.config.profile(args.cluster))
    for run_id in args.runs:
        done = backend.cancel(run_id)
        print(f"{run_id}: {'cancelled' if done else 'already finished'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kjupyter", description="Run Python on Kubernetes from notebooks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        return p

    add("version", cmd_version, "print kjupyter's version")
    p = add("clusters", cmd_clusters, "list the configured cluster profiles and whether they are reachable")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-probe", action="store_true", help="do not contact the clusters")
    p = add("jobs", cmd_jobs, "list your runs on a cluster")
    p.add_argument("--cluster", help="profile name (default: the default profile)")
    p.add_argument("--user", help="whose runs (default: you)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("logs", cmd_logs, "print a run's logs")
    p.add_argument("run", help="run id, as printed by `kjupyter jobs`")
    p.add_argument("--cluster", help="profile name")
    p.add_argument("--index", type=int, help="only this task of a map")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    p = add("cancel", cmd_cancel, "cancel runs (deletes their Job and pods)")
    p.add_argument("runs", nargs="+", help="run ids")
    p.add_argument("--cluster", help="profile name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except KjupyterError as exc:
        print(f"kjupyter: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
