"""The steps every write shares after its body is read: gate, append, answer, store.

A write: authenticate -> read and validate the body (:mod:`~services.pledge.api.reading`)
-> :meth:`WritePipeline.gate` (rate limit, campaign ownership, Idempotency-Key reservation,
in one atomic step) -> :meth:`~WritePipeline.send` the command and await ``acks=all`` ->
the answer (``Prefer: wait``: the processor's decision, read from the read model through the
:class:`~services.pledge.api.ports.DecisionReader`) -> :meth:`~WritePipeline.store` the
response under the Idempotency-Key (queued, not awaited) -> the response leaves.

Tenancy on writes: campaign ids arrive here tenant-qualified (:mod:`schemas.tenancy`), so a
tenant can only name its own campaigns. A write to a campaign that does not exist for the
tenant - neither projected as its own nor launched through the API (the launch marker covers
the milliseconds before the projector shows it) - answers 404 without anything being sent: an
unknown id leaves no lasting state, and another tenant's campaign answers exactly as a free
id does (same status, body and path through the code, so the same timing class).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson

from services.pledge.api.auth import Principal
from services.pledge.api.ports import (
    CommandLog,
    DecisionReader,
    GateResult,
    IngestGate,
    PaymentTokenStore,
    PendingPledge,
)
from services.pledge.api.problems import ProblemError, refusal
from services.pledge.api.reading import Write
from services.pledge.metrics_api import ApiMetrics
from services.streams.log_limits import RepeatedLogFilter

__all__ = ["Accepted", "WritePipeline"]

log = logging.getLogger("pledgeflow.api")
# While the broker is down every retry fails the same way: one line per 10 s says it.
log.addFilter(RepeatedLogFilter(every_s=10.0))

_WAIT_STEPS = (0.002, 0.004, 0.008, 0.015, 0.025)

#: The status and body of an accepted decision, from the decision document.
Accepted = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def _token_store_unavailable() -> ProblemError:
    return ProblemError(
        "unavailable", "the payment token store is unavailable", headers={"Retry-After": "1"}
    )


def _abandon(staged: Awaitable[Any] | None) -> None:
    """Nobody will await ``staged`` (the request answers 503): let it settle quietly."""
    if staged is not None:
        asyncio.ensure_future(staged).add_done_callback(_quiet)


def _quiet(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class WritePipeline:
    """The shared steps of writes, over the ports."""

    def __init__(
        self,
        *,
        bus: CommandLog,
        gate: IngestGate,
        decisions: DecisionReader,
        metrics: ApiMetrics,
        tokens: PaymentTokenStore | None = None,
    ) -> None:
        self.tokens = tokens
        self.bus = bus
        self.ingest_gate = gate
        self.decisions = decisions
        self.metrics = metrics

    async def gate(
        self,
        write: Write,
        campaign_ids: list[str],
        *,
        many: bool = False,
        cost: int = 1,
        launch: bool = False,
    ) -> GateResult:
        """Run the gate: ``ok`` or ``replay``; any other outcome raises its problem."""
        result = await self.ingest_gate.gate(
            key_hash=write.principal.key_hash,
            tenant_id=write.principal.tenant_id,
            idempotency_key=write.idempotency_key,
            fingerprint=write.fingerprint,
            campaign_ids=campaign_ids,
            many=many,
            cost=cost,
            launch=launch,
        )
        match result.outcome:
            case "ok":
                return result
            case "replay":
                self.metrics.idempotent_replays.labels(write.route).inc()
                return result
            case "rate_limited":
                raise self.rate_limited(write.route, result.retry_after_ms)
            case "not_found":
                raise ProblemError("not-found", "no such campaign")
            case "rebuilding":
                raise ProblemError(
                    "unavailable",
                    "the read model is being rebuilt; retry shortly",
                    headers={"Retry-After": "1"},
                )
            case "mismatch":
                raise ProblemError(
                    "idempotency-key-reused",
                    "this Idempotency-Key was used with another request body or path",
                    errors=[
                        {"field": "Idempotency-Key", "message": "already used for another request"}
                    ],
                )
            case _:
                raise ProblemError(
                    "request-in-progress",
                    "the first request with this Idempotency-Key has not finished; retry shortly",
                    headers={"Retry-After": "1"},
                )

    def rate_limited(self, route: str, retry_after_ms: int) -> ProblemError:
        """The 429 of an empty bucket (counted per route)."""
        self.metrics.rate_limited.labels(route).inc()
        seconds = max(1, math.ceil(retry_after_ms / 1000))
        return ProblemError(
            "rate-limited",
            f"rate limit of this API key exceeded; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )

    async def charge(self, principal: Principal, route: str, cost: int = 1) -> None:
        """Take the tokens of a read or of a request refused before the gate; 429 when the
        bucket is empty (so neither is free: a refused request costs what a write does)."""
        await self.charge_key(principal.key_hash, route, cost)

    async def charge_key(self, key_hash: str, route: str, cost: int = 1) -> None:
        """:meth:`charge` of any bucket (e.g. an address's, for unauthenticated requests)."""
        wait_ms = await self.ingest_gate.charge(key_hash=key_hash, cost=cost)
        if wait_ms:
            raise self.rate_limited(route, wait_ms)

    @contextlib.asynccontextmanager
    async def refusals_charged(self, principal: Principal, route: str) -> AsyncIterator[None]:
        """Around the steps before the gate: a request they refuse (bad header, bad body)
        pays a token, and answers 429 instead once the bucket is empty."""
        try:
            yield
        except ProblemError:
            await self.charge(principal, route)
            raise

    async def put_tokens(self, write: Write, tokens: Sequence[tuple[str, str]]) -> None:
        """Store payment tokens and wait for their acknowledgement before the command is sent
        (the settlement fix route: the worker reads the token topic to its end when it reads
        the command); failure -> 503 with the reservation kept retryable like an unsent
        command (:meth:`unsent`: the same request re-sends both - the token is overwritten,
        the command sent or ignored - and another body is still refused)."""
        if not tokens or self.tokens is None:
            return
        try:
            await self.tokens.put(tokens)
        except Exception as exc:
            await self.unsent(write, exc)
            raise _token_store_unavailable() from None

    async def stage_tokens(
        self, write: Write, tokens: Sequence[tuple[str, str]]
    ) -> Awaitable[Any] | None:
        """Start storing a write's payment tokens, to be acknowledged in the same Kafka round
        trip as its commands (sent next, before this request yields): what to pass to
        :meth:`tokens_stored` once the commands are acknowledged, or None (no token). A store
        known to be down before anything is sent -> 503 with nothing sent and the
        reservation kept retryable (:meth:`unsent`)."""
        if not tokens or self.tokens is None:
            return None
        try:
            return self.tokens.stage(tokens)
        except Exception as exc:
            await self.unsent(write, exc)
            raise _token_store_unavailable() from None

    async def tokens_stored(
        self, write: Write, staged: Awaitable[Any], tokens: Sequence[tuple[str, str]]
    ) -> None:
        """Await the tokens :meth:`stage_tokens` started (their commands are acknowledged).
        Not acknowledged: append them again now (same keys: the store is compacted, the same
        token written twice is harmless), so a 2xx never leaves a command without its token;
        still failing -> 503, the reservation kept retryable: the client's retry with the
        same Idempotency-Key sends the command again (ignored as a duplicate) and the token
        again."""
        try:
            await staged
            return
        except Exception as exc:
            self.metrics.token_retries.inc()
            log.warning("payment token not acknowledged with its command; appending again: %r", exc)
        assert self.tokens is not None
        try:
            await self.tokens.put(tokens)
        except Exception as exc:
            await self.unsent(write, exc)
            raise _token_store_unavailable() from None

    async def send(
        self,
        write: Write,
        campaign_id: str,
        value: bytes,
        staged: Awaitable[Any] | None = None,
    ) -> None:
        """Append one command; log unreachable or too slow -> 503 (see :meth:`unsent`).
        ``staged``: the write's tokens in the same round trip (left to settle on a 503)."""
        try:
            await self.bus.send(campaign_id, value)
        except Exception as exc:
            _abandon(staged)
            await self.unsent(write, exc)
            raise ProblemError(
                "unavailable", "the command log is unavailable", headers={"Retry-After": "1"}
            ) from None

    async def send_all(
        self,
        write: Write,
        commands: Sequence[tuple[str, bytes]],
        staged: Awaitable[Any] | None = None,
    ) -> None:
        """Append a batch's commands; any failure -> 503 (a retry of the whole batch is safe:
        items that did reach Kafka are ignored the second time)."""
        try:
            await self.bus.send_all(commands)
        except Exception as exc:
            _abandon(staged)
            await self.unsent(write, exc)
            raise ProblemError(
                "unavailable",
                "the command log is unavailable; retry the whole batch",
                headers={"Retry-After": "1"},
            ) from None

    async def unsent(self, write: Write, exc: Exception) -> None:
        """The command may or may not be in the log: keep the Idempotency-Key for this request
        (same fingerprint) so that a retry sends the same command again at once (the processor
        ignores a command id it has decided), and another body stays refused with 422."""
        self.metrics.unsent.labels(write.route).inc()
        log.warning("command not acknowledged (answered 503): %r", exc)
        try:
            await self.ingest_gate.unsent(
                tenant_id=write.principal.tenant_id,
                idempotency_key=write.idempotency_key,
                fingerprint=write.fingerprint,
            )
        except Exception as redis_exc:  # the reservation then expires after the lock time
            log.warning("idempotency reservation not made retryable: %r", redis_exc)

    def store(
        self,
        write: Write,
        status: int,
        payload: bytes,
        pending: Sequence[PendingPledge] = (),
    ) -> None:
        """Keep the response for replays (and write the pending pledge rows): queued before
        the answer leaves, not awaited (see :meth:`IngestGate.complete`)."""
        self.ingest_gate.complete(
            tenant_id=write.principal.tenant_id,
            idempotency_key=write.idempotency_key,
            fingerprint=write.fingerprint,
            status=status,
            body=payload,
            pending_pledges=pending,
        )

    async def _decision(self, command_id: str, wait: int) -> dict[str, Any] | None:
        """Poll the read model for the processor's decision on ``command_id`` for ``wait`` s."""
        deadline = time.monotonic() + wait
        step = 0
        while True:
            decision = await self.decisions.decision(command_id)
            if decision is not None:
                self.metrics.prefer_wait.labels(decision["outcome"]).inc()
                return decision
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.metrics.prefer_wait.labels("timeout").inc()
                return None
            await asyncio.sleep(min(_WAIT_STEPS[min(step, len(_WAIT_STEPS) - 1)], remaining))
            step += 1

    async def decided(
        self, write: Write, accepted: Accepted, headers: dict[str, str]
    ) -> tuple[int, bytes] | None:
        """Wait per ``Prefer: wait``; (status, body) of the decision, or None on timeout."""
        if write.wait <= 0:
            return None
        headers["Preference-Applied"] = f"wait={write.wait}"
        decision = await self._decision(write.command_id, write.wait)
        if decision is None:
            return None
        if decision["outcome"] == "refused":
            # Details name campaigns by their qualified id: show the tenant its own id.
            detail = (decision.get("detail") or "").replace(f"{write.principal.tenant_id}/", "")
            problem = refusal(decision.get("reason") or "refused", detail)
            return problem.status, orjson.dumps(problem.body(None))
        status, body = accepted(decision)
        return status, orjson.dumps(body)

    async def answer(
        self,
        write: Write,
        accepted: Accepted,
        ids: dict[str, str],
        status_url: str,
        headers: dict[str, str],
        *,
        location: bool,
    ) -> tuple[int, bytes]:
        """The answer to a write: the decision when waited for, else 202 + the status URL."""
        decided = await self.decided(write, accepted, headers)
        if decided is not None:
            return decided
        if location:
            headers["Location"] = status_url
        return 202, orjson.dumps({**ids, "status": "pending", "status_url": status_url})

    async def pledge_answer(
        self,
        write: Write,
        campaign_id: str,
        pledge_id: str,
        done_status: int,
        done_label: str,
        headers: dict[str, str],
        *,
        location: bool,
    ) -> tuple[int, bytes]:
        """:meth:`answer` for a pledge write (make or cancel)."""
        ids = {"pledge_id": pledge_id, "campaign_id": campaign_id}
        return await self.answer(
            write,
            lambda d: (done_status, {**ids, "status": done_label, "seq": d["seq"]}),
            ids,
            f"/v1/campaigns/{campaign_id}/pledges/{pledge_id}",
            headers,
            location=location,
        )
