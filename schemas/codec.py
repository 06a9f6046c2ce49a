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

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from pydantic import TypeAdapter, ValidationError

from schemas.canonical import GENESIS_HASH, chain_hash, dumps, format_timestamp
from schemas.envelope import Envelope, stamp_encoded
from schemas.errors import DecodeError, describe_validation_error
from schemas.events import EVENT_TYPES, Event, Stream
from schemas.upcasters import upcast

T = TypeVar("T")

__all__ = [
    "ChainBreak",
    "ChainVerifier",
    "decode",
    "decode_raw",
    "decode_validated",
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
    envelope, _, data = stamp_encoded(
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
    return envelope, data


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


def decode_validated(adapter: TypeAdapter[T], data: bytes | bytearray | memoryview | str) -> T:
    """One message parsed (:func:`decode_raw`) and validated by ``adapter`` (the commands'
    discriminated unions); only :class:`DecodeError` escapes, naming the bad field."""
    raw = decode_raw(data)
    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        raise DecodeError(describe_validation_error(exc)) from None


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
_HEAD = b'{"campaign_id":"'
_AFTER_CAMPAIGN = b'","causation_id":"'
_TAIL = re.compile(rb'","schema_version":\d+,"seq":(\d+),"stream":"([a-z]+)"}')
_GENESIS_BYTES = GENESIS_HASH.encode()
_sha256 = hashlib.sha256

# Chain key: the campaign id as it appears escaped in canonical JSON, and the stream, as bytes,
# so the fast path on stored lines never has to decode text.
_ChainKey = tuple[bytes, bytes]


def _chain_key(campaign_id: str, stream: str) -> _ChainKey:
    return orjson.dumps(campaign_id)[1:-1], stream.encode()


class ChainVerifier:
    """Streaming verifier of many (campaign, stream) chains interleaved in one sequence.

    Feed items in log order; each ``check_*`` returns a :class:`ChainBreak` or None. With
    ``from_genesis=False`` the first event seen of each chain is trusted as its anchor (for
    verifying a slice of a log).
    """

    def __init__(self, *, from_genesis: bool = True) -> None:
        self.from_genesis = from_genesis
        self.count = 0
        self._heads: dict[_ChainKey, tuple[int, bytes]] = {}

    @property
    def heads(self) -> dict[tuple[str, str], tuple[int, str]]:
        """``(campaign_id, stream) -> (last seq, last hash)`` of every chain verified so far."""
        return {
            (orjson.loads(b'"' + campaign + b'"'), stream.decode()): (seq, digest.decode())
            for (campaign, stream), (seq, digest) in self._heads.items()
        }

    def _link(self, key: _ChainKey, seq: int, prev: bytes, digest: bytes) -> str | None:
        """Advance chain ``key``; on a break return its reason and description."""
        head = self._heads.get(key)
        if head is None:
            expected_seq, expected_prev = (1, _GENESIS_BYTES) if self.from_genesis else (seq, prev)
        else:
            expected_seq, expected_prev = head[0] + 1, head[1]
        if seq != expected_seq:
            return f"seq_gap:seq {seq} where {expected_seq} was expected"
        if prev != expected_prev:
            return f"prev_hash_mismatch:seq {seq}: prev_hash is not the previous event's hash"
        self._heads[key] = (seq, digest)
        self.count += 1
        return None

    @staticmethod
    def _break(
        index: int, problem: str, campaign_id: str, stream: str, event_id: str | None
    ) -> ChainBreak:
        reason, _, detail = problem.partition(":")
        return ChainBreak(index, reason, event_id, f"{campaign_id}/{stream} {detail}")

    def check_envelope(self, envelope: Envelope, index: int) -> ChainBreak | None:
        """Check a decoded envelope. Valid only for events stored at their current version
        (an upcast envelope no longer has its stored bytes: verify those with ``check_raw``)."""
        campaign_id, stream = envelope.campaign_id, envelope.stream
        body = envelope_body(envelope, with_hash=False)
        if chain_hash(envelope.prev_hash, dumps(body)) != envelope.hash:
            problem = f"hash_mismatch:seq {envelope.seq}: hash does not match the event's content"
        else:
            link_problem = self._link(
                _chain_key(campaign_id, stream), envelope.seq, envelope.prev_hash.encode(),
                envelope.hash.encode(),
            )  # fmt: skip
            if link_problem is None:
                return None
            problem = link_problem
        return self._break(index, problem, campaign_id, stream, str(envelope.event_id))

    def check_raw(
        self, item: bytes | bytearray | Mapping[str, Any], index: int
    ) -> ChainBreak | None:
        """Check one stored message (its bytes, or the dict parsed from them)."""
        if isinstance(item, bytes) and self._check_canonical_line(item, index):
            return None
        if isinstance(item, bytes | bytearray):
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
            problem = f"hash_mismatch:seq {seq}: hash does not match the event's content"
        else:
            key = _chain_key(campaign_id, stream)
            link_problem = self._link(key, seq, prev.encode(), digest.encode())
            if link_problem is None:
                return None
            problem = link_problem
        return self._break(index, problem, campaign_id, stream, event_id)

    def check_lines(self, lines: Iterable[bytes], start: int = 0) -> ChainBreak | None:
        """Check stored lines in order (``start`` = index of the first); the auditor's hot loop.

        Same result as calling :meth:`check_raw` on each, with the canonical fast path inlined.
        """
        heads = self._heads
        get = heads.get
        sha256 = _sha256
        genesis_ok = self.from_genesis
        for index, line in enumerate(lines, start):
            at = line.find(_HASH_KEY)
            prev_at = line.rfind(_PREV_KEY)
            tail = _TAIL.match(line, prev_at + 78) if prev_at > at >= 0 else None
            if tail is not None and line.startswith(_HEAD):
                stop = tail.end()
                prev = line[prev_at + 14 : prev_at + 78]
                digest = line[at + 9 : at + 73]
                if (stop == len(line) or not line[stop:].strip()) and sha256(
                    prev + line[:at] + line[at + 74 : stop]
                ).hexdigest().encode() == digest:
                    end = line.find(_AFTER_CAMPAIGN, 16)
                    key = (line[16:end], tail.group(2))
                    seq = int(tail.group(1))
                    head = get(key)
                    if (
                        (head is not None and seq == head[0] + 1 and prev == head[1])
                        or (head is None and end > 0 and not genesis_ok)
                        or (head is None and end > 0 and seq == 1 and prev == _GENESIS_BYTES)
                    ):
                        heads[key] = (seq, digest)
                        self.count += 1
                        continue
            broken = self.check_raw(line, index)
            if broken is not None:
                return broken
        return None

    def _check_canonical_line(self, line: bytes, index: int) -> bool:
        """Fast path for an intact line in canonical form: hash the stored bytes minus the
        ``hash`` member and read the few chain fields at their fixed places (keys are sorted),
        without parsing the payload. True when the line verified and linked; False sends it
        down the dict path, which tells a non-canonical line from a broken one."""
        at = line.find(_HASH_KEY)
        prev_at = line.rfind(_PREV_KEY)
        if at < 0 or prev_at < at:
            return False
        tail = _TAIL.match(line, prev_at + 78)
        if tail is None:
            return False
        stop = tail.end()
        if stop != len(line) and line[stop:].strip():
            return False
        prev = line[prev_at + 14 : prev_at + 78]
        digest = line[at + 9 : at + 73]
        if _sha256(prev + line[:at] + line[at + 74 : stop]).hexdigest().encode() != digest:
            return False
        end = line.find(_AFTER_CAMPAIGN, 16)
        if end < 0 or not line.startswith(_HEAD):
            return False
        key = (line[16:end], tail.group(2))
        seq = int(tail.group(1))
        head = self._heads.get(key)
        if head is not None and seq == head[0] + 1 and prev == head[1]:
            self._heads[key] = (seq, digest)
            self.count += 1
            return True
        if head is None and (not self.from_genesis or (seq == 1 and prev == _GENESIS_BYTES)):
            self._heads[key] = (seq, digest)
            self.count += 1
            return True
        return False


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
    if isinstance(items, list) and all(type(item) is bytes for item in items):
        return verifier.check_lines(items)
    for index, item in enumerate(items):
        broken = verifier.check_raw(item, index)
        if broken is not None:
            return broken
    return None
