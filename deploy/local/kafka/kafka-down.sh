#!/usr/bin/env bash
# Stop the local broker started by kafka-up.sh (SIGTERM, then wait for a clean shutdown). Keeps data.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
data="${PLEDGEFLOW_KAFKA_DATA:-$repo/.local/kafka}"
pidfile="$data/broker.pid"
[ -f "$pidfile" ] || { echo "kafka: not started here"; exit 0; }
pid="$(cat "$pidfile")"
if kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { echo "kafka: forcing stop"; kill -9 "$pid"; }
fi
rm -f "$pidfile"
echo "kafka: stopped"
