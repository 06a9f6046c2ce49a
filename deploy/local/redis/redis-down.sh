#!/usr/bin/env bash
# Stop the redis-server started by redis-up.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
data="${PLEDGEFLOW_REDIS_DATA:-$repo/.local/redis}"
pidfile="$data/redis.pid"
[ -f "$pidfile" ] || { echo "redis: not started here"; exit 0; }
pid="$(cat "$pidfile")"
if kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
rm -f "$pidfile"
echo "redis: stopped"
