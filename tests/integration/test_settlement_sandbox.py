"""The sandbox gateway on the real Redis: test tokens, idempotency keys, restart survival."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from schemas.money import Money
from services.settlement.adapters.sandbox_gateway import SandboxGateway
from services.settlement.domain import CallKind, GatewayCall
from services.settlement.gateway import GatewayUnavailable, call_gateway


@pytest.fixture
async def sandbox(redis_server: str, unique: str) -> AsyncIterator[SandboxGateway]:
    gateway = SandboxGateway(aioredis.Redis.from_url(redis_server), prefix=f"{unique}:sbx:")
    yield gateway
    await gateway.forget()
    await gateway.aclose()


def call(kind: CallKind, token: str | None, attempt: int = 1, pledge: str = "p1") -> GatewayCall:
    return GatewayCall(
        kind=kind, campaign_id="c1", pledge_id=pledge,
        amount=Money(amount_minor=2_500, currency="EUR"), payment_token=token,
        key=f"c1/{pledge}/{kind}/{attempt}", attempt=attempt,
    )  # fmt: skip


@pytest.mark.parametrize("token", ["tok_ok", None, "tok_visa_123"])
async def test_ordinary_tokens_are_captured(sandbox: SandboxGateway, token: str | None) -> None:
    result = await sandbox.capture(call("capture", token))
    assert result.ok and result.reference.startswith("sbx_capture_")
    assert (await sandbox.pledge_counts("c1", "p1"))["collected"] == 1


async def test_tok_declined_is_declined_at_every_capture(sandbox: SandboxGateway) -> None:
    for attempt in (1, 2, 3):
        result = await sandbox.capture(call("capture", "tok_declined", attempt))
        assert (result.ok, result.code) == (False, "card_declined")
    assert await sandbox.pledge_counts("c1", "p1") == {"failed": 3}


async def test_tok_declined_is_still_verified(sandbox: SandboxGateway) -> None:
    assert (await sandbox.authorize(call("authorize", "tok_declined"))).ok


async def test_tok_fail_once_fails_the_first_capture_and_succeeds_on_retry(
    sandbox: SandboxGateway,
) -> None:
    first = await sandbox.capture(call("capture", "tok_fail_once", 1))
    second = await sandbox.capture(call("capture", "tok_fail_once", 2))
    assert (first.ok, first.code, second.ok) == (False, "processing_error", True)


async def test_a_key_seen_again_gets_the_first_answer_and_moves_no_money(
    sandbox: SandboxGateway,
) -> None:
    first = await sandbox.capture(call("capture", "tok_fail_once", 1))
    again = await sandbox.capture(call("capture", "tok_fail_once", 1))
    assert (again.ok, again.code, again.reference) == (first.ok, first.code, first.reference)
    assert await sandbox.pledge_counts("c1", "p1") == {"failed": 1}


async def test_concurrent_calls_with_one_key_capture_once(sandbox: SandboxGateway) -> None:
    results = await asyncio.gather(*(sandbox.capture(call("capture", "tok_ok")) for _ in range(20)))
    assert len({r.reference for r in results}) == 1
    assert (await sandbox.pledge_counts("c1", "p1"))["collected"] == 1


async def test_answers_survive_a_new_gateway_on_the_same_redis(
    sandbox: SandboxGateway, redis_server: str, unique: str
) -> None:
    first = await sandbox.capture(call("capture", "tok_fail_once", 1))
    restarted = SandboxGateway(aioredis.Redis.from_url(redis_server), prefix=f"{unique}:sbx:")
    try:
        again = await restarted.capture(call("capture", "tok_fail_once", 1))
        retry = await restarted.capture(call("capture", "tok_fail_once", 2))
    finally:
        await restarted.aclose()
    assert (again.ok, again.reference) == (first.ok, first.reference)
    assert retry.ok  # the earlier failure is remembered across the restart


async def test_refunds_and_voids_are_recorded(sandbox: SandboxGateway) -> None:
    await call_gateway(sandbox, call("charge", "tok_ok"))
    refund = await call_gateway(sandbox, call("refund", "tok_ok"))
    await call_gateway(sandbox, call("void", "tok_ok", pledge="p2"))
    assert refund.ok
    assert await sandbox.pledge_counts("c1", "p1") == {"collected": 1, "refunded_minor": 2_500}
    assert await sandbox.pledge_counts("c1", "p2") == {"void": 1}


async def test_latency_and_tok_slow_delay_the_answer(redis_server: str, unique: str) -> None:
    gateway = SandboxGateway(
        aioredis.Redis.from_url(redis_server), prefix=f"{unique}:slow:",
        latency_seconds=0.05, slow_seconds=0.3,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    try:
        start = loop.time()
        await gateway.capture(call("capture", "tok_ok"))
        fast = loop.time() - start
        start = loop.time()
        await gateway.capture(call("capture", "tok_slow", pledge="p2"))
        slow = loop.time() - start
    finally:
        await gateway.forget()
        await gateway.aclose()
    # Behaviour, not a speed target: the configured delays are waited for.
    assert fast >= 0.05 and slow >= 0.35


async def test_an_unreachable_redis_is_gateway_unavailable() -> None:
    from tests.support.api import free_port

    gateway = SandboxGateway(aioredis.Redis(host="127.0.0.1", port=free_port()))
    try:
        with pytest.raises(GatewayUnavailable, match="sandbox gateway"):
            await gateway.capture(call("capture", "tok_ok"))
    finally:
        await gateway.aclose()
