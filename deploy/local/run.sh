#!/usr/bin/env bash
# `make run`: Kafka, Redis, then the ingest API, the campaign processor and the read-model
# projector under honcho (deploy/local/Procfile). Waits until each is ready, prints the docs
# URL, the dev API key and a curl example. Ctrl-C stops everything this script started.
# Data survives: Kafka keeps its log in .local/kafka; the dev key is kept in .local/dev-api-key;
# the read model is rebuilt from Kafka by the projector when Redis comes back empty.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
py="$repo/.venv/bin/python"
kport="${PLEDGEFLOW_KAFKA_PORT:-9092}"
rport="${PLEDGEFLOW_REDIS_PORT:-6379}"
port="${PLEDGEFLOW_API_PORT:-8000}"
cd "$repo"

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
export PLEDGEFLOW_KAFKA_BOOTSTRAP="${PLEDGEFLOW_KAFKA_BOOTSTRAP:-127.0.0.1:$kport}"
export PLEDGEFLOW_REDIS_URL="${PLEDGEFLOW_REDIS_URL:-redis://127.0.0.1:$rport/0}"
export PLEDGEFLOW_API_PORT="$port"

# One dev key per clone, kept across runs.
mkdir -p .local
if [ -z "${PLEDGEFLOW_API_KEYS:-}" ]; then
  [ -s .local/dev-api-key ] || "$py" -c 'import secrets; print("dev-" + secrets.token_hex(16))' > .local/dev-api-key
  dev_key="$(cat .local/dev-api-key)"
  export PLEDGEFLOW_API_KEYS="dev:$dev_key"
  key_note='tenant "dev"; kept in .local/dev-api-key'
else
  dev_key="${PLEDGEFLOW_API_KEYS#*:}"; dev_key="${dev_key%%,*}"
  key_note="tenant \"${PLEDGEFLOW_API_KEYS%%:*}\", from PLEDGEFLOW_API_KEYS"
fi

echo "topics: creating the registry's topics if missing"
"$py" - <<'PY' || exit 1
import asyncio
from schemas.topics import Topics, ensure_topics
from services.pledge.config import PledgeSettings
s = PledgeSettings()
created = asyncio.run(ensure_topics(s.kafka_bootstrap, Topics(prefix=s.topic_prefix, partitions=s.partitions)))
print(f"topics: {len(created)} created")
PY

# The checkpointer's signing key, one per clone (docs/audit.md "Signed checkpoints").
if [ -z "${PLEDGEFLOW_CHECKPOINT_KEY_FILE:-}" ] && [ ! -s .local/checkpoint-key.pem ]; then
  .venv/bin/pledgeflow audit checkpoint keygen --private .local/checkpoint-key.pem \
    --public .local/checkpoint-key.pub.pem || exit 1
fi

honcho_pid=""
cleanup() {
  if [ -n "$honcho_pid" ] && kill -0 "$honcho_pid" 2>/dev/null; then
    kill -TERM "$honcho_pid" 2>/dev/null
    wait "$honcho_pid" 2>/dev/null
  fi
  for s in "${started[@]}"; do "$here/$s/$s-down.sh" || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$repo/.venv/bin/honcho" -f "$here/Procfile" -d "$repo" start &
honcho_pid=$!

# Ready = the API answers /readyz (Kafka and Redis reachable from it), the processor has
# rebuilt its partitions (its recovery histogram counts them) and the projector owns partitions.
export PLEDGEFLOW_PROCESSOR_METRICS_PORT="${PLEDGEFLOW_PROCESSOR_METRICS_PORT:-9101}"
export PLEDGEFLOW_PROJECTOR_METRICS_PORT="${PLEDGEFLOW_PROJECTOR_METRICS_PORT:-9102}"
"$py" - "$port" "$honcho_pid" <<'PY' || exit 1
import os, sys, time, urllib.request
import redis
from services.pledge.config import PledgeSettings
port, pid = sys.argv[1], int(sys.argv[2])
s = PledgeSettings()
metrics_port = os.environ["PLEDGEFLOW_PROCESSOR_METRICS_PORT"]

def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode() if r.status == 200 else None
    except Exception:
        return None

def processor_ready() -> bool:
    text = get(f"http://127.0.0.1:{metrics_port}/metrics") or ""
    for line in text.splitlines():
        if line.startswith("pledgeflow_processor_recovery_seconds_count"):
            return float(line.split()[-1]) > 0
    return False

def projector_ready() -> bool:
    try:
        return bool(redis.Redis.from_url(s.redis_url).exists(f"{s.topic_prefix}pf:projector:alive"))
    except Exception:
        return False

deadline = time.monotonic() + 120
status = {}
while True:
    status = {"api": get(f"http://127.0.0.1:{port}/readyz") is not None,
              "processor": processor_ready(), "projector": projector_ready()}
    if all(status.values()):
        break
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("run: a process exited before everything was ready (see the log above)")
    if time.monotonic() > deadline:
        sys.exit(f"run: not ready after 120 s: {status}")
    time.sleep(0.5)
PY

# Prometheus (Procfile: deploy/local/prometheus/serve.sh) answers /-/ready once its config and
# rules loaded; a first run may spend a few seconds installing it. Not ready in time: a note.
prom_port="${PLEDGEFLOW_PROMETHEUS_PORT:-9090}"
prom_note="http://127.0.0.1:$prom_port   (alerts: /alerts, targets: /targets)"
"$py" - "$prom_port" <<'PY' || prom_note="not answering on 127.0.0.1:$prom_port (see the log above)"
import sys, time, urllib.request
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/-/ready", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.5)
sys.exit(1)
PY

cat <<EOF2

  Pledgeflow is running.
    API docs:     http://127.0.0.1:$port/docs   (OpenAPI: /openapi.json, metrics: /metrics)
    dev API key:  $dev_key   ($key_note)
    metrics:      processor http://127.0.0.1:$PLEDGEFLOW_PROCESSOR_METRICS_PORT/metrics, projector http://127.0.0.1:$PLEDGEFLOW_PROJECTOR_METRICS_PORT/metrics
    prometheus:   $prom_note

  Try:
    curl -s -X POST http://127.0.0.1:$port/v1/campaigns \\
      -H "Authorization: Bearer $dev_key" -H "Idempotency-Key: launch-demo-1" \\
      -H "Content-Type: application/json" -H "Prefer: wait=5" \\
      -d '{"campaign_id":"c-demo","title":"Mon album","creator_id":"u-9","goal":{"amount_minor":500000,"currency":"EUR"},"deadline":"2030-12-31T23:59:59Z","funding_model":"all_or_nothing","tiers":[{"tier_id":"t1","title":"CD","min_amount_minor":2500,"quantity_limit":100}]}'
    curl -s -X POST http://127.0.0.1:$port/v1/campaigns/c-demo/pledges \\
      -H "Authorization: Bearer $dev_key" -H "Idempotency-Key: pledge-demo-1" \\
      -H "Content-Type: application/json" -H "Prefer: wait=5" \\
      -d '{"backer_id":"b-1","amount_minor":2500,"currency":"EUR","tier_id":"t1"}'
    curl -s http://127.0.0.1:$port/v1/campaigns/c-demo -H "Authorization: Bearer $dev_key"

  Ctrl-C stops everything.
EOF2

wait "$honcho_pid"
