#!/usr/bin/env bash
# Runs a compose command on the Strata cluster of deploy/compose.yaml
# (project "strata"), with `docker compose` or, where that plugin is
# missing, `docker-compose`. Examples: deploy/compose.sh ps,
# deploy/compose.sh logs -f broker-1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if docker compose version >/dev/null 2>&1; then
  exec docker compose -p "${STRATA_PROJECT:-strata}" -f "$here/compose.yaml" "$@"
elif command -v docker-compose >/dev/null 2>&1; then
  exec docker-compose -p "${STRATA_PROJECT:-strata}" -f "$here/compose.yaml" "$@"
else
  echo "compose: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 127
fi
