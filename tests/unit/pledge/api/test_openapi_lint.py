"""``/openapi.json`` passes ``redocly lint`` with the recommended rules and no error.

Redocly CLI is pinned in ``tools/redocly/package.json`` (and its lock); this test installs it
with ``npm ci`` when it is missing, so ``make test`` on a fresh clone checks the document.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from services.pledge.api import create_app
from services.pledge.api.config import ApiSettings

TOOL = Path(__file__).resolve().parents[4] / "tools" / "redocly"
REDOCLY = TOOL / "node_modules" / ".bin" / "redocly"

pytestmark = pytest.mark.skipif(
    shutil.which("npm") is None, reason="Node.js (npm) is not installed"
)


def _installed() -> Path:
    if not REDOCLY.exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=TOOL,
            check=True,
            timeout=300,
        )
    return REDOCLY


def test_the_openapi_document_passes_redocly_recommended_rules(tmp_path: Path) -> None:
    redocly = _installed()
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(create_app(ApiSettings()).openapi()))

    run = subprocess.run(
        [str(redocly), "lint", str(document), "--config", str(TOOL / "redocly.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert "Your API description is valid" in run.stdout + run.stderr


def test_probes_take_no_key_and_every_operation_is_described() -> None:
    document = create_app(ApiSettings()).openapi()

    assert document["servers"] and document["tags"]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert document["paths"][path]["get"]["security"] == []
    for operations in document["paths"].values():
        for operation in operations.values():
            assert operation["description"] and operation["tags"]
