"""ajv, a JavaScript validator, compiles every exported schema in strict mode.

deploy/check/ajv-compile.sh installs ajv-cli + ajv-formats from deploy/check/package-lock.json
(npm ci, Node 20 on PATH) and compiles with --spec=draft2020 --strict=true.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from schemas.jsonschema import JSON_DIR

AJV = Path(__file__).resolve().parents[3] / "deploy" / "check" / "ajv-compile.sh"


def _compile(*schemas: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AJV), *map(str, schemas)], capture_output=True, text=True, timeout=300
    )


def test_ajv_strict_compiles_every_exported_schema() -> None:
    schemas = sorted(JSON_DIR.glob("*.json"))
    result = _compile(*schemas)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" is valid") == len(schemas), result.stdout


def test_ajv_strict_refuses_an_unknown_keyword(tmp_path: Path) -> None:
    """The check has teeth: the old Command.json's OpenAPI `discriminator` is refused."""
    schema = tmp_path / "discriminated.json"
    schema.write_text(
        json.dumps(
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "oneOf": [{"type": "string"}, {"type": "integer"}],
                "discriminator": {"propertyName": "kind"},
            }
        )
    )
    result = _compile(schema)
    assert result.returncode != 0
    assert "discriminator" in result.stdout + result.stderr
