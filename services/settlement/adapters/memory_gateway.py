"""An in-memory payment gateway for unit tests: the sandbox's rules without Redis.

It keeps what a test asserts on: every answer by idempotency key, how many captures or
charges of each pledge succeeded (exactly one per pledge is the invariant), and every call
actually executed (a replayed key is not executed again).
"""

from __future__ import annotations

from collections import Counter

from services.settlement.domain import GatewayCall, GatewayResult
from services.settlement.gateway import token_answer

__all__ = ["MemoryGateway"]


class MemoryGateway:
    """A :class:`~services.settlement.gateway.PaymentGateway` held in dicts."""

    def __init__(self) -> None:
        self.answers: dict[str, GatewayResult] = {}
        self.failed: Counter[str] = Counter()
        self.collected: Counter[str] = Counter()
        self.refunded_minor: Counter[str] = Counter()
        self.executed: list[GatewayCall] = []

    def answer(self, call: GatewayCall) -> GatewayResult:
        """The (idempotent) answer to ``call``, synchronously."""
        known = self.answers.get(call.key)
        if known is not None:
            return GatewayResult(call, known.ok, known.reference, known.code, known.detail)
        pledge = f"{call.campaign_id}/{call.pledge_id}"
        ok, code, detail = token_answer(call, self.failed[pledge])
        self.executed.append(call)
        if call.kind in ("capture", "charge"):
            if ok:
                self.collected[pledge] += 1
            else:
                self.failed[pledge] += 1
        elif call.kind == "refund" and ok:
            self.refunded_minor[pledge] += call.amount.amount_minor
        result = GatewayResult(call, ok, f"mem_{call.kind}_{len(self.answers) + 1}", code, detail)
        self.answers[call.key] = result
        return result

    async def authorize(self, call: GatewayCall) -> GatewayResult:
        return self.answer(call)

    async def capture(self, call: GatewayCall) -> GatewayResult:
        return self.answer(call)

    async def void(self, call: GatewayCall) -> GatewayResult:
        return self.answer(call)

    async def charge(self, call: GatewayCall) -> GatewayResult:
        return self.answer(call)

    async def refund(self, call: GatewayCall) -> GatewayResult:
        return self.answer(call)

    async def aclose(self) -> None:
        return None
