#!/usr/bin/env bash
# Start a local redis-server unless one already answers; wait until ready.
# Persistence as in production: an append-only file fsynced every second (appendfsync
# everysec), so a restarted or crashed Redis keeps Idempotency-Key records and the read model
# (at most the last second of writes is lost; the processor's idempotency covers that).
# Uses redis-server from PATH; as root installs Debian's package when missing.
# Env: PLEDGEFLOW_REDIS_PORT (6379), PLEDGEFLOW_REDIS_DATA (<repo>/.local/redis),
# PLEDGEFLOW_REDIS_MAXMEMORY (512mb).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
py="${PYTHON:-$repo/.venv/bin/python}"
port="${PLEDGEFLOW_REDIS_PORT:-6379}"
data="${PLEDGEFLOW_REDIS_DATA:-$repo/.local/redis}"

if "$py" "$here/../wait_ready.py" redis "127.0.0.1:$port" --timeout 0 >/dev/null 2>&1; then
  echo "redis: already running at 127.0.0.1:$port"
  exit 0
fi
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "redis: installing Debian's redis-server package"
    (apt-get install -y -q redis-server >/dev/null 2>&1) \
      || (apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null)
  else
    echo "redis: redis-server is not on PATH; install it (Debian: sudo apt-get install redis-server)" >&2
    exit 1
  fi
fi
mkdir -p "$data"
# maxmemory + noeviction: at the limit writes are refused (the API answers 503 and counts it)
# rather than idempotency keys or read-model rows being evicted silently.
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec \
  --maxmemory "${PLEDGEFLOW_REDIS_MAXMEMORY:-512mb}" --maxmemory-policy noeviction --daemonize yes \
  --dir "$data" --pidfile "$data/redis.pid" --logfile "$data/redis.log"
"$py" "$here/../wait_ready.py" redis "127.0.0.1:$port" --timeout 30
echo "redis: ready at 127.0.0.1:$port ($(redis-server --version | awk '{print $3}'))"
