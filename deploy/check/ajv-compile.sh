#!/usr/bin/env bash
# Compile JSON Schemas with ajv in strict mode (draft 2020-12, formats from ajv-formats): an
# unknown keyword, an ambiguous type or an unresolvable $ref is an error. Default: every file
# of schemas/json. Usage: deploy/check/ajv-compile.sh [schema.json ...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
"$here/install.sh"
if [ "$#" -eq 0 ]; then set -- "$repo"/schemas/json/*.json; fi
args=()
for schema in "$@"; do args+=(-s "$(cd "$(dirname "$schema")" && pwd)/$(basename "$schema")"); done
cd "$here"
exec node_modules/.bin/ajv compile --spec=draft2020 --strict=true -c ajv-formats "${args[@]}"
