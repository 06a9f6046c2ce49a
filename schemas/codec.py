"""Encode and decode envelopes in the canonical form; verify hash chains.

Two speeds on purpose:

* the typed path (:func:`encode`, :func:`decode`, :func:`stamp_and_encode`) gives and takes
  :class:`Envelope` objects, validating untrusted input and upcasting old versions;
* the raw path (:func:`decode_raw`, :func:`verify_hash`, :class:`ChainVerifier`) works on
  plain dicts or the stored bytes, with no pydantic round trip, for auditors who check
  hundreds of thousands of events per second.

Every way a message can be unreadable raises :class:`DecodeError` (route it to a dead-letter
topic); nothing else escapes from :func:`decode`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.canonical import GENESIS_HASH, chain_hash, dumps, format_timestamp
from schemas.envelope import Envelope, stamp_with_body
from schemas.errors import DecodeError, describe_validation_error
from schemas.events import EVENT_TYPES, Event, Stream
from schemas.upcasters import upcast

__all__ = [
    "ChainBreak",
    "ChainVerifier",
    "decode",
    "decode_raw",
    "encode",
    "envelope_body",
    "envelope_from_raw",
    "message_key",
    "stamp_and_encode",
    "verify_chain",
    "verify_chain_raw",
    "verify_hash",
]


def envelope_body(envelope: Envelope, *, with_hash: bool = True) -> dict[str, Any]:
    """The JSON-ready dict of ``envelope`` (what is encoded, and, without hash, what is hashed)."""
    body: dict[str, Any] = {
        "campaign_id": envelope.campaign_id,
        "causation_id": envelope.causation_id,
        "correlation_id": envelope.correlation_id,
        "event_id": str(envelope.event_id),
        "event_type": envelope.event_type,
        "occurred_at": format_timestamp(envelope.occurred_at),
        "payload": envelope.payload.model_dump(mode="json"),
        "prev_hash": envelope.prev_hash,
        "schema_version": envelope.schema_version,
        "seq": envelope.seq,
        "stream": envelope.stream,
    }
    if with_hash:
        body["hash"] = envelope.hash
    return body


def encode(envelope: Envelope) -> bytes:
    """Canonical bytes of ``envelope``: the Kafka value and the archive line."""
    return dumps(envelope_body(envelope))


def stamp_and_encode(
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
) -> tuple[Envelope, bytes]:
    """:func:`schemas.stamp` and :func:`encode` in one pass (the processor's hot path)."""
    envelope, body = stamp_with_body(
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
    return envelope, dumps(body)


def message_key(campaign_id: str) -> bytes:
    """The Kafka key of every campaign-keyed message (commands, events, snapshots)."""
    return campaign_id.encode("utf-8")


def decode_raw(data: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """Parse one message into a plain dict without validation (fast path for auditors)."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"<root>: malformed JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DecodeError(f"<root>: expected a JSON object, got {type(raw).__name__}")
    return raw


def envelope_from_raw(raw: Mapping[str, Any]) -> Envelope:
    """Validate a parsed message into an :class:`Envelope`, upcasting an old payload version."""
    event_type = raw.get("event_type")
    if not isinstance(event_type, str):
        raise DecodeError("event_type: missing or not a string")
    if event_type not in EVENT_TYPES:
        raise DecodeError(f"event_type: unknown event type {event_type!r}")
    version = raw.get("schema_version")
    if type(version) is not int:
        raise DecodeError("schema_version: missing or not an integer")
    payload = raw.get("payload")
    if not isinstance(payload, dict):
        raise DecodeError("payload: missing or not a JSON object")
    version, payload = upcast(event_type, version, payload)
    try:
        event = EVENT_TYPES[event_type].model_validate(payload)
    except ValidationError as exc:
        raise DecodeError(describe_validation_error(exc, "payload")) from None
    try:
        return Envelope.model_validate({**raw, "schema_version": version, "payload": event})
    except ValidationError as exc:
        raise DecodeError(describe_validation_error(exc)) from None


def decode(data: bytes | bytearray | memoryview | str) -> Envelope:
    """Bytes from Kafka or an archive -> validated, upcast :class:`Envelope`.

    Raises only :class:`DecodeError` (one line naming the field) for anything unreadable.
    """
    return envelope_from_raw(decode_raw(data))


def verify_hash(raw: Mapping[str, Any], prev_hash: str | None = None) -> bool:
    """True when ``raw["hash"]`` is the chain hash of ``raw`` as stored (before upcasting) and,
    if given, ``raw["prev_hash"] == prev_hash``. Never raises on malformed input."""
    stored = raw.get("hash")
    stored_prev = raw.get("prev_hash")
    if not isinstance(stored, str) or not isinstance(stored_prev, str):
        return False
    if prev_hash is not None and stored_prev != prev_hash:
        return False
    body = {key: value for key, value in raw.items() if key != "hash"}
    try:
        return chain_hash(stored_prev, dumps(body)) == stored
    except (TypeError, UnicodeEncodeError, orjson.JSONEncodeError):
        return False


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place a chain stops being trustworthy.

    ``reason`` is one of ``malformed``, ``hash_mismatch`` (the event's bytes were changed),
    ``seq_gap`` (an event is missing, duplicated or out of order), ``prev_hash_mismatch``
    (the event does not link to its predecessor).
    """

    index: int
    reason: str
    event_id: str | None
    detail: str


_HASH_KEY = b',"hash":"'
_PREV_KEY = b',"prev_hash":"'


class ChainVerifier:
    """Streaming verifier of many (campaign, stream) chains interleaved in one sequence.

    Feed items in log order; each ``check_*`` returns a :class:`ChainBreak` or None. With
    ``from_genesis=False`` the first event seen of each chain is trusted as its anchor (for
    verifying a slice of a log).
    """

    def __init__(self, *, from_genesis: bool = True) -> None:
        self.from_genesis = from_genesis
        #: ``(campaign_id, stream) -> (last seq, last hash)`` of every chain seen so far.
        self.heads: dict[tuple[str, str], tuple[int, str]] = {}
        self.count = 0

    def _link(
        self, index: int, campaign_id: str, stream: str, seq: Any, prev: str, digest: str,
        event_id: str | None,
    ) -> ChainBreak | None:  # fmt: skip
        key = (campaign_id, stream)
        head = self.heads.get(key)
        if head is None:
            expected_seq, expected_prev = (1, GENESIS_HASH) if self.from_genesis else (seq, prev)
        else:
            expected_seq, expected_prev = head[0] + 1, head[1]
        if seq != expected_seq:
            return ChainBreak(
                index, "seq_gap", event_id,
                f"{campaign_id}/{stream}: seq {seq} where {expected_seq} was expected",
            )  # fmt: skip
        if prev != expected_prev:
            return ChainBreak(
                index, "prev_hash_mismatch", event_id,
                f"{campaign_id}/{stream} seq {seq}: prev_hash does not match the previous hash",
            )  # fmt: skip
        self.heads[key] = (seq, digest)
        self.count += 1
        return None

    def check_envelope(self, envelope: Envelope, index: int) -> ChainBreak | None:
        """Check a decoded envelope. Valid only for events stored at their current version
        (an upcast envelope no longer has its stored bytes: verify those with ``check_raw``)."""
        body = envelope_body(envelope, with_hash=False)
        if chain_hash(envelope.prev_hash, dumps(body)) != envelope.hash:
            return ChainBreak(
                index, "hash_mismatch", str(envelope.event_id),
                f"seq {envelope.seq}: hash does not match the event's content",
            )  # fmt: skip
        return self._link(
            index, envelope.campaign_id, envelope.stream, envelope.seq, envelope.prev_hash,
            envelope.hash, str(envelope.event_id),
        )  # fmt: skip

    def check_raw(self, item: bytes | Mapping[str, Any], index: int) -> ChainBreak | None:
        """Check one stored message (its bytes, or the dict parsed from them)."""
        if isinstance(item, bytes | bytearray):
            fast = self._check_canonical_line(bytes(item), index)
            if fast is not None:
                return fast if isinstance(fast, ChainBreak) else None
            try:
                item = decode_raw(item)
            except DecodeError as exc:
                return ChainBreak(index, "malformed", None, str(exc))
        raw = item
        event_id = raw.get("event_id")
        event_id = event_id if isinstance(event_id, str) else None
        campaign_id, stream, seq = raw.get("campaign_id"), raw.get("stream"), raw.get("seq")
        prev, digest = raw.get("prev_hash"), raw.get("hash")
        if not (
            isinstance(campaign_id, str) and isinstance(stream, str) and type(seq) is int
            and isinstance(prev, str) and isinstance(digest, str)
        ):  # fmt: skip
            return ChainBreak(index, "malformed", event_id, "missing or mistyped envelope field")
        if not verify_hash(raw):
            return ChainBreak(
                index, "hash_mismatch", event_id,
                f"{campaign_id}/{stream} seq {seq}: hash does not match the event's content",
            )  # fmt: skip
        return self._link(index, campaign_id, stream, seq, prev, digest, event_id)

    def _check_canonical_line(self, line: bytes, index: int) -> ChainBreak | bool | None:
        """Fast path for a line in canonical form: hash the stored bytes minus the ``hash``
        member, parse only the small head and tail. Returns None to fall back to parsing."""
        at = line.find(_HASH_KEY)
        if at < 0 or line[at + 73 : at + 74] != b'"':
            return None
        body = line[:at] + line[at + 74 :]
        prev_at = line.rfind(_PREV_KEY)
        if prev_at < at:
            return None
        try:
            head = orjson.loads(line[:at] + b"}")
            tail = orjson.loads(b"{" + line[prev_at + 1 :])
        except orjson.JSONDecodeError:
            return None
        prev = tail.get("prev_hash")
        if not isinstance(prev, str) or not prev.isascii():
            return None
        digest = line[at + 9 : at + 73].decode("ascii", "replace")
        if chain_hash(prev, body) != digest:
            return None  # not canonical or tampered: the dict path decides which
        campaign_id, stream, seq = head.get("campaign_id"), tail.get("stream"), tail.get("seq")
        if not (isinstance(campaign_id, str) and isinstance(stream, str) and type(seq) is int):
            return None
        event_id = head.get("event_id")
        result = self._link(
            index, campaign_id, stream, seq, prev, digest,
            event_id if isinstance(event_id, str) else None,
        )  # fmt: skip
        return result if result is not None else True


def verify_chain(envelopes: Iterable[Envelope], *, from_genesis: bool = True) -> ChainBreak | None:
    """First break in the chains of ``envelopes`` (in log order), or None if all are intact."""
    verifier = ChainVerifier(from_genesis=from_genesis)
    for index, envelope in enumerate(envelopes):
        broken = verifier.check_envelope(envelope, index)
        if broken is not None:
            return broken
    return None


def verify_chain_raw(
    items: Iterable[bytes | Mapping[str, Any]], *, from_genesis: bool = True
) -> ChainBreak | None:
    """Like :func:`verify_chain` on stored messages (bytes lines or parsed dicts), before any
    upcasting, so old-version events verify against the hash they were written with."""
    verifier = ChainVerifier(from_genesis=from_genesis)
    for index, item in enumerate(items):
        broken = verifier.check_raw(item, index)
        if broken is not None:
            return broken
    return None
