#!/usr/bin/env bash
# The README's screenshots, regenerated: runs the browser tests of each state of a run
# (tests/lab/test_lab_states.py: light and dark PNGs of every state under tests/artifacts/lab-states/)
# and copies the three the README shows to docs/screenshots/. Needs what dev/install-lab.sh installs
# (it is run first; it builds the lab extension if its sources changed). About 2 minutes.
# Usage: bash dev/screenshots.sh   (with the venv that has kjupyter[lab,test] first on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/install-lab.sh
KJUPYTER_DOCS_SCREENSHOTS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
  python -m pytest tests/lab/test_lab_states.py -q -p no:cacheprovider "$@"
ls -l docs/screenshots/
