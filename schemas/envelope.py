"""The envelope every event travels in, and the pure function that stamps one.

The envelope gives an event its identity (deterministic ``event_id``), its place in its
(campaign, stream) chain (``seq``, ``prev_hash``, ``hash``) and its tracing ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, SafeUUID, uuid5

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)

from schemas.canonical import GENESIS_HASH, UtcDatetime, format_timestamp, to_utc
from schemas.construct import trusted_model
from schemas.events import EVENT_TYPES, Event, Ident, PledgeMade, Stream

__all__ = [
    "EVENT_ID_NAMESPACE",
    "GENESIS_HASH",
    "Envelope",
    "HexDigest",
    "Stamped",
    "event_id_for",
    "stamp",
    "stamp_chain",
    "stamp_encoded",
]

#: uuid5 namespace of event ids (uuid5(NAMESPACE_URL, "https://pledgeflow.dev/ns/events")).
EVENT_ID_NAMESPACE = UUID("840fe538-5def-599f-b2b4-414f97b9c7f9")

#: A SHA-256 digest as 64 lowercase hex characters.
HexDigest = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Envelope(BaseModel):
    """One event on the wire: identity, chain position, tracing ids and the typed payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID
    event_type: StrictStr
    schema_version: Annotated[StrictInt, Field(ge=1)]
    campaign_id: Ident
    stream: Stream
    seq: Annotated[StrictInt, Field(ge=1)]
    occurred_at: UtcDatetime
    causation_id: Ident
    correlation_id: Ident
    prev_hash: HexDigest
    hash: HexDigest
    payload: SerializeAsAny[Event]

    @model_validator(mode="before")
    @classmethod
    def _typed_payload(cls, data: Any) -> Any:
        # The payload's model is chosen by the envelope's event_type (no discriminator inside).
        if isinstance(data, dict) and isinstance(data.get("payload"), dict):
            event_type = data.get("event_type")
            model = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
            if model is None:
                raise ValueError(f"event_type: unknown event type {event_type!r}")
            data = {**data, "payload": model.model_validate(data["payload"])}
        return data

    @model_validator(mode="after")
    def _payload_matches(self) -> Envelope:
        payload = self.payload
        if type(payload).event_type != self.event_type:
            raise ValueError(
                f"event_type: {self.event_type!r} but payload is {type(payload).event_type!r}"
            )
        if payload.schema_version != self.schema_version:
            raise ValueError(
                f"schema_version: {self.schema_version} but {self.event_type} is "
                f"v{payload.schema_version} (upcast before validating)"
            )
        if payload.stream != self.stream:
            raise ValueError(f"stream: {self.event_type} belongs to {payload.stream!r}")
        return self


def event_id_for(stream: str, causation_id: str, index: int) -> UUID:
    """Deterministic event id: the same command (or causing event) retried yields the same ids.

    ``uuid5(EVENT_ID_NAMESPACE, f"{stream}:{causation_id}:{index}")``. The stream is part of
    the name so that two writers reacting to the same cause (settlement and notify both
    consuming one ``CampaignClosed``) never mint the same id.
    """
    return uuid5(EVENT_ID_NAMESPACE, f"{stream}:{causation_id}:{index}")


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


class _EventId(UUID):
    """An event id made from its text alone (the hot path writes only the text): its ``int``
    is parsed on first use. Equal, hashed, printed and pickled as the plain :class:`UUID`."""

    __slots__ = ("_text",)

    def __getattr__(self, name: str) -> Any:
        # Called only while the UUID slots are unset (normal lookup failed).
        if name == "int":
            value = int(object.__getattribute__(self, "_text").replace("-", ""), 16)
            _set_attr(self, "int", value)
            return value
        if name == "is_safe":
            _set_attr(self, "is_safe", _SAFE_UNKNOWN)
            return _SAFE_UNKNOWN
        raise AttributeError(name)

    def __str__(self) -> str:
        try:
            return object.__getattribute__(self, "_text")  # type: ignore[no-any-return]
        except AttributeError:
            return UUID.__str__(self)

    def __repr__(self) -> str:
        return f"UUID('{self}')"

    def __reduce__(self) -> tuple[type[UUID], tuple[str]]:
        return UUID, (str(self),)


#: Hex digit of byte 8's high nibble once the RFC 4122 variant bits (10xx) are set.
_VARIANT = {digit: "89ab"[int(digit, 16) & 0x3] for digit in "0123456789abcdef"}


_new_object = object.__new__
_set_attr = object.__setattr__
_set_event_id_text = _EventId.__dict__["_text"].__set__
_SAFE_UNKNOWN = SafeUUID.unknown
_ENVELOPE_FIELDS = frozenset(Envelope.model_fields)
_OCCURRED_AT_MEMBER = b',"occurred_at":'
_SHA256 = hashlib.sha256()
_SHA1_NAMESPACE = hashlib.sha1(_NAMESPACE_BYTES)
#: ``event class -> (stream, event_type, schema_version)``.
_EVENT_META: dict[type[Event], tuple[Stream, str, int]] = {}
_orjson_dumps = orjson.dumps
_SORT_KEYS = orjson.OPT_SORT_KEYS


#: ``PledgeMade``'s fields, in the order stamp_chain's fast JSON form spells them out.
_PLEDGE_MADE_FIELDS = ("amount", "backer_id", "locale", "payment_token", "pledge_id", "tier_id")
if tuple(sorted(PledgeMade.model_fields)) != _PLEDGE_MADE_FIELDS:  # pragma: no cover
    raise RuntimeError("PledgeMade changed: update its JSON form in schemas.envelope.stamp_chain")


#: ``(occurred_at as given, in UTC, its canonical text)`` of the last :func:`stamp_chain`
#: (one tuple, swapped whole, so a reader never sees parts of two).
_last_time: list[tuple[datetime | None, datetime, str]] = [
    (None, datetime.min.replace(tzinfo=UTC), "")
]

#: What :func:`stamp_chain` gives per event: the envelope, its canonical dict (with
#: ``hash``) and its canonical bytes.
Stamped = tuple[Envelope, dict[str, Any], bytes]


def stamp_chain(
    events: Sequence[Event],
    *,
    campaign_id: str,
    seq: int,
    prev_hash: str,
    occurred_at: datetime,
    causation_id: str,
    correlation_id: str,
    index: int = 0,
    stream: Stream | None = None,
) -> list[Stamped]:
    """Stamp consecutive events of one cause: event *i* gets ``seq + i``, ``index + i`` and
    chains from event *i - 1* (the first from ``prev_hash``). Each item is exactly what
    :func:`stamp_encoded` gives for that event.

    The processor's hot path: one call per command, no pydantic validation of the envelope
    (each payload is an already-validated model and the scalars are checked here), one
    canonical dump per event for the hash, and the encoded bytes are that dump with the
    ``hash`` member spliced in at its sorted place.
    """
    if type(seq) is not int or seq < 1:
        raise ValueError(f"seq must be an int >= 1, got {seq!r}")
    if len(prev_hash) != 64:
        raise ValueError("prev_hash must be 64 hex characters (GENESIS_HASH for the first event)")
    given, utc, text = _last_time[0]
    if occurred_at is given:  # a writer stamps a whole batch with one clock reading
        occurred_at, occurred_text = utc, text
    else:
        original = occurred_at
        if occurred_at.tzinfo is not UTC:
            occurred_at = to_utc(occurred_at)
        occurred_text = format_timestamp(occurred_at)
        _last_time[0] = (original, occurred_at, occurred_text)
    stamped: list[Stamped] = []
    for event in events:
        cls = type(event)
        meta = _EVENT_META.get(cls)
        if meta is None:  # class attributes of a pydantic model are slow to read: once per type
            meta = _EVENT_META[cls] = (cls.stream, cls.event_type, cls.schema_version)
        event_stream, event_type, schema_version = meta
        if stream is not None and stream != event_stream:
            raise ValueError(f"stream: {event_type} belongs to {event_stream!r}, not {stream!r}")
        # event_id_for (uuid5: SHA-1, version 5, RFC variant) on the digest's hex text; the
        # UUID's number is only parsed if asked for. Unit tests pin it to uuid.uuid5.
        hasher = _SHA1_NAMESPACE.copy()
        hasher.update(f"{event_stream}:{causation_id}:{index}".encode())
        hx = hasher.hexdigest()
        event_id_text = (
            f"{hx[:8]}-{hx[8:12]}-5{hx[13:16]}-{_VARIANT[hx[16]]}{hx[17:20]}-{hx[20:32]}"
        )
        event_id = _new_object(_EventId)
        _set_event_id_text(event_id, event_id_text)
        if cls is PledgeMade:
            fields = event.__dict__
            amount = fields["amount"].__dict__
            payload = {
                "amount": {"amount_minor": amount["amount_minor"], "currency": amount["currency"]},
                "backer_id": fields["backer_id"],
                "locale": fields["locale"],
                "payment_token": fields["payment_token"],
                "pledge_id": fields["pledge_id"],
                "tier_id": fields["tier_id"],
            }
        else:
            payload = event.model_dump(mode="json")
        body: dict[str, Any] = {
            "campaign_id": campaign_id,
            "causation_id": causation_id,
            "correlation_id": correlation_id,
            "event_id": event_id_text,
            "event_type": event_type,
            "occurred_at": occurred_text,
            "payload": payload,
            "prev_hash": prev_hash,
            "schema_version": schema_version,
            "seq": seq,
            "stream": event_stream,
        }
        unhashed = _orjson_dumps(body, option=_SORT_KEYS)
        hasher = _SHA256.copy()  # chain_hash; a copy skips OpenSSL's per-call digest fetch
        hasher.update(prev_hash.encode("ascii"))
        hasher.update(unhashed)
        digest = hasher.hexdigest()
        body["hash"] = digest
        # Sorted keys: "hash" goes right before "occurred_at", whose first occurrence is the
        # key (the members before it are strings, where a quote is always escaped).
        data = unhashed.replace(
            _OCCURRED_AT_MEMBER,
            b',"hash":"%b"%b' % (digest.encode("ascii"), _OCCURRED_AT_MEMBER),
            1,
        )
        envelope = trusted_model(
            Envelope,
            {
                "event_id": event_id,
                "event_type": event_type,
                "schema_version": schema_version,
                "campaign_id": campaign_id,
                "stream": event_stream,
                "seq": seq,
                "occurred_at": occurred_at,
                "causation_id": causation_id,
                "correlation_id": correlation_id,
                "prev_hash": prev_hash,
                "hash": digest,
                "payload": event,
            },
            _ENVELOPE_FIELDS,
        )
        stamped.append((envelope, body, data))
        prev_hash = digest
        seq += 1
        index += 1
    return stamped


def stamp_encoded(
    event: Event,
    *,
    campaign_id: str,
    seq: int,
    prev_hash: str,
    occurred_at: datetime,
    causation_id: str,
    correlation_id: str,
    index: int,
    stream: Stream | None = None,
) -> tuple[Envelope, dict[str, Any], bytes]:
    """Stamp ``event``; also return its canonical dict (with ``hash``) and its canonical bytes
    (what :func:`schemas.encode` gives for the envelope). One event of :func:`stamp_chain`."""
    return stamp_chain(
        (event,),
        campaign_id=campaign_id,
        seq=seq,
        prev_hash=prev_hash,
        occurred_at=occurred_at,
        causation_id=causation_id,
        correlation_id=correlation_id,
        index=index,
        stream=stream,
    )[0]


def stamp(
    event: Event,
    *,
    campaign_id: str,
    seq: int,
    prev_hash: str = GENESIS_HASH,
    occurred_at: datetime,
    causation_id: str,
    correlation_id: str,
    index: int,
    stream: Stream | None = None,
) -> Envelope:
    """Pure: wrap ``event`` in its envelope at position ``seq`` after ``prev_hash``.

    ``event_id = uuid5(EVENT_ID_NAMESPACE, f"{stream}:{causation_id}:{index}")`` and
    ``hash = sha256(prev_hash + canonical(envelope without hash))``. ``stream`` defaults to
    (and must equal) the event's own stream.
    """
    envelope, _, _ = stamp_encoded(
        event,
        campaign_id=campaign_id,
        seq=seq,
        prev_hash=prev_hash,
        occurred_at=occurred_at,
        causation_id=causation_id,
        correlation_id=correlation_id,
        index=index,
        stream=stream,
    )
    return envelope
