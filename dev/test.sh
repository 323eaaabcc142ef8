#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs the linters
# (ruff, mypy, import-linter) and pytest. The tools are pinned (dev/constraints-tools.txt); the
# runtime libraries get the newest versions that their ranges in pyproject.toml allow.
#
#   bash dev/test.sh [pytest args]           in the current Python environment (a venv, say)
#   bash dev/test.sh --oldest [pytest args]  every runtime dependency at its declared floor
#       (dev/floors.py), in its own venv (.venv-oldest, or $KJUPYTER_OLDEST_VENV; made if missing):
#       the unit, contract, notebook, store and local-run tiers; no linters, no lab tier.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$PWD/dev/constraints-tools.txt

log() { printf '\n== %s (at %ds)\n' "$*" "$SECONDS"; }
# Every install takes the pinned tools; the lab extension is built by dev/install-lab.sh (the
# editable install need not run npm too).
pip_install() {
  HATCH_JUPYTER_BUILDER_SKIP_NPM=1 python3 -m pip install --quiet --disable-pip-version-check -c "$tools" "$@"
}

oldest=0
if [ "${1:-}" = "--oldest" ]; then
  oldest=1
  shift
  venv=${KJUPYTER_OLDEST_VENV:-$PWD/.venv-oldest}
  if [ ! -x "$venv/bin/python3" ]; then
    log "venv $venv"
    python3 -m venv "$venv"
  fi
  export VIRTUAL_ENV=$venv PATH=$venv/bin:$PATH
fi

if [ $oldest = 1 ] && [ "${KJUPYTER_INSTALLED:-0}" = 1 ]; then  # (.ci/run installed this venv while the main job ran)
  log "Python packages: installed already"
  python3 dev/floors.py --check
elif [ $oldest = 1 ]; then
  log "Python packages"
  pip_install pip
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  python3 dev/floors.py >"$work/floors.txt"
  # First kjupyter with its user extras and every runtime dependency at its floor, then the test
  # helpers around them, everything installed so far held fixed: the resolver then need not
  # search the helpers' history (moto[server] with an old botocore takes pip many minutes).
  pip_install -c "$work/floors.txt" -e ".[$(python3 dev/floors.py --extras)]"
  python3 -m pip freeze --exclude-editable >"$work/held.txt"
  pip_install -c "$work/floors.txt" -c "$work/held.txt" -e '.[test]'
  python3 dev/floors.py --check
else
  log "Python packages"
  pip_install pip
  pip_install -e '.[test]'
  python3 dev/floors.py --report

  if [ -f dev/install-lab.sh ]; then
    log "JupyterLab extension and browser"
    bash dev/install-lab.sh
  fi

  log "ruff"
  ruff check kjupyter tests benchmarks dev
  ruff format --check kjupyter
  log "mypy"
  mypy
  log "import-linter"
  lint-imports
fi

if [ "${KJUPYTER_INSTALL_ONLY:-0}" = 1 ]; then  # (.ci/run installs the oldest venv while the main job runs)
  log "installed; not testing (KJUPYTER_INSTALL_ONLY=1)"
  exit 0
fi

log "pytest"
if [ $oldest = 1 ]; then
  python3 -m pytest tests/unit tests/contract tests/notebook tests/store tests/test_local_runs.py "$@"
else
  python3 -m pytest "$@"
fi
