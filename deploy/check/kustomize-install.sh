#!/usr/bin/env bash
# kustomize (pinned) into .local/bin with `go install`; a no-op once there. Prints its path.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$repo/.local/bin/kustomize"
if [ ! -x "$bin" ]; then
  command -v go >/dev/null || { echo "kustomize: go is not on PATH" >&2; exit 1; }
  GOBIN="$repo/.local/bin" go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1 >&2
fi
echo "$bin"
