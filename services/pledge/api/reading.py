"""Reading a request at the ASGI level: headers, body, Idempotency-Key, ``Prefer: wait``.

Both the ASGI front (:mod:`services.pledge.api.fastpath`) and the FastAPI routes hand the
handlers the raw ASGI ``scope`` and ``receive``; this module is the one reader of them. The
request headers are looked up in one dict built from the header list (Starlette scans the
list on every lookup; a write looks up six). ASGI header names are lower case; the first
occurrence of a name wins, as with Starlette.

Every header read here is parsed strictly, so that nothing a client sends can raise past the
handlers (a 500): ``Content-Length`` must be 1-19 ASCII digits (else 400), ``Content-Type``
must name JSON (else 415), ``Prefer: wait=N`` counts only 1-6 ASCII digits (any other value is
an unknown preference, ignored as RFC 7240 asks - ``wait=²`` passed ``isdigit()`` and failed
``int()``), ``Idempotency-Key`` is 1-255 visible ASCII characters (else 400),
``X-Correlation-Id`` is used only when it is a valid id (else the command id stands in), and
``Authorization`` is checked in :mod:`~services.pledge.api.auth`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

from schemas.pledge_fields import PledgeFields, plain_pledge
from services.pledge.api.auth import Principal
from services.pledge.api.command_ids import command_id_for
from services.pledge.api.problems import ProblemError

__all__ = [
    "HeaderMap",
    "Write",
    "begin_write",
    "header",
    "header_map",
    "idempotency_key",
    "parse_prefer_wait",
    "plain_pledge_body",
    "read_body",
]

_JSON = "application/json"
_LENGTH = re.compile(r"[0-9]{1,19}").fullmatch
_WAIT = re.compile(r"[0-9]{1,6}").fullmatch
#: A correlation id: the id alphabet (it is copied into commands and events).
_CORRELATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}").fullmatch

#: Request headers by lower-case name (raw bytes, as ASGI gives them).
HeaderMap = dict[bytes, bytes]


def header_map(scope: Scope) -> HeaderMap:
    """The request's headers, the first occurrence of each name winning."""
    return dict(reversed(scope["headers"]))


def header(headers: HeaderMap, name: bytes) -> str | None:
    """One header's value as text (latin-1, as HTTP defines it), or None."""
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


async def read_body(headers: HeaderMap, receive: Receive, max_bytes: int) -> bytes:
    """The body, refusing more than ``max_bytes`` (413) and non-JSON types (415)."""
    content_type = header(headers, b"content-type")
    if content_type is not None:
        media = content_type.partition(";")[0].strip().lower()
        if media != _JSON and not media.endswith("+json"):
            raise ProblemError("unsupported-media-type", "send application/json")
    length = header(headers, b"content-length")
    if length is not None:
        if not _LENGTH(length.strip()):
            raise ProblemError(
                "bad-request",
                "Content-Length must be a decimal number of bytes",
                errors=[{"field": "Content-Length", "message": "1-19 ASCII digits"}],
            )
        if int(length) > max_bytes:
            raise ProblemError("payload-too-large", f"the body limit is {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise ProblemError("payload-too-large", f"the body limit is {max_bytes} bytes")
            if not message.get("more_body", False):
                if not chunks:
                    return chunk
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


def plain_pledge_body(raw: bytes, campaign_id: str) -> PledgeFields | None:
    """:func:`~schemas.pledge_fields.plain_pledge` of a single pledge body (the campaign from
    the path); None: let pydantic judge it."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or "campaign_id" in doc:
        return None
    doc["campaign_id"] = campaign_id
    return plain_pledge(doc)


def parse_prefer_wait(value: str | None, max_wait: int) -> int:
    """Seconds of ``Prefer: wait=N`` (RFC 7240), capped at ``max_wait``; 0 when absent/invalid."""
    if not value:
        return 0
    for part in value.replace(";", ",").split(","):
        name, _, number = part.strip().partition("=")
        if name.strip().lower() == "wait":
            number = number.strip().strip('"')
            if _WAIT(number):
                return min(int(number), max_wait)
            return 0
    return 0


def idempotency_key(raw: str | None) -> str:
    """The Idempotency-Key header's value, or a 400 problem naming the header."""
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


@dataclass(frozen=True, slots=True)
class Write:
    """One write request once read: who, which key, its fingerprint and derived ids."""

    principal: Principal
    idempotency_key: str
    fingerprint: str
    command_id: str
    correlation_id: str
    wait: int
    route: str


def begin_write(
    scope: Scope,
    headers: HeaderMap,
    principal: Principal,
    body: bytes,
    route: str,
    max_wait: int,
) -> Write:
    """Idempotency key, request fingerprint (method, path and body), command id, correlation
    id, ``Prefer: wait``."""
    key = idempotency_key(header(headers, b"idempotency-key"))
    request_line = b"%s %s\n" % (scope["method"].encode(), scope["path"].encode())
    fingerprint = hashlib.sha256(request_line + body).hexdigest()
    command_id = command_id_for(principal.tenant_id, key)
    correlation = header(headers, b"x-correlation-id") or command_id
    if not _CORRELATION(correlation):
        correlation = command_id
    wait = parse_prefer_wait(header(headers, b"prefer"), max_wait)
    return Write(principal, key, fingerprint, command_id, correlation, wait, route)
