#!/usr/bin/env bash
# The main job: a simulated plant of 52 machines, watched by their digital twins.
# Prints health, anomalies and remaining useful life as they evolve. Arguments go to
# `twinfleet demo` (try --help).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec .venv/bin/twinfleet demo "$@"
