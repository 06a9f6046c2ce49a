#!/usr/bin/env bash
# Install the Node validators of deploy/check/package-lock.json (ajv-cli + ajv-formats, the
# KEDA and Prometheus-operator CRD models) into deploy/check/node_modules with `npm ci`.
# Idempotent: a no-op while node_modules matches the lock file.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v npm >/dev/null || { echo "deploy/check: npm (Node 20) is not on PATH" >&2; exit 1; }
stamp="$here/node_modules/.installed-lock"
if [ -f "$stamp" ] && cmp -s "$stamp" "$here/package-lock.json"; then
  exit 0
fi
(cd "$here" && npm ci --no-audit --no-fund --silent)
cp "$here/package-lock.json" "$stamp"
