#!/usr/bin/env bash
# Fetch the Kafka broker jars from Maven Central into lib/ with the machine's Maven.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v mvn >/dev/null || ! command -v java >/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "kafka: installing Debian's Java 17 and Maven"
    apt-get update -q >/dev/null && apt-get install -y -q openjdk-17-jdk-headless maven >/dev/null
  else
    echo "kafka: Java 17 and Maven are needed (Debian: sudo apt-get install openjdk-17-jdk-headless maven)" >&2
    exit 1
  fi
fi
cd "$here" && mvn -q -B dependency:copy-dependencies
