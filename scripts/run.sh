#!/usr/bin/env bash
# The main job: the whole system on this machine. Starts nats-server (JetStream) and a
# local Ray head, the machine actors of the example plant (52 machines) on Ray, and a
# simulated plant that publishes their telemetry; prints what the twins report, then stops
# everything it started. Arguments go to `twinfleet up` (try --help; --stay keeps the
# services up until Ctrl-C). NATS_URL / RAY_ADDRESS use servers already running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec .venv/bin/twinfleet up "$@"
