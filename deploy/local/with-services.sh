#!/usr/bin/env bash
# Run a command with the local Kafka broker and Redis server up; stop afterwards only what this
# script started, so a developer's running `make kafka-up` is left alone.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
py="${PYTHON:-$repo/.venv/bin/python}"
kport="${PLEDGEFLOW_KAFKA_PORT:-9092}"
rport="${PLEDGEFLOW_REDIS_PORT:-6379}"
started=()
if [ -z "${PLEDGEFLOW_KAFKA_BOOTSTRAP:-}" ] && \
   ! "$py" "$here/wait_ready.py" kafka "127.0.0.1:$kport" --timeout 0 >/dev/null 2>&1; then
  "$here/kafka/kafka-up.sh" || exit 1
  started+=(kafka)
fi
if ! "$py" "$here/wait_ready.py" redis "127.0.0.1:$rport" --timeout 0 >/dev/null 2>&1; then
  "$here/redis/redis-up.sh" || exit 1
  started+=(redis)
fi
cleanup() {
  for s in "${started[@]}"; do "$here/$s/$s-down.sh" || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$@"
