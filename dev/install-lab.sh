#!/usr/bin/env bash
# What the JupyterLab tier (tests/lab) needs, from a fresh Debian machine, as root or not:
# Debian's chromium, the Python lab extras and test tools, and the lab extension built
# into kjupyter/labextension and unit-tested. Idempotent: a second run only checks
# (a few seconds). dev/test.sh runs it before pytest. Usage: bash dev/install-lab.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf -- '-- %s\n' "$*"; }
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    echo "install-lab: '$*' needs root (or sudo)" >&2
    return 1
  fi
}
apt_install() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
sha() { sha256sum "$@" | sha256sum | cut -c1-64; }

# --- system packages: the browser, and Node only if the machine has none -----------------
if [ ! -x "${KJUPYTER_CHROMIUM:-/usr/bin/chromium}" ]; then
  log "installing Debian's chromium"
  apt_install chromium
fi
if ! command -v npm >/dev/null 2>&1; then
  log "installing Node.js and npm"
  apt_install nodejs npm
fi

# --- Python: the lab extras, Playwright (driving Debian's chromium, never `playwright install`),
# --- pytest-jupyter (the route tests), jupyter-builder (the `jupyter-builder` command of npm run
# --- build), build (the wheel test's python -m build); the tools at their pins -----------------
missing=$(python3 - <<'EOF'
import importlib.util
wanted = {"jupyterlab": "jupyterlab>=4", "jupyter_server": "jupyter_server>=2.4", "ipywidgets": "ipywidgets>=8.1",
          "ipykernel": "ipykernel>=6.29", "playwright": "playwright>=1.40",
          "pytest_jupyter": "pytest-jupyter[server]>=0.10", "jupyter_builder": "jupyter-builder>=1.3",
          "build": "build>=1.2"}
print(" ".join(spec for module, spec in wanted.items() if importlib.util.find_spec(module) is None))
EOF
)
if [ -n "$missing" ]; then
  log "installing Python packages: $missing"
  # shellcheck disable=SC2086  # one word per requirement
  python3 -m pip install --quiet --disable-pip-version-check -c dev/constraints-tools.txt $missing
fi

# --- the lab extension ---------------------------------------------------------------------
cd labextension
# npm ci only when node_modules was not made by npm ci from this very lock file (and Node).
deps_stamp=node_modules/.kjupyter-npm-ci
deps_key="$(sha package-lock.json package.json) $(node --version)"
if [ ! -f "$deps_stamp" ] || [ "$(cat "$deps_stamp")" != "$deps_key" ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$deps_key" >"$deps_stamp"
fi

# Build and unit-test only when a source, a setting or the dependencies changed since the
# last build that passed its tests, or when the built extension is not there.
build_stamp=node_modules/.kjupyter-build
build_key="$(sha package.json package-lock.json tsconfig.json tsconfig.test.json \
  $(find src style test -type f | LC_ALL=C sort)) $deps_key"
built=../kjupyter/labextension
if [ ! -f "$build_stamp" ] || [ "$(cat "$build_stamp")" != "$build_key" ] \
  || [ ! -f "$built/package.json" ] || [ ! -f "$built/static/style.js" ]; then
  log "npm run build"
  out=$(mktemp)
  if ! npm run build --loglevel=error >"$out" 2>&1; then
    cat "$out"
    rm -f "$out"
    exit 1
  fi
  # The TypeScript and the bundle must build with no warnings (tsc and rspack both say "warning").
  if grep -Ei 'warning' "$out" | grep -Eiv 'npm warn'; then
    echo "install-lab: the lab extension built with warnings (above); fix them" >&2
    rm -f "$out"
    exit 1
  fi
  rm -f "$out"
  log "npm test"
  npm test --loglevel=error --silent >"${TMPDIR:-/tmp}/kjupyter-npm-test.log" 2>&1 || {
    cat "${TMPDIR:-/tmp}/kjupyter-npm-test.log"
    exit 1
  }
  grep -E '^# (pass|fail)' "${TMPDIR:-/tmp}/kjupyter-npm-test.log" | tr '\n' ' '
  echo
  echo "$build_key" >"$build_stamp"
else
  log "lab extension up to date"
fi
