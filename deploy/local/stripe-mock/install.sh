#!/usr/bin/env bash
# Install stripe-mock (Stripe's official API mock, pinned) into .local/bin when missing.
# Idempotent; the Stripe adapter's integration tests call it through their fixture.
set -euo pipefail
VERSION="v0.203.0"
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
BIN="$ROOT/.local/bin/stripe-mock"
STAMP="$ROOT/.local/bin/.stripe-mock-$VERSION"
if [[ -x "$BIN" && -f "$STAMP" ]]; then
  exit 0
fi
mkdir -p "$ROOT/.local/bin"
GOBIN="$ROOT/.local/bin" go install "github.com/stripe/stripe-mock@$VERSION"
touch "$STAMP"
echo "installed stripe-mock $VERSION into $BIN"
