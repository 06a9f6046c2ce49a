#!/usr/bin/env bash
# Make `prometheus` and `promtool` available: as root, installs Debian's `prometheus` package
# when either is missing (idempotent; a no-op once installed). Used by `make run`,
# `make deploy-check` and the tests that need a real Prometheus or promtool.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "prometheus: installing Debian's prometheus package" >&2
  export DEBIAN_FRONTEND=noninteractive
  (apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1) \
    || (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null)
  # The package's service is not wanted (nothing here uses systemd); stop it if it started.
  command -v prometheus >/dev/null && command -v promtool >/dev/null && exit 0
fi
echo "prometheus: prometheus/promtool not on PATH; install them (Debian: sudo apt-get install prometheus)" >&2
exit 1
