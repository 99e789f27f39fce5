#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy), then pytest (unit, property and
# doctests). Arguments go to pytest.
set -euo pipefail
export TWINFLEET_BROWSER_TESTS=1  # setup.sh installs Chromium for tests/dashboard
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy" && .venv/bin/mypy
echo "== pytest" && exec .venv/bin/pytest "$@"
