"""The one place that judges a stream record and shapes a dead letter.

A dead letter keeps the record's key and bytes unchanged and says why and where in headers
(``dlq.cause``, ``dlq.detail``, ``dlq.topic``, ``dlq.partition``, ``dlq.offset``), so it can
be inspected and replayed. :func:`judge_event` turns a record of an event topic into an
:class:`~schemas.Envelope` or a :class:`Rejected` with a stable cause code.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord

from schemas.codec import decode_raw, envelope_from_raw, message_key
from schemas.envelope import Envelope
from schemas.errors import DecodeError
from schemas.events import EVENT_TYPES
from services.streams.kafka_security import kafka_client_kwargs

__all__ = [
    "Cause",
    "DeadLetter",
    "DeadLetterSender",
    "Rejected",
    "dead_letter",
    "judge_event",
    "outside_transaction",
]

log = logging.getLogger("pledgeflow.streams")

#: ``(key, value, headers)`` of a message for a dead-letter topic.
DeadLetter = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


class Cause(StrEnum):
    """Why a record was dead-lettered (the ``dlq.cause`` header and a metric label)."""

    #: Not JSON, truncated, or not an object.
    MALFORMED = "malformed"
    #: Bigger than the reader accepts.
    OVERSIZED = "oversized"
    #: An ``event_type`` this reader does not know.
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    #: A ``schema_version`` newer than this reader knows (deploy the reader first).
    FUTURE_VERSION = "future_schema_version"
    #: JSON of the right type and version whose fields do not validate.
    INVALID = "invalid"
    #: The message key is not the campaign id (it would sit in another partition).
    WRONG_KEY = "wrong_key"
    #: The event's type belongs on another topic.
    WRONG_TOPIC = "wrong_topic"
    #: Written outside any transaction, i.e. not by the stream's transactional writer.
    OUTSIDE_TRANSACTION = "outside_transaction"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that cannot be applied: its cause code and a one-line detail."""

    cause: str
    detail: str


def dead_letter(record: ConsumerRecord[Any, Any], cause: str, detail: str) -> DeadLetter:
    """A dead letter for ``record``: its key and bytes unchanged, why and where in headers."""
    value = record.value if isinstance(record.value, bytes) else b""
    headers = [
        ("dlq.cause", cause.encode()),
        ("dlq.detail", detail[:2000].encode("utf-8", "replace")),
        ("dlq.topic", record.topic.encode()),
        ("dlq.partition", str(record.partition).encode()),
        ("dlq.offset", str(record.offset).encode()),
    ]
    return record.key, value, headers


def outside_transaction(record: ConsumerRecord[Any, Any]) -> bool:
    """Whether ``record`` came in a non-transactional batch (marked by the stream reader's
    fetch hook; see :mod:`services.streams.transactional_marks`)."""
    return record.__dict__.get("outside_transaction", False) is True


def judge_event(
    record: ConsumerRecord[bytes, bytes],
    *,
    topic_of: dict[str, str],
    max_bytes: int,
) -> Envelope | Rejected:
    """The envelope carried by ``record`` of an event topic, or why it cannot be applied.

    ``topic_of`` maps each event type to its (prefixed) topic; a record over ``max_bytes`` is
    not even parsed.
    """
    value = record.value
    if value is None:
        return Rejected(Cause.MALFORMED, "no value (a tombstone)")
    if len(value) > max_bytes:
        return Rejected(Cause.OVERSIZED, f"{len(value)} bytes, the limit is {max_bytes}")
    try:
        raw = decode_raw(value)
    except DecodeError as exc:
        return Rejected(Cause.MALFORMED, str(exc))
    event_type = raw.get("event_type")
    model = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if model is None:
        return Rejected(Cause.UNKNOWN_EVENT_TYPE, f"event_type: unknown {event_type!r}")
    version = raw.get("schema_version")
    if type(version) is int and version > model.schema_version:
        return Rejected(
            Cause.FUTURE_VERSION,
            f"schema_version: {event_type} v{version}, this reader knows up to "
            f"v{model.schema_version}",
        )
    try:
        envelope = envelope_from_raw(raw)
    except DecodeError as exc:
        return Rejected(Cause.INVALID, str(exc))
    if record.key != message_key(envelope.campaign_id):
        return Rejected(Cause.WRONG_KEY, f"key is not campaign id {envelope.campaign_id!r}")
    if topic_of.get(envelope.event_type) != record.topic:
        return Rejected(Cause.WRONG_TOPIC, f"{envelope.event_type} on {record.topic}")
    if outside_transaction(record):
        return Rejected(Cause.OUTSIDE_TRANSACTION, "not written by a transactional producer")
    return envelope


class DeadLetterSender:
    """Sends rejected records to one dead-letter topic (idempotent ``acks=all`` producer, not
    transactional: a dead letter is written once the reader judged the record, before it
    commits past it; a redelivery may write it twice)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            **kafka_client_kwargs(),
            acks="all",
            enable_idempotence=True,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, rejects: list[tuple[ConsumerRecord[bytes, bytes], Rejected]]) -> None:
        """Log and send every rejected record; returns once all are acknowledged."""
        sends = []
        for record, rejected in rejects:
            log.error(
                "dead-lettering %s:%d@%d (%s): %s",
                record.topic,
                record.partition,
                record.offset,
                rejected.cause,
                rejected.detail,
            )
            key, value, headers = dead_letter(record, rejected.cause, rejected.detail)
            sends.append(await self._producer.send(self.topic, value, key=key, headers=headers))
        await asyncio.gather(*sends)
