"""``pledgeflow readmodel rebuild`` and ``pledgeflow settlement readmodel rebuild`` check their
sources before they wipe: a topic prefix without the topics, or a broker out of reach, leaves the
read model as it was and is one line naming the setting, exit 2. (They used to wipe first, then
die with a traceback, or wait forever on the missing topics, leaving the read model empty.)"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from services.pledge.adapters.redis_readmodel import Keys
from services.settlement.adapters.redis_readmodel import SettlementKeys
from tests.support.api import free_port
from tests.support.infra import unique_name

pytestmark = pytest.mark.integration

COMMANDS = {
    "campaign": (["readmodel", "rebuild"], lambda prefix: Keys(prefix).projector_epoch()),
    "settlement": (
        ["settlement", "readmodel", "rebuild"],
        lambda prefix: SettlementKeys(prefix).epoch(),
    ),
}


@pytest.fixture
async def marked(redis_server: str) -> AsyncIterator[tuple[str, aioredis.Redis]]:
    """A prefix (no topics under it) whose read models hold their epoch markers."""
    prefix = unique_name("pre") + "."
    client = aioredis.Redis.from_url(redis_server)
    for _, marker in COMMANDS.values():
        await client.set(marker(prefix), b"kept")
    try:
        yield prefix, client
    finally:
        for _, marker in COMMANDS.values():
            await client.delete(marker(prefix))
        await client.aclose()


async def rebuild(args: list[str], env: dict[str, str]) -> tuple[int | None, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(process.communicate(), timeout=40)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{args} did not exit within 40 s") from None
    return process.returncode, err.decode(errors="replace").strip().splitlines()


@pytest.mark.parametrize("which", sorted(COMMANDS))
async def test_missing_topics_leave_the_read_model_and_name_the_prefix(
    which: str, bootstrap: str, redis_server: str, marked: tuple[str, aioredis.Redis]
) -> None:
    prefix, client = marked
    args, marker = COMMANDS[which]
    env = {
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": bootstrap,
        "PLEDGEFLOW_REDIS_URL": redis_server,
        "PLEDGEFLOW_TOPIC_PREFIX": prefix,
    }
    code, lines = await rebuild(args, env)
    assert code == 2 and len(lines) == 1, lines[-5:]
    assert "PLEDGEFLOW_TOPIC_PREFIX" in lines[0] and prefix in lines[0], lines
    assert await client.get(marker(prefix)) == b"kept"


@pytest.mark.parametrize("which", sorted(COMMANDS))
async def test_an_unreachable_broker_leaves_the_read_model(
    which: str, redis_server: str, marked: tuple[str, aioredis.Redis]
) -> None:
    prefix, client = marked
    args, marker = COMMANDS[which]
    address = f"127.0.0.1:{free_port()}"
    env = {
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": address,
        "PLEDGEFLOW_REDIS_URL": redis_server,
        "PLEDGEFLOW_TOPIC_PREFIX": prefix,
    }
    code, lines = await rebuild(args, env)
    assert code == 2 and len(lines) == 1, lines[-5:]
    assert "PLEDGEFLOW_KAFKA_BOOTSTRAP" in lines[0] and address in lines[0], lines
    assert await client.get(marker(prefix)) == b"kept"


@pytest.mark.parametrize("which", sorted(COMMANDS))
async def test_an_unreachable_redis_is_one_line(which: str, bootstrap: str) -> None:
    args, _ = COMMANDS[which]
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = {
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": bootstrap,
        "PLEDGEFLOW_REDIS_URL": url,
        "PLEDGEFLOW_TOPIC_PREFIX": unique_name("pre") + ".",
    }
    code, lines = await rebuild(args, env)
    assert code == 2 and len(lines) == 1, lines[-5:]
    assert "PLEDGEFLOW_REDIS_URL" in lines[0] and url in lines[0], lines
