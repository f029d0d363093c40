#!/usr/bin/env bash
# Stops the cluster of deploy/up.sh and removes its containers, network and
# volumes (all data). Brokers get STRATA_STOP_TIMEOUT seconds (default 10)
# after SIGTERM: a controlled shutdown is pointless when every broker stops
# and the data goes with them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/compose.sh" down --volumes --remove-orphans --timeout "${STRATA_STOP_TIMEOUT:-10}"
