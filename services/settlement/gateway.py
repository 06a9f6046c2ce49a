"""The payment-gateway port, and the test-token rules every non-Stripe adapter follows.

Every call carries an idempotency key (``GatewayCall.key``, derived from campaign, pledge,
action and attempt): an adapter must answer a key it has seen with the answer it gave the
first time and move no money again. A decline is an answer (``GatewayResult.ok`` false, with
a snake_case ``code``); :class:`GatewayUnavailable` is for infrastructure trouble, after which
the worker simply derives the same call again later.

Test tokens, in the style of card-network test cards: ``tok_ok`` (and no token) always
succeed; ``tok_declined`` is declined at every capture or charge; ``tok_fail_once`` fails the
first capture or charge of a pledge and succeeds on retry; ``tok_slow`` answers after the
adapter's slow delay. Any other token succeeds.
"""

from __future__ import annotations

from typing import Protocol

from services.settlement.domain import GatewayCall, GatewayResult

__all__ = [
    "DECLINED_TOKEN",
    "FAIL_ONCE_TOKEN",
    "SLOW_TOKEN",
    "GatewayUnavailable",
    "PaymentGateway",
    "call_gateway",
    "token_answer",
]

DECLINED_TOKEN = "tok_declined"
FAIL_ONCE_TOKEN = "tok_fail_once"
SLOW_TOKEN = "tok_slow"


class GatewayUnavailable(Exception):
    """The gateway could not be reached or answered garbage: nothing is known to have moved,
    and the same call (same key) may be made again."""


class PaymentGateway(Protocol):
    """What settlement needs from a payment processor; each method is idempotent per key."""

    async def authorize(self, call: GatewayCall) -> GatewayResult:
        """Verify (and hold, where the processor does) the pledge's payment method."""
        ...

    async def capture(self, call: GatewayCall) -> GatewayResult:
        """Collect an authorized pledge."""
        ...

    async def void(self, call: GatewayCall) -> GatewayResult:
        """Release an authorization (or give up on a pledge) without collecting."""
        ...

    async def charge(self, call: GatewayCall) -> GatewayResult:
        """Collect a pledge at once (charge_then_refund)."""
        ...

    async def refund(self, call: GatewayCall) -> GatewayResult:
        """Pay back ``call.amount`` of the capture ``call.capture_ref``."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


async def call_gateway(gateway: PaymentGateway, call: GatewayCall) -> GatewayResult:
    """Dispatch ``call`` to the gateway method of its kind."""
    match call.kind:
        case "authorize":
            return await gateway.authorize(call)
        case "capture":
            return await gateway.capture(call)
        case "void":
            return await gateway.void(call)
        case "charge":
            return await gateway.charge(call)
        case "refund":
            return await gateway.refund(call)


def token_answer(call: GatewayCall, failed_collections: int) -> tuple[bool, str, str]:
    """``(ok, code, detail)`` for ``call`` under the test-token rules, given how many earlier
    captures or charges of this pledge failed."""
    if call.kind in ("capture", "charge"):
        if call.payment_token == DECLINED_TOKEN:
            return False, "card_declined", "the card was declined (test token tok_declined)"
        if call.payment_token == FAIL_ONCE_TOKEN and failed_collections == 0:
            return False, "processing_error", "a transient processing error (tok_fail_once)"
    return True, "", ""
