"""The API clients of the CLI against a real API with a key it does not know: one line
naming ``--api-key``, exit 2. (``simulate`` died with a 401 traceback from its first
registration, exit 1; ``ledger --api-url`` said ``ledger: api: 401 ...``, exit 1.)"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from tests.support.api import api_settings, create_topics, uvicorn_server
from tests.support.infra import unique_name

pytestmark = pytest.mark.integration


async def test_a_key_the_api_does_not_know_is_one_line(
    broker: Any, bootstrap: str, redis_server: str
) -> None:
    settings = api_settings(bootstrap, redis_server, unique_name("simkey"))
    await create_topics(settings)
    async with uvicorn_server(settings) as base:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "simulate", "--api", base,
            "--api-key", "not-a-key-0123456789", "--duration", "5", "--rate", "1",
            "--campaigns", "1", "--no-webhooks", "--no-audit", "--settle-timeout", "0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    lines = (out + err).decode().strip().splitlines()
    assert process.returncode == 2, lines[-5:]
    assert lines == [f"error: --api-key: the API at {base} does not accept this key"], lines[-5:]


async def test_ledger_with_a_key_the_api_does_not_know_is_one_line(
    broker: Any, bootstrap: str, redis_server: str
) -> None:
    settings = api_settings(bootstrap, redis_server, unique_name("ledgerkey"))
    await create_topics(settings)
    async with uvicorn_server(settings) as base:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "ledger", "--campaign", "c-1",
            "--api-url", base, "--api-key", "not-a-key-0123456789",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    lines = (out + err).decode().strip().splitlines()
    assert process.returncode == 2, lines[-5:]
    assert len(lines) == 1 and lines[0].startswith("ledger: api-key: "), lines
