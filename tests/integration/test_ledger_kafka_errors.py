"""``pledgeflow ledger --campaign ID`` reading Kafka (the auditor's tool): a wrong topic prefix
or an unreachable broker is one line naming the setting, exit 2, promptly; never a traceback,
never a loop that retries a missing topic forever (it used to print "Topic ... not found in
cluster metadata" without end)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from tests.support.api import free_port
from tests.support.infra import unique_name

pytestmark = pytest.mark.integration


async def ledger(env: dict[str, str]) -> tuple[int | None, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "ledger", "--campaign", "c-1",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(process.communicate(), timeout=40)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("pledgeflow ledger did not exit within 40 s") from None
    return process.returncode, err.decode(errors="replace").strip().splitlines()


async def test_a_topic_prefix_without_topics_is_one_line(bootstrap: str) -> None:
    prefix = unique_name("nolog") + "."  # no topic is ever made under it
    code, lines = await ledger(
        {"PLEDGEFLOW_KAFKA_BOOTSTRAP": bootstrap, "PLEDGEFLOW_TOPIC_PREFIX": prefix}
    )
    assert code == 2, lines[-5:]
    assert len(lines) == 1 and lines[0].startswith("ledger: "), lines[-5:]
    assert prefix in lines[0] and "PLEDGEFLOW_TOPIC_PREFIX" in lines[0]


async def test_an_unreachable_broker_is_one_line() -> None:
    address = f"127.0.0.1:{free_port()}"
    code, lines = await ledger({"PLEDGEFLOW_KAFKA_BOOTSTRAP": address})
    assert code == 2, lines[-5:]
    assert len(lines) == 1 and lines[0].startswith("ledger: "), lines[-5:]
    assert address in lines[0] and "PLEDGEFLOW_KAFKA_BOOTSTRAP" in lines[0]
