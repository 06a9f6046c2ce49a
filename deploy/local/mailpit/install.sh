#!/usr/bin/env bash
# Install mailpit (the local SMTP server + web UI that notify sends e-mail to) into .local/bin.
# Pinned and idempotent: does nothing when the pinned version is already there.
set -euo pipefail
version="v1.33.1"
repo="$(cd "$(dirname "$0")/../../.." && pwd)"
bin="$repo/.local/bin"
stamp="$bin/.mailpit-$version"
if [ -x "$bin/mailpit" ] && [ -e "$stamp" ]; then
  exit 0
fi
mkdir -p "$bin"
GOBIN="$bin" go install "github.com/axllent/mailpit@$version"
rm -f "$bin"/.mailpit-v*
touch "$stamp"
