"""The Stripe payment gateway, on the official ``stripe`` SDK (``PLEDGEFLOW_GATEWAY=stripe``).

A pledge's ``payment_token`` is a saved Stripe PaymentMethod (``pm_...``) of the backer:

* ``authorize`` (authorize_then_capture, at pledge): a PaymentIntent with
  ``capture_method=manual``, confirmed - the card is checked and the amount held;
* ``capture``: the first attempt captures that PaymentIntent (found again by re-sending its
  creation with the same idempotency key, which Stripe answers with the same object); a retry
  after a failure, possibly with a new payment method, is a new PaymentIntent confirmed and
  captured at once;
* ``void``: cancels the held PaymentIntent (nothing to release when nothing was held);
* ``charge`` (charge_then_refund): a PaymentIntent confirmed with automatic capture;
* ``refund``: a Refund of the capture's PaymentIntent for ``amount``.

Every request carries the call's idempotency key (``Idempotency-Key``). A card decline
(``CardError``) is an answer; any other Stripe error is :class:`GatewayUnavailable`.
Amounts are the same minor units Stripe uses for 0- and 2-decimal currencies (Stripe's
3-decimal currencies require amounts ending in 0).
"""

from __future__ import annotations

from typing import Any

import stripe

from services.settlement.domain import GatewayCall, GatewayResult
from services.settlement.gateway import GatewayUnavailable

__all__ = ["StripeGateway"]


class StripeGateway:
    """A :class:`~services.settlement.gateway.PaymentGateway` on Stripe's API."""

    def __init__(
        self, api_key: str, *, api_base: str | None = None, max_network_retries: int = 2
    ) -> None:
        base: Any = {"api": api_base} if api_base else None
        self._client = stripe.StripeClient(
            api_key,
            base_addresses=base,
            http_client=stripe.HTTPXClient(allow_sync_methods=False),
            max_network_retries=max_network_retries,
        )

    @staticmethod
    def _intent_params(call: GatewayCall, *, manual: bool) -> dict[str, Any]:
        params: dict[str, Any] = {
            "amount": call.amount.amount_minor,
            "currency": call.amount.currency.lower(),
            "confirm": True,
            "capture_method": "manual" if manual else "automatic",
            "metadata": {"campaign_id": call.campaign_id, "pledge_id": call.pledge_id},
            # Saved cards, charged while the backer is away (at the deadline).
            "off_session": True,
        }
        if call.payment_token:
            params["payment_method"] = call.payment_token
        return params

    async def _run(self, call: GatewayCall, request: Any) -> GatewayResult:
        try:
            obj = await request
        except stripe.CardError as exc:
            return GatewayResult(
                call,
                ok=False,
                code=str(exc.code or "card_declined"),
                detail=str(exc.user_message or ""),
            )
        except stripe.StripeError as exc:
            raise GatewayUnavailable(f"stripe: {exc.__class__.__name__}: {exc}") from exc
        return GatewayResult(call, ok=True, reference=str(obj.id))

    async def _held_intent(self, call: GatewayCall) -> Any:
        """The PaymentIntent the authorization created (Stripe replays it for its key)."""
        assert call.authorization_key is not None
        authorize = GatewayCall(
            kind="authorize", campaign_id=call.campaign_id, pledge_id=call.pledge_id,
            amount=call.amount, payment_token=call.payment_token, key=call.authorization_key,
        )  # fmt: skip
        return await self._client.v1.payment_intents.create_async(
            self._intent_params(authorize, manual=True),  # type: ignore[arg-type]
            options={"idempotency_key": call.authorization_key},
        )

    async def authorize(self, call: GatewayCall) -> GatewayResult:
        return await self._run(
            call,
            self._client.v1.payment_intents.create_async(
                self._intent_params(call, manual=True),  # type: ignore[arg-type]
                options={"idempotency_key": call.key},
            ),
        )

    async def capture(self, call: GatewayCall) -> GatewayResult:
        if call.attempt > 1 or call.authorization_key is None:
            return await self.charge(call)

        async def held_then_captured() -> Any:
            intent = await self._held_intent(call)
            return await self._client.v1.payment_intents.capture_async(
                intent.id, options={"idempotency_key": call.key}
            )

        return await self._run(call, held_then_captured())

    async def void(self, call: GatewayCall) -> GatewayResult:
        if call.authorization_key is None:
            return GatewayResult(call, ok=True, reference="nothing_held")

        async def held_then_cancelled() -> Any:
            intent = await self._held_intent(call)
            return await self._client.v1.payment_intents.cancel_async(
                intent.id, options={"idempotency_key": call.key}
            )

        return await self._run(call, held_then_cancelled())

    async def charge(self, call: GatewayCall) -> GatewayResult:
        return await self._run(
            call,
            self._client.v1.payment_intents.create_async(
                self._intent_params(call, manual=False),  # type: ignore[arg-type]
                options={"idempotency_key": call.key},
            ),
        )

    async def refund(self, call: GatewayCall) -> GatewayResult:
        params: dict[str, Any] = {
            "amount": call.amount.amount_minor,
            "metadata": {"campaign_id": call.campaign_id, "pledge_id": call.pledge_id},
        }
        if call.capture_ref:
            params["payment_intent"] = call.capture_ref
        return await self._run(
            call,
            self._client.v1.refunds.create_async(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": call.key},
            ),
        )

    async def aclose(self) -> None:
        return None
