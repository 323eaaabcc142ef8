#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs
# the linters (ruff, mypy, import-linter) and pytest. Usage: bash dev/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

log "Python packages"
# The lab extension is built by dev/install-lab.sh; the editable install need not run npm too.
HATCH_JUPYTER_BUILDER_SKIP_NPM=1 python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

if [ -f dev/install-lab.sh ]; then
  log "JupyterLab extension and browser"
  bash dev/install-lab.sh
fi

log "ruff"
ruff check kjupyter tests benchmarks
ruff format --check kjupyter
log "mypy"
mypy
log "import-linter"
lint-imports

log "pytest"
python3 -m pytest "$@"
