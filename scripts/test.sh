#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy), then pytest (unit, property, doctests,
# integration with real servers, browser tests). Other arguments go to pytest.
#   --fast   lint, types and the fast tier only (no server started, no browser, no demo)
set -euo pipefail
fast=0
args=()
for arg in "$@"; do
  if [[ "$arg" == "--fast" ]]; then fast=1; else args+=("$arg"); fi
done
if [[ $fast == 0 ]]; then
  export TWINFLEET_BROWSER_TESTS=1  # setup.sh installs Chromium for tests/dashboard
fi
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy" && .venv/bin/mypy
if [[ $fast == 1 ]]; then
  echo "== pytest (fast tier)"
  exec .venv/bin/pytest -m "not integration and not slow" ${args[@]+"${args[@]}"}
fi
echo "== pytest" && exec .venv/bin/pytest --durations=25 ${args[@]+"${args[@]}"}
