#!/usr/bin/env bash
# `make demo`: `make run`'s stack in the background, a short launch-day simulation against it
# (`pledgeflow simulate`, which ends with `pledgeflow audit verify --from-kafka
# --against-readmodel`), then where to look; the stack keeps running until Ctrl-C.
# Readiness is polled (run.sh prints "Pledgeflow is running." once every process is ready).
# Settings: DEMO_SEED, DEMO_DURATION, DEMO_RATE, DEMO_CAMPAIGNS, DEMO_LOG (the stack's log,
# .local/demo-stack.log), and every PLEDGEFLOW_* of run.sh (ports, topic prefix, API keys).
# Failed captures are retried after 2 s, 5 s and 10 s (not days) so that campaigns settle
# while you watch.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
mkdir -p .local
log="${DEMO_LOG:-$repo/.local/demo-stack.log}"

export PLEDGEFLOW_SETTLEMENT_RETRY_SCHEDULE="${PLEDGEFLOW_SETTLEMENT_RETRY_SCHEDULE:-2s,5s,10s}"
# The simulation's webhook receiver listens on loopback: the API must accept such a URL.
export PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS="${PLEDGEFLOW_NOTIFY_ALLOW_PRIVATE_URLS:-true}"
# What the audit at the end reads: the same Kafka, Redis and topics as run.sh.
export PLEDGEFLOW_KAFKA_BOOTSTRAP="${PLEDGEFLOW_KAFKA_BOOTSTRAP:-127.0.0.1:${PLEDGEFLOW_KAFKA_PORT:-9092}}"
export PLEDGEFLOW_REDIS_URL="${PLEDGEFLOW_REDIS_URL:-redis://127.0.0.1:${PLEDGEFLOW_REDIS_PORT:-6379}/0}"
port="${PLEDGEFLOW_API_PORT:-8000}"
mail_ui="http://127.0.0.1:${PLEDGEFLOW_MAILPIT_UI_PORT:-8025}"
prometheus="http://127.0.0.1:${PLEDGEFLOW_PROMETHEUS_PORT:-9090}"

# Its own session: run.sh is stopped by its TERM trap (which stops everything it started).
: > "$log"
setsid "$here/run.sh" >>"$log" 2>&1 &
stack=$!
stop() {
  trap - INT TERM EXIT
  if kill -0 "$stack" 2>/dev/null; then
    echo "demo: stopping the stack..."
    kill -TERM "$stack" 2>/dev/null
    while kill -0 "$stack" 2>/dev/null; do sleep 0.2; done
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM

echo "demo: starting make run's stack in the background (log: $log)"
started=$SECONDS
until grep -q "Pledgeflow is running." "$log"; do
  if ! kill -0 "$stack" 2>/dev/null; then
    echo "demo: the stack stopped before it was ready; its log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  if (( SECONDS - started > 600 )); then
    echo "demo: the stack was not ready within 10 minutes; its log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  sleep 0.5
done
echo "demo: the stack is ready ($((SECONDS - started)) s)"

.venv/bin/pledgeflow simulate \
  --api "http://127.0.0.1:$port" \
  --seed "${DEMO_SEED:-1}" --duration "${DEMO_DURATION:-40}" --rate "${DEMO_RATE:-10}" \
  --campaigns "${DEMO_CAMPAIGNS:-6}" --mailpit "$mail_ui"
outcome=$?
dev_key="$(grep -m1 'dev API key:' "$log" | awk '{print $4}')"

cat <<EOF

  The simulation $( [ "$outcome" = 0 ] && echo "kept every promise and the audit is clean" || echo "found problems (see above)" ).
  Where to look:
    API docs:     http://127.0.0.1:$port/docs      (key: $dev_key)
    e-mail:       $mail_ui      (mailpit: receipts, goal reached, closing, payouts)
    prometheus:   $prometheus      (try: sum(rate(pledgeflow_api_requests_total[1m])))
    audit again:  .venv/bin/pledgeflow audit verify --from-kafka --against-readmodel
    stack log:    $log
    again:        .venv/bin/pledgeflow simulate --seed 2 --mailpit $mail_ui

  The stack keeps running; Ctrl-C stops it.
EOF
wait "$stack"
