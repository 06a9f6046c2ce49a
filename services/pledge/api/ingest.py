"""What each endpoint does, between HTTP and the adapters. The API never decides a pledge.

A write: authenticate -> read and validate the body -> one Redis script (rate limit, campaign
ownership, Idempotency-Key reservation) -> append the command to ``pledge-commands`` and await
``acks=all`` -> (``Prefer: wait``: wait for the processor's decision in the read model) ->
store the response under the Idempotency-Key -> answer.

The command id is ``uuid5(tenant, Idempotency-Key)``, and generated pledge/campaign ids derive
from it, so a retried request produces the very same command, which the processor ignores the
second time.

Tenancy on writes: a campaign the read model knows and that belongs to another tenant answers
404 without anything being sent. A campaign the read model does not know yet (launched a few
milliseconds ago, or never) is not refused here: the command goes to the processor, which owns
the truth and refuses with ``tenant_mismatch`` or ``campaign_not_found``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

import orjson
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from schemas.commands import CancelPledge, CloseCampaign, LaunchCampaign, encode_command
from schemas.money import FeeSchedule
from services.pledge.adapters.command_bus import CommandBus
from services.pledge.adapters.redis_ingest import GateResult, IngestStore
from services.pledge.adapters.redis_readmodel import ReadModelStore
from services.pledge.api.auth import ApiKeys, Principal
from services.pledge.api.batch import Fields, ItemEncoder, model_fields, plain_item
from services.pledge.api.models import (
    BatchItem,
    CancelRequest,
    CloseRequest,
    LaunchRequest,
    PledgeRequest,
)
from services.pledge.api.problems import (
    PROBLEM_MEDIA_TYPE,
    ProblemError,
    field_errors,
    problem_body,
    refusal,
    validation_problem,
)
from services.pledge.metrics_api import ApiMetrics

__all__ = ["COMMAND_NAMESPACE", "Ingest", "command_id_for", "parse_prefer_wait"]

log = logging.getLogger("pledgeflow.api")

#: uuid5 namespace of command ids (uuid5(NAMESPACE_URL, "https://pledgeflow.dev/ns/commands")).
COMMAND_NAMESPACE = uuid5(
    UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8"), "https://pledgeflow.dev/ns/commands"
)
_NAMESPACE_BYTES = COMMAND_NAMESPACE.bytes
_JSON = "application/json"
_JSON_BYTES = b"application/json"
_PROBLEM_BYTES = PROBLEM_MEDIA_TYPE.encode()
_WAIT_STEPS = (0.002, 0.004, 0.008, 0.015, 0.025)


def command_id_for(tenant_id: str, idempotency_key: str, index: int | None = None) -> str:
    """Deterministic command id: the same tenant + key (+ batch index) always gives the same."""
    name = (
        f"{tenant_id}\n{idempotency_key}"
        if index is None
        else f"{tenant_id}\n{idempotency_key}\n{index}"
    )
    return _uuid5(hashlib.sha1(_NAMESPACE_BYTES + name.encode()))


#: The RFC 4122 variant bits (10xx) set on the first hex digit of the clock sequence.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _batch_command_ids(tenant_id: str, idempotency_key: str, indexes: list[int]) -> list[str]:
    """``command_id_for(tenant_id, idempotency_key, i)`` for every ``i``, hashing the shared
    prefix once."""
    copy = hashlib.sha1(_NAMESPACE_BYTES + f"{tenant_id}\n{idempotency_key}\n".encode()).copy
    variant = _VARIANT
    out = []
    for index in indexes:
        digest = copy()
        digest.update(b"%d" % index)
        x = digest.hexdigest()  # as _uuid5, inlined: this runs for every item of a batch
        out.append(f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{variant[x[16]]}{x[17:20]}-{x[20:32]}")
    return out


def _uuid5(digest: Any) -> str:
    """``str(uuid.uuid5(...))`` from the SHA-1 of namespace + name, without building a UUID
    object (a third of a batch item's CPU): version 5 and the variant set on the hex text."""
    x = digest.hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


#: (Unix second, its canonical text up to the seconds) of the last :func:`issued_at` call.
_clock: tuple[int, str] = (-1, "")


def timestamp_text(ns: int) -> str:
    """``format_timestamp`` of the UTC instant ``ns`` nanoseconds after the epoch, truncated to
    microseconds (a test pins the two); the seconds' text is reused within a second."""
    global _clock
    second, rest = divmod(ns, 1_000_000_000)
    if second != _clock[0]:
        _clock = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_clock[1]}.{rest // 1000:06d}Z"


def issued_at() -> str:
    """The canonical text of now (a command's ``issued_at``) without a datetime round trip."""
    return timestamp_text(time.time_ns())


def _plain_pledge(raw: bytes, campaign_id: str) -> Fields | None:
    """:func:`plain_item` of a single pledge body (None: let pydantic judge it)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or "campaign_id" in doc:
        return None
    doc["campaign_id"] = campaign_id
    return plain_item(doc)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def parse_prefer_wait(header: str | None, max_wait: int) -> int:
    """Seconds of ``Prefer: wait=N`` (RFC 7240), capped at ``max_wait``; 0 when absent/invalid."""
    if not header:
        return 0
    for part in header.replace(";", ",").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "wait":
            value = value.strip().strip('"')
            if value.isdigit():
                return min(int(value), max_wait)
    return 0


def _idempotency_key(raw: str | None) -> str:
    if raw is None:
        raise ProblemError(
            "idempotency-key-required",
            "every write needs an Idempotency-Key header (a unique string per operation)",
            errors=[{"field": "Idempotency-Key", "message": "header is required"}],
        )
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]  # RFC 8941 sf-string form
    # Visible ASCII is 33..126: ASCII, printable, and not a space.
    if not (1 <= len(key) <= 255) or not (key.isascii() and key.isprintable()) or " " in key:
        raise ProblemError(
            "idempotency-key-required",
            "Idempotency-Key must be 1-255 visible ASCII characters",
            errors=[{"field": "Idempotency-Key", "message": "1-255 visible ASCII characters"}],
        )
    return key


def _stored_response(stored: bytes) -> Response:
    status = int(stored[:3])
    return Response(
        stored[3:],
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE if status >= 400 else _JSON,
        headers={"Idempotent-Replayed": "true"},
    )


class RawResponse(Response):
    """A response whose header list the caller built (no header mapping to re-encode)."""

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.body = body
        self.raw_headers = headers
        self.background = None


def _raw_headers(
    status: int, body: bytes, extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The header list Starlette's ``Response`` would send: extra headers, length, type."""
    media = _PROBLEM_BYTES if status >= 400 else _JSON_BYTES
    return [*extra, (b"content-length", b"%d" % len(body)), (b"content-type", media)]


def _latin1(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


@dataclass(frozen=True, slots=True)
class _Write:
    """One reserved write request."""

    principal: Principal
    idempotency_key: str
    fingerprint: str
    command_id: str
    correlation_id: str
    wait: int
    route: str


class Ingest:
    """The endpoints' behaviour; one per app, holding the adapters."""

    def __init__(
        self,
        *,
        keys: ApiKeys,
        bus: CommandBus,
        store: IngestStore,
        readmodel: ReadModelStore,
        metrics: ApiMetrics,
        max_body_bytes: int,
        max_wait_seconds: int,
        batch_max_items: int,
    ) -> None:
        self.keys = keys
        self.bus = bus
        self.store = store
        self.readmodel = readmodel
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_wait_seconds = max_wait_seconds
        self.batch_max_items = batch_max_items

    # --- shared steps ----------------------------------------------------------------------

    def authenticate(self, request: Request) -> Principal:
        return self.keys.authenticate(request.headers.get("authorization"))

    async def read_body(self, request: Request) -> bytes:
        """The body, refusing more than ``max_body_bytes`` (413) and non-JSON types (415)."""
        headers = request.headers
        return await self._read_raw(
            headers.get("content-type"), headers.get("content-length"), request.receive
        )

    async def _read_raw(
        self, content_type: str | None, length: str | None, receive: Receive
    ) -> bytes:
        """:meth:`read_body` from the header values and the ASGI ``receive``."""
        if content_type is not None:
            media = content_type.partition(";")[0].strip().lower()
            if media != _JSON and not media.endswith("+json"):
                raise ProblemError("unsupported-media-type", "send application/json")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise ProblemError(
                "payload-too-large", f"the body limit is {self.max_body_bytes} bytes"
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.request":
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise ProblemError(
                        "payload-too-large", f"the body limit is {self.max_body_bytes} bytes"
                    )
                if not message.get("more_body", False):
                    if not chunks:
                        return chunk
                    chunks.append(chunk)
                    return b"".join(chunks)
                chunks.append(chunk)
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()

    def _begin(
        self,
        request: Request,
        principal: Principal,
        body: bytes,
        route: str,
        path: str | None = None,
    ) -> _Write:
        """``path``: the request's path when the caller knows it equals ``request.url.path``
        (building the URL costs more than the rest of this step)."""
        headers = request.headers
        return self._begin_raw(
            headers.get("idempotency-key"),
            headers.get("x-correlation-id"),
            headers.get("prefer"),
            principal,
            request.method,
            path or request.url.path,
            body,
            route,
        )

    def _begin_raw(
        self,
        idempotency_key: str | None,
        correlation_id: str | None,
        prefer: str | None,
        principal: Principal,
        method: str,
        path: str,
        body: bytes,
        route: str,
    ) -> _Write:
        """Idempotency key, request fingerprint, command id, correlation id, ``Prefer: wait``."""
        key = _idempotency_key(idempotency_key)
        request_line = b"%s %s\n" % (method.encode(), path.encode())
        fingerprint = hashlib.sha256(request_line + body).hexdigest()
        command_id = command_id_for(principal.tenant_id, key)
        correlation = correlation_id or command_id
        if not (1 <= len(correlation) <= 200):
            correlation = command_id
        wait = parse_prefer_wait(prefer, self.max_wait_seconds)
        return _Write(principal, key, fingerprint, command_id, correlation, wait, route)

    async def _gate(
        self, write: _Write, campaign_ids: list[str], *, many: bool = False
    ) -> tuple[Response | None, tuple[int, ...]]:
        """Run the gate; a response when the request is answered right here."""
        result = await self._gate_result(write, campaign_ids, many=many)
        if result.outcome == "replay":
            return _stored_response(result.stored), ()
        return None, result.foreign

    async def _gate_result(
        self, write: _Write, campaign_ids: list[str], *, many: bool = False
    ) -> GateResult:
        """Run the gate: ``ok`` or ``replay``; any other outcome raises its problem."""
        result = await self.store.gate(
            key_hash=write.principal.key_hash,
            tenant_id=write.principal.tenant_id,
            idempotency_key=write.idempotency_key,
            fingerprint=write.fingerprint,
            campaign_ids=campaign_ids,
            many=many,
        )
        match result.outcome:
            case "ok":
                return result
            case "replay":
                self.metrics.idempotent_replays.labels(write.route).inc()
                return result
            case "rate_limited":
                self.metrics.rate_limited.labels(write.route).inc()
                seconds = max(1, math.ceil(result.retry_after_ms / 1000))
                raise ProblemError(
                    "rate-limited",
                    f"rate limit of this API key exceeded; retry in {seconds} s",
                    headers={"Retry-After": str(seconds)},
                )
            case "not_found":
                raise ProblemError("not-found", "no such campaign")
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

    async def _send(self, write: _Write, campaign_id: str, value: bytes) -> None:
        try:
            await self.bus.send(campaign_id, value)
        except Exception as exc:
            log.warning("command not appended: %r", exc)
            await self._release(write)
            raise ProblemError(
                "unavailable", "the command log is unavailable", headers={"Retry-After": "1"}
            ) from None

    async def _release(self, write: _Write) -> None:
        try:
            await self.store.release(
                tenant_id=write.principal.tenant_id,
                idempotency_key=write.idempotency_key,
                fingerprint=write.fingerprint,
            )
        except Exception as exc:  # the reservation then expires after the lock time
            log.warning("idempotency reservation not released: %r", exc)

    async def _decision(self, command_id: str, wait: int) -> dict[str, Any] | None:
        """Poll the read model for the processor's decision on ``command_id`` for ``wait`` s."""
        deadline = time.monotonic() + wait
        step = 0
        key = self.readmodel.keys.decision(command_id)
        while True:
            raw = await self.store.pipeline.execute("GET", key)
            if raw is not None:
                decision: dict[str, Any] = orjson.loads(raw)
                self.metrics.prefer_wait.labels(decision["outcome"]).inc()
                return decision
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.metrics.prefer_wait.labels("timeout").inc()
                return None
            await asyncio.sleep(min(_WAIT_STEPS[min(step, len(_WAIT_STEPS) - 1)], remaining))
            step += 1

    async def _finish(
        self,
        write: _Write,
        status: int,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        pending: list[tuple[str, bytes]] | None = None,
    ) -> Response:
        self._store_response(write, status, payload, pending)
        return Response(
            payload,
            status_code=status,
            media_type=PROBLEM_MEDIA_TYPE if status >= 400 else _JSON,
            headers=dict(headers or {}),
        )

    def _store_response(
        self,
        write: _Write,
        status: int,
        payload: bytes,
        pending: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Keep the response for replays (and write the pending pledge rows): queued before
        the answer leaves, not awaited (see :meth:`IngestStore.complete`)."""
        self.store.complete(
            tenant_id=write.principal.tenant_id,
            idempotency_key=write.idempotency_key,
            fingerprint=write.fingerprint,
            status=status,
            body=payload,
            pending_pledges=pending or (),
        )

    async def _decide(
        self,
        write: _Write,
        accepted: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]],
        headers: dict[str, str],
    ) -> tuple[int, bytes] | None:
        """Wait per ``Prefer: wait``; (status, body) of the decision, or None on timeout."""
        if write.wait <= 0:
            return None
        headers["Preference-Applied"] = f"wait={write.wait}"
        decision = await self._decision(write.command_id, write.wait)
        if decision is None:
            return None
        if decision["outcome"] == "refused":
            problem = refusal(decision.get("reason") or "refused", decision.get("detail") or "")
            return problem.status, orjson.dumps(problem.body(None))
        status, body = accepted(decision)
        return status, orjson.dumps(body)

    async def _answer(
        self,
        write: _Write,
        accepted: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]],
        ids: dict[str, str],
        status_url: str,
        headers: dict[str, str],
        *,
        location: bool,
    ) -> tuple[int, bytes]:
        """The answer to a write: the decision when waited for, else 202 + the status URL."""
        decided = await self._decide(write, accepted, headers)
        if decided is not None:
            return decided
        if location:
            headers["Location"] = status_url
        return 202, orjson.dumps({**ids, "status": "pending", "status_url": status_url})

    async def _pledge_answer(
        self,
        write: _Write,
        campaign_id: str,
        pledge_id: str,
        done_status: int,
        done_label: str,
        headers: dict[str, str],
        *,
        location: bool,
    ) -> tuple[int, bytes]:
        """:meth:`_answer` for a pledge write (make or cancel)."""
        ids = {"pledge_id": pledge_id, "campaign_id": campaign_id}
        return await self._answer(
            write,
            lambda d: (done_status, {**ids, "status": done_label, "seq": d["seq"]}),
            ids,
            f"/v1/campaigns/{campaign_id}/pledges/{pledge_id}",
            headers,
            location=location,
        )

    # --- writes ------------------------------------------------------------------------------

    async def make_pledge(
        self, request: Request, campaign_id: str, *, path: str | None = None
    ) -> Response:
        """The FastAPI route's entry (the ASGI front normally answers this route itself)."""
        return await self.make_pledge_asgi(
            request.scope, request.receive, campaign_id, path or request.url.path
        )

    async def make_pledge_asgi(
        self, scope: Scope, receive: Receive, campaign_id: str, path: str
    ) -> Response:
        """``POST /v1/campaigns/{campaign_id}/pledges`` straight from the ASGI scope.

        The launch-day route: headers are looked up in one dict of the raw list, the body is
        checked as a plain dict first (pydantic names the faults of one it does not accept),
        and the command and the 202 body come from text templates; the response carries its
        header list ready-made. ``campaign_id`` has been checked against the id pattern.
        """
        route = "/v1/campaigns/{campaign_id}/pledges"
        # ASGI header names are lower case; the first occurrence wins, as with Starlette.
        headers: dict[bytes, bytes] = dict(reversed(scope["headers"]))
        principal = self.keys.authenticate(_latin1(headers.get(b"authorization")))
        raw = await self._read_raw(
            _latin1(headers.get(b"content-type")), _latin1(headers.get(b"content-length")), receive
        )
        fields = _plain_pledge(raw, campaign_id)
        if fields is None:
            try:
                body = PledgeRequest.model_validate_json(raw)
            except ValidationError as exc:
                raise validation_problem(exc) from None
            fields = (
                campaign_id,
                body.backer_id,
                body.amount_minor,
                body.currency,
                body.pledge_id,
                body.tier_id,
                body.payment_token,
                body.locale,
            )
        write = self._begin_raw(
            _latin1(headers.get(b"idempotency-key")),
            _latin1(headers.get(b"x-correlation-id")),
            _latin1(headers.get(b"prefer")),
            principal,
            "POST",
            path,
            raw,
            route,
        )
        gate = await self._gate_result(write, [campaign_id])
        if gate.outcome == "replay":
            return _stored_response(gate.stored)
        tenant_id = principal.tenant_id
        pledge_id = fields[4] or f"p-{write.command_id}"
        encoder = ItemEncoder(
            tenant_id=tenant_id,
            correlation_id=write.correlation_id,
            issued_at=issued_at(),
        )
        await self._send(write, campaign_id, encoder.command(fields, write.command_id, pledge_id))
        extra: list[tuple[bytes, bytes]]
        if write.wait <= 0:  # the usual answer, written as orjson would
            status = 202
            status_url = f"/v1/campaigns/{campaign_id}/pledges/{pledge_id}"
            payload = (
                f'{{"pledge_id":"{pledge_id}","campaign_id":"{campaign_id}"'
                f',"status":"pending","status_url":"{status_url}"}}'
            ).encode()
            extra = [(b"location", status_url.encode())]
        else:
            answer_headers: dict[str, str] = {}
            status, payload = await self._pledge_answer(
                write, campaign_id, pledge_id, 201, "accepted", answer_headers, location=True
            )
            extra = [(k.lower().encode(), v.encode()) for k, v in answer_headers.items()]
        pending = orjson.dumps(
            {
                "pledge_id": pledge_id,
                "campaign_id": campaign_id,
                "status": "pending",
                "backer_id": fields[1],
                "amount": {"amount_minor": fields[2], "currency": fields[3]},
                "tier_id": fields[5],
                "seq": None,
                "reason": None,
                "detail": None,
                "tenant_id": tenant_id,
            }
        )
        self._store_response(
            write, status, payload, [(self.readmodel.keys.pledge(campaign_id, pledge_id), pending)]
        )
        return RawResponse(status, payload, _raw_headers(status, payload, extra))

    async def launch(self, request: Request) -> Response:
        route = "/v1/campaigns"
        principal = self.authenticate(request)
        raw = await self.read_body(request)
        try:
            body = LaunchRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise validation_problem(exc) from None
        write = self._begin(request, principal, raw, route)
        campaign_id = body.campaign_id or f"c-{write.command_id}"
        fields = body.model_dump(exclude={"campaign_id"})
        if fields["fee_schedule"] is None:
            fields["fee_schedule"] = FeeSchedule.kickstarter_default(body.goal.currency)
        try:
            command = LaunchCampaign(
                command_id=write.command_id,
                tenant_id=principal.tenant_id,
                correlation_id=write.correlation_id,
                issued_at=datetime.now(UTC),
                campaign_id=campaign_id,
                **fields,
            )
        except ValidationError as exc:
            raise validation_problem(exc) from None
        replay, _ = await self._gate(write, [campaign_id])
        if replay is not None:
            return replay
        await self._send(write, campaign_id, encode_command(command))
        headers: dict[str, str] = {}
        status, payload = await self._answer(
            write,
            lambda d: (201, {"campaign_id": campaign_id, "status": "open", "seq": d["seq"]}),
            {"campaign_id": campaign_id},
            f"/v1/campaigns/{campaign_id}",
            headers,
            location=True,
        )
        return await self._finish(write, status, payload, headers)

    async def cancel(self, request: Request, campaign_id: str, pledge_id: str) -> Response:
        route = "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/cancel"
        principal = self.authenticate(request)
        raw = await self.read_body(request)
        try:
            body = CancelRequest.model_validate_json(raw) if raw.strip() else CancelRequest()
        except ValidationError as exc:
            raise validation_problem(exc) from None
        write = self._begin(request, principal, raw, route)
        replay, _ = await self._gate(write, [campaign_id])
        if replay is not None:
            return replay
        command = CancelPledge(
            command_id=write.command_id,
            tenant_id=principal.tenant_id,
            correlation_id=write.correlation_id,
            issued_at=datetime.now(UTC),
            campaign_id=campaign_id,
            pledge_id=pledge_id,
            reason=body.reason,
        )
        await self._send(write, campaign_id, encode_command(command))
        headers: dict[str, str] = {}
        status, payload = await self._pledge_answer(
            write, campaign_id, pledge_id, 200, "cancelled", headers, location=False
        )
        return await self._finish(write, status, payload, headers)

    async def close(self, request: Request, campaign_id: str) -> Response:
        route = "/v1/campaigns/{campaign_id}/close"
        principal = self.authenticate(request)
        raw = await self.read_body(request)
        try:
            body = CloseRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise validation_problem(exc) from None
        write = self._begin(request, principal, raw, route)
        replay, _ = await self._gate(write, [campaign_id])
        if replay is not None:
            return replay
        command = CloseCampaign(
            command_id=write.command_id,
            tenant_id=principal.tenant_id,
            correlation_id=write.correlation_id,
            issued_at=datetime.now(UTC),
            campaign_id=campaign_id,
            reason=body.reason,
        )
        await self._send(write, campaign_id, encode_command(command))
        headers: dict[str, str] = {}
        status, payload = await self._answer(
            write,
            lambda d: (
                200,
                {
                    "campaign_id": campaign_id,
                    "status": "closed",
                    "outcome": d.get("close_outcome"),
                    "seq": d["seq"],
                },
            ),
            {"campaign_id": campaign_id},
            f"/v1/campaigns/{campaign_id}",
            headers,
            location=False,
        )
        return await self._finish(write, status, payload, headers)

    async def batch(self, request: Request, *, path: str | None = None) -> Response:
        """Up to ``batch_max_items`` pledges; each item is validated, owned-checked and sent on
        its own (one command each, so never half-applied) and answered in ``results``.

        Items stay plain dicts (see :mod:`services.pledge.api.batch`); pydantic validates only
        the items the plain check does not accept, and names their faults.
        """
        route = "/v1/pledges/batch"
        principal = self.authenticate(request)
        raw = await self.read_body(request)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise validation_problem(
                [{"field": "body", "message": f"malformed JSON: {exc}"}]
            ) from None
        if (
            not isinstance(doc, dict)
            or set(doc) != {"pledges"}
            or not isinstance(doc["pledges"], list)
        ):
            raise validation_problem(
                [
                    {
                        "field": "pledges",
                        "message": "expected an object with one member 'pledges' (a list)",
                    }
                ]
            )
        items: list[Any] = doc["pledges"]
        if not 1 <= len(items) <= self.batch_max_items:
            raise validation_problem(
                [{"field": "pledges", "message": f"1 to {self.batch_max_items} items"}]
            )
        write = self._begin(request, principal, raw, route, path)
        #: per item: its result (JSON text), or None while it is to be sent
        results: list[str | None] = [None] * len(items)
        valid: list[tuple[int, Fields]] = []
        invalid = 0
        for index, item in enumerate(items):
            fields = plain_item(item)
            if fields is not None:
                valid.append((index, fields))
                continue
            try:
                checked = BatchItem.model_validate(item)
            except ValidationError as exc:
                invalid += 1
                errors = field_errors(exc, f"pledges.{index}")
                results[index] = _json_text(
                    {
                        "index": index,
                        "status": "invalid",
                        "problem": problem_body(
                            "validation-error",
                            errors=errors,
                            detail="invalid field(s): "
                            + ", ".join(dict.fromkeys(e["field"] for e in errors)),
                        ),
                    }
                )
            else:
                valid.append((index, model_fields(checked)))
        campaigns = list(dict.fromkeys([fields[0] for _, fields in valid]))
        replay, foreign = await self._gate(write, campaigns, many=True)
        if replay is not None:
            return replay
        not_found = 0
        if foreign:
            foreign_campaigns = {campaigns[i] for i in foreign}
            kept = []
            for index, fields in valid:
                if fields[0] in foreign_campaigns:
                    not_found += 1
                    results[index] = _json_text(
                        {
                            "index": index,
                            "status": "not_found",
                            "campaign_id": fields[0],
                            "problem": problem_body("not-found", detail="no such campaign"),
                        }
                    )
                else:
                    kept.append((index, fields))
            valid = kept
        encoder = ItemEncoder(
            tenant_id=principal.tenant_id,
            correlation_id=write.correlation_id,
            issued_at=issued_at(),
        )
        command, pending = encoder.command, encoder.pending
        command_ids = _batch_command_ids(
            principal.tenant_id, write.idempotency_key, [index for index, _ in valid]
        )
        commands: list[tuple[str, bytes]] = []
        for (index, fields), command_id in zip(valid, command_ids, strict=True):
            campaign_id = fields[0]
            pledge_id = fields[4] or f"p-{command_id}"
            commands.append((campaign_id, command(fields, command_id, pledge_id)))
            results[index] = pending(index, campaign_id, pledge_id)
        if commands:
            try:
                await self.bus.send_all(commands)
            except Exception as exc:
                log.warning("batch not appended: %r", exc)
                await self._release(write)
                # Items that did reach Kafka are ignored by the processor when retried.
                raise ProblemError(
                    "unavailable",
                    "the command log is unavailable; retry the whole batch",
                    headers={"Retry-After": "1"},
                ) from None
        counts = self.metrics.batch_items
        counts.labels("pending").inc(len(commands))
        if invalid:
            counts.labels("invalid").inc(invalid)
        if not_found:
            counts.labels("not_found").inc(not_found)
        # The text equals orjson.dumps({"results": [...], "accepted": n, "refused": m}).
        payload = (
            f'{{"results":[{",".join(results)}],"accepted":{len(commands)}'  # type: ignore[arg-type]
            f',"refused":{len(items) - len(commands)}}}'
        ).encode()
        return await self._finish(write, 202, payload)

    # --- reads -------------------------------------------------------------------------------

    async def get_campaign(self, request: Request, campaign_id: str) -> Response:
        principal = self.authenticate(request)
        row = await self.readmodel.campaign(campaign_id)
        if row is None or row.doc is None or row.doc.get("status") not in ("open", "closed"):
            raise ProblemError("not-found", "no such campaign (or not projected yet)")
        if row.tenant_id != principal.tenant_id:
            raise ProblemError("not-found", "no such campaign (or not projected yet)")
        return Response(orjson.dumps(row.doc), media_type=_JSON)

    async def get_pledge(self, request: Request, campaign_id: str, pledge_id: str) -> Response:
        principal = self.authenticate(request)
        campaign = await self.readmodel.campaign(campaign_id)
        row = await self.readmodel.pledge(campaign_id, pledge_id)
        if row is None:
            raise ProblemError("not-found", "no such pledge")
        owner = campaign.tenant_id if campaign is not None and campaign.tenant_id else None
        owner = owner or row.doc.get("tenant_id")
        if owner != principal.tenant_id:
            raise ProblemError("not-found", "no such pledge")
        view = {k: v for k, v in row.doc.items() if k != "tenant_id"}
        view["status"] = row.status
        view["last_refusal"] = row.refusal
        if row.cancel is not None:
            view["seq"], view["reason"] = row.cancel["seq"], row.cancel["reason"]
        return Response(orjson.dumps(view), media_type=_JSON)
