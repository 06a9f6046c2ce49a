#!/usr/bin/env bash
# The local Prometheus of `make run` (a Procfile entry): Debian's prometheus package, installed
# when missing (as root), scraping the API and the two workers on the ports of this run with
# deploy/local/prometheus.yml's jobs and alert rules. Listens on loopback only.
# Env: PLEDGEFLOW_PROMETHEUS_PORT (9090), PLEDGEFLOW_PROMETHEUS_DATA (<repo>/.local/prometheus),
# the run's PLEDGEFLOW_API_PORT and PLEDGEFLOW_{PROCESSOR,PROJECTOR,NOTIFY,SETTLEMENT}_METRICS_PORT.
# If it cannot start (say its port is taken), the services keep running without it: this
# script then idles instead of exiting, since honcho stops every process when one exits.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
port="${PLEDGEFLOW_PROMETHEUS_PORT:-9090}"
data="${PLEDGEFLOW_PROMETHEUS_DATA:-$repo/.local/prometheus}"
idle() { echo "prometheus: $1; the services keep running without it" >&2; exec sleep infinity; }

"$here/install.sh" || idle "not installed"
mkdir -p "$data/tsdb"
"$repo/.venv/bin/python" -m services.ops.local_prometheus \
  --api "${PLEDGEFLOW_API_PORT:-8000}" \
  --processor "${PLEDGEFLOW_PROCESSOR_METRICS_PORT:-9101}" \
  --projector "${PLEDGEFLOW_PROJECTOR_METRICS_PORT:-9102}" \
  --notify "${PLEDGEFLOW_NOTIFY_METRICS_PORT:-9104}" \
  --settlement "${PLEDGEFLOW_SETTLEMENT_METRICS_PORT:-9105}" \
  --settlement-readmodel "${PLEDGEFLOW_SETTLEMENT_READMODEL_METRICS_PORT:-9106}" \
  > "$data/prometheus.yml" \
  || idle "no configuration"
prometheus --config.file="$data/prometheus.yml" --storage.tsdb.path="$data/tsdb" \
  --web.listen-address="127.0.0.1:$port" --log.level=warn
idle "exited with status $?"
