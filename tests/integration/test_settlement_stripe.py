"""The Stripe adapter against stripe-mock: every gateway call is a request Stripe's API
accepts (stripe-mock validates against Stripe's OpenAPI spec; it keeps no state)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from schemas.money import Money
from services.settlement.adapters.stripe_gateway import StripeGateway
from services.settlement.domain import CallKind, GatewayCall
from services.settlement.gateway import GatewayUnavailable, call_gateway
from tests.support.api import free_port
from tests.support.stripe_mock import stripe_mock


@pytest.fixture(scope="module")
def stripe_base() -> Iterator[str]:
    with stripe_mock() as base:
        yield base


@pytest.fixture
async def stripe_gateway(stripe_base: str) -> AsyncIterator[StripeGateway]:
    gateway = StripeGateway("sk_test_123", api_base=stripe_base, max_network_retries=0)
    yield gateway
    await gateway.aclose()


def call(
    kind: CallKind, *, attempt: int = 1, authorizes: bool = True, ref: str | None = None
) -> GatewayCall:
    return GatewayCall(
        kind=kind, campaign_id="c1", pledge_id="p1",
        amount=Money(amount_minor=2_500, currency="EUR"), payment_token="pm_card_visa",
        key=f"c1/p1/{kind}/{attempt}", attempt=attempt,
        authorization_key="c1/p1/authorize/1" if authorizes else None, capture_ref=ref,
    )  # fmt: skip


async def test_authorize_creates_a_manual_capture_payment_intent(
    stripe_gateway: StripeGateway,
) -> None:
    result = await stripe_gateway.authorize(call("authorize"))
    assert result.ok and result.reference.startswith("pi_")


@pytest.mark.parametrize(
    ("kind", "attempt", "authorizes"),
    [
        ("capture", 1, True),  # captures the held PaymentIntent
        ("capture", 2, True),  # a retry: a new PaymentIntent, captured at once
        ("void", 1, True),  # cancels the held PaymentIntent
        ("charge", 1, False),  # charge_then_refund
    ],
)
async def test_each_call_is_a_valid_stripe_request(
    stripe_gateway: StripeGateway, kind: CallKind, attempt: int, authorizes: bool
) -> None:
    result = await call_gateway(stripe_gateway, call(kind, attempt=attempt, authorizes=authorizes))
    assert result.ok and result.reference.startswith("pi_")


async def test_refund_pays_back_the_captured_payment_intent(stripe_gateway: StripeGateway) -> None:
    result = await stripe_gateway.refund(call("refund", ref="pi_123"))
    assert result.ok and result.reference.startswith("re_")


async def test_void_with_nothing_held_is_a_no_op(stripe_gateway: StripeGateway) -> None:
    result = await stripe_gateway.void(call("void", authorizes=False))
    assert (result.ok, result.reference) == (True, "nothing_held")


async def test_an_unreachable_stripe_is_gateway_unavailable() -> None:
    gateway = StripeGateway(
        "sk_test_123", api_base=f"http://127.0.0.1:{free_port()}", max_network_retries=0
    )
    with pytest.raises(GatewayUnavailable, match="APIConnectionError"):
        await gateway.charge(call("charge", authorizes=False))
