"""Rebuilding per-partition state from a stream's own log, in seq order (recovery).

:func:`replay_partition` reads partition *p* of a stream's topics (``read_committed``, no
group) up to the last stable offset as of the call, and hands every event to ``apply`` in
seq order per (campaign, stream) through a :class:`~services.streams.orderer.SeqOrderer`
(seed it from a snapshot so that covered events are skipped). What never became consecutive
is reported as gaps, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka import ConsumerRecord, TopicPartition

from schemas.codec import decode
from schemas.envelope import Envelope
from services.streams.kafka_log import read_to_end
from services.streams.orderer import Gap, SeqOrderer, StreamKey

__all__ = ["Replayed", "replay_partition"]


@dataclass
class Replayed:
    """What one replay read and applied."""

    #: ``topic -> offset after the last committed record`` as of the start of the replay.
    ends: dict[str, int]
    applied: int
    #: Chains whose next event never arrived (empty for a sound log).
    gaps: list[Gap[StreamKey]] = field(default_factory=list)


async def replay_partition(
    bootstrap: str,
    topics: Iterable[str],
    partition: int,
    apply: Callable[[Envelope], None],
    *,
    orderer: SeqOrderer[StreamKey, Envelope] | None = None,
    start: Mapping[str, int] | None = None,
) -> Replayed:
    """Apply partition ``partition`` of ``topics`` from ``start`` (``topic -> offset``,
    default: the beginning) in seq order; events at or below the orderer's seeded seqs are
    skipped. Raises :class:`schemas.DecodeError` on an undecodable event (a writer's log)."""
    orderer = orderer if orderer is not None else SeqOrderer(limit=1 << 62)
    tps = [TopicPartition(topic, partition) for topic in topics]
    applied = 0

    def fold(record: ConsumerRecord[bytes, bytes]) -> None:
        nonlocal applied
        envelope = decode(record.value)
        _, run = orderer.push((envelope.campaign_id, envelope.stream), envelope.seq, envelope)
        for item in run:
            apply(item)
        applied += len(run)

    begin = None if start is None else {TopicPartition(t, partition): o for t, o in start.items()}
    ends = await read_to_end(bootstrap, tps, fold, start=begin)
    return Replayed(
        ends={tp.topic: offset for tp, offset in ends.items()},
        applied=applied,
        gaps=orderer.gaps(),
    )
