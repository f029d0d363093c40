#!/usr/bin/env bash
# Builds strata:local (deploy/build-image.sh; STRATA_PROFILE=release|debug)
# and starts 3 coordinators + 3 brokers (deploy/compose.yaml); returns once
# every service reports healthy, or fails after STRATA_UP_TIMEOUT seconds
# (default 180) with the state and logs of what is not.
#   STRATA_SKIP_BUILD=1   use the strata:local image already built
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
timeout="${STRATA_UP_TIMEOUT:-180}"
start=$(date +%s)
if ! docker info >/dev/null 2>&1; then
  echo "up: cannot reach a Docker engine ('docker info' fails)" >&2
  exit 1
fi
if [ "${STRATA_SKIP_BUILD:-0}" != 1 ]; then
  "$here/build-image.sh"
fi
"$here/compose.sh" up -d
services=(coordinator-1 coordinator-2 coordinator-3 broker-1 broker-2 broker-3)
deadline=$(( $(date +%s) + timeout ))
while :; do
  waiting=()
  for s in "${services[@]}"; do
    state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' \
      "strata-$s" 2>/dev/null || echo missing)
    [ "$state" = healthy ] || waiting+=("$s=$state")
  done
  [ ${#waiting[@]} -eq 0 ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "up: not healthy after ${timeout} s: ${waiting[*]}" >&2
    "$here/compose.sh" ps >&2 || true
    for w in "${waiting[@]}"; do
      echo "--- logs of ${w%%=*}" >&2
      docker logs --tail 30 "strata-${w%%=*}" >&2 || true
    done
    exit 1
  fi
  sleep 1
done
echo "up: 3 coordinators and 3 brokers healthy in $(( $(date +%s) - start )) s"
echo "  export STRATA_BOOTSTRAP=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
echo "  export STRATA_COORDINATORS=127.0.0.1:19181,127.0.0.1:19182,127.0.0.1:19183"
echo "  strata cluster status"
