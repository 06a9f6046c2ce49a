#!/usr/bin/env bash
# Start the local single-node Kafka broker (KRaft) unless one already answers; wait until ready.
# Env: PLEDGEFLOW_KAFKA_PORT (9092), PLEDGEFLOW_KAFKA_CONTROLLER_PORT (9093),
#      PLEDGEFLOW_KAFKA_DATA (<repo>/.local/kafka), PLEDGEFLOW_KAFKA_BOOTSTRAP (use an external cluster).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
py="${PYTHON:-$repo/.venv/bin/python}"
port="${PLEDGEFLOW_KAFKA_PORT:-9092}"
cport="${PLEDGEFLOW_KAFKA_CONTROLLER_PORT:-9093}"
data="${PLEDGEFLOW_KAFKA_DATA:-$repo/.local/kafka}"
bootstrap="${PLEDGEFLOW_KAFKA_BOOTSTRAP:-127.0.0.1:$port}"

if [ -n "${PLEDGEFLOW_KAFKA_BOOTSTRAP:-}" ]; then
  echo "kafka: using external cluster at $bootstrap"
  exec "$py" "$here/../wait_ready.py" kafka "$bootstrap" --timeout 60
fi
if "$py" "$here/../wait_ready.py" kafka "$bootstrap" --timeout 0 >/dev/null 2>&1; then
  echo "kafka: already running at $bootstrap"
  exit 0
fi

# One start at a time per data folder: a second broker on the same log dirs corrupts them.
mkdir -p "$data"
exec 9>"$data/.kafka-up.lock"
flock 9
pidfile="$data/broker.pid"
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  # Our broker is alive but not answering yet (still loading its partitions): wait for it.
  echo "kafka: broker (pid $(cat "$pidfile")) is starting; waiting until it is ready"
  exec "$py" "$here/../wait_ready.py" kafka "$bootstrap" --timeout 300 --pid "$(cat "$pidfile")"
fi
for p in "$port" "$cport"; do
  if "$py" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', int(sys.argv[1])))!=0)" "$p"; then
    echo "kafka: port $p is taken by another process; set PLEDGEFLOW_KAFKA_PORT / PLEDGEFLOW_KAFKA_CONTROLLER_PORT" >&2
    exit 1
  fi
done
[ -f "$here/lib/.fetched" ] || { "$here/fetch.sh" && touch "$here/lib/.fetched"; }

sed -e "s#@@PORT@@#$port#g" -e "s#@@CONTROLLER_PORT@@#$cport#g" -e "s#@@DATA_DIR@@#$data#g" \
  "$here/server.properties" > "$data/server.properties"
cp "$here/log4j2.yaml" "$data/log4j2.yaml"
jvm=(java -Xmx512m -Xms256m -XX:+UseG1GC -Dlog4j2.configurationFile="$data/log4j2.yaml"
     -Dkafka.logs.dir="$data/logs" -cp "$here/lib/*")
cluster_id_file="$data/cluster.id"
if [ ! -s "$cluster_id_file" ]; then
  "${jvm[@]}" kafka.tools.StorageTool random-uuid > "$cluster_id_file"
fi
# Static controller.quorum.voters: format without --standalone; a second format is a no-op.
"${jvm[@]}" kafka.tools.StorageTool format -t "$(cat "$cluster_id_file")" \
  -c "$data/server.properties" --ignore-formatted > "$data/format.log" 2>&1 \
  || { cat "$data/format.log"; exit 1; }

start=$(date +%s%N)
nohup "${jvm[@]}" kafka.Kafka "$data/server.properties" > "$data/broker.log" 2>&1 9>&- &
echo $! > "$pidfile"
if ! "$py" "$here/../wait_ready.py" kafka "$bootstrap" --timeout 300 --pid "$(cat "$pidfile")"; then
  tail -50 "$data/broker.log"; exit 1
fi
end=$(date +%s%N)
printf 'kafka: broker %s ready at %s in %d ms (pid %s)\n' \
  "$(ls "$here"/lib/kafka_2.13-*.jar | sed 's/.*kafka_2.13-\(.*\)\.jar/\1/')" "$bootstrap" \
  "$(( (end - start) / 1000000 ))" "$(cat "$pidfile")"
