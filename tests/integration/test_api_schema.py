"""schemathesis against /openapi.json of a real uvicorn server (with processor and projectors):
no 5xx for any generated input, every response matches the documented schema, and auth, the
required headers and the allowed methods are enforced on every operation (the settlement and
notify routes included: they are in /openapi.json). Not covered: stateful sequences (the
schema has no OpenAPI links, so schemathesis' stateful phase has nothing to follow), and
negative_data_rejection (the batch endpoint answers invalid items per item, 202, by design)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import (
    KEY_A,
    api_settings,
    create_topics,
    processor,
    projector,
    settlement_projector,
    settlement_settings_for,
    uvicorn_server,
)
from tests.support.infra import kafka_bootstrap, redis_url, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        # Every operation refuses a request without its key, without a required header
        # (Idempotency-Key) and with a method it does not serve (405, not 404 or 500).
        "ignored_auth",
        "missing_required_header",
        "unsupported_method",
    ]
)


async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    broker: Any, redis_server: str, tmp_path: Path
) -> None:
    # Waits are capped at 2 s so that a generated `Prefer: wait=10` on a command the processor
    # answers with no event (closing an unknown campaign) does not dominate the run.
    settings = api_settings(
        kafka_bootstrap(), redis_url(), unique_name("st"), api_max_wait_seconds=2
    )
    await create_topics(settings)
    st = Path(sys.executable).with_name("st")
    async with (
        processor(settings),
        projector(settings),
        settlement_projector(settlement_settings_for(settings)),
        uvicorn_server(settings) as base,
    ):
        proc = await asyncio.create_subprocess_exec(
            str(st), "run", f"{base}/openapi.json",
            "-H", f"Authorization: Bearer {KEY_A}",
            "--max-examples", "30",
            "--phases", "examples,coverage,fuzzing",
            "--checks", CHECKS,
            "--request-timeout", "10",
            "--generation-database", "none",
            "--seed", "20260101",
            "--no-color",
            # One worker: CPython 3.11's ast.parse is not thread-safe, and hypothesis parses
            # lambdas while describing them ("AST constructor recursion depth mismatch").
            "--workers", "1",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )  # fmt: skip
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=110)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "Test cases:" in text
