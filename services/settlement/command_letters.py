"""Settlement commands the worker cannot decide: judged, and dead-lettered exactly once.

The worker reads every owned partition of ``settlement-commands`` from the beginning after
each rebuild (commands are idempotent), so a bad command is met again at every rebuild. Its
dead letter goes to ``settlement.dlq`` in the partition's own transaction together with a
mark, the next offset, committed for the group ``<settlement group>-commands`` (not the
reader's group, whose committed offsets KEDA reads as lag). A rebuilt owner reads the mark
back and does not dead-letter what lies below it again.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import Counter as CounterMetric

from schemas.codec import message_key
from schemas.errors import DecodeError
from schemas.settlement_commands import (
    RefundPledge,
    ReportRevenue,
    UpdatePaymentMethod,
    decode_settlement_command,
)
from services.streams import OutRecord, Rejected, dead_letter, key_partition

__all__ = ["CommandLetters"]

log = logging.getLogger("pledgeflow.settlement")


class CommandLetters:
    """Judges the records of ``settlement-commands`` (causes:
    :data:`~services.settlement.metrics.DEAD_LETTER_CAUSES`) and keeps each owned partition's
    mark."""

    def __init__(self, commands_topic: str, partitions: int, counter: CounterMetric) -> None:
        self.commands_topic = commands_topic
        self.partitions = partitions
        self._counter = counter
        #: ``partition -> next offset``: what lies below was dead-lettered in a committed
        #: transaction already.
        self._marks: dict[int, int] = {}
        #: This turn's dead letters per partition: the mark they move to and their causes.
        self._due: dict[int, tuple[int, Counter[str]]] = {}

    def judge(
        self, record: ConsumerRecord[bytes, bytes], partition: int
    ) -> RefundPledge | UpdatePaymentMethod | ReportRevenue | Rejected:
        """The command ``record`` carries, or why the worker must not decide it."""
        try:
            command = decode_settlement_command(record.value or b"")
        except DecodeError as exc:
            return Rejected("undecodable", str(exc))
        key = message_key(command.campaign_id)
        if record.key != key:
            return Rejected("wrong_key", f"key is not campaign id {command.campaign_id!r}")
        if key_partition(key, self.partitions) != partition:
            # Deciding it would write to a partition whose owner does not read this one.
            return Rejected("wrong_partition", f"{command.campaign_id!r} is not in {partition}")
        return command

    def reject(
        self, record: ConsumerRecord[Any, Any], partition: int, rejected: Rejected
    ) -> OutRecord | None:
        """The dead letter to write in ``partition``'s transaction this turn, or ``None`` when
        one was written before (below the mark)."""
        if record.offset < self._marks.get(partition, 0):
            return None
        log.error(
            "dead-lettering settlement command %s:%d@%d (%s): %s",
            record.topic,
            partition,
            record.offset,
            rejected.cause,
            rejected.detail,
        )
        _, causes = self._due.get(partition, (0, Counter()))
        causes[rejected.cause] += 1
        self._due[partition] = (record.offset + 1, causes)
        return dead_letter(record, rejected.cause, rejected.detail)

    def consumed(self, partition: int) -> dict[TopicPartition, int] | None:
        """The mark to commit with ``partition``'s transaction this turn (``None``: none)."""
        due = self._due.get(partition)
        if due is None:
            return None
        return {TopicPartition(self.commands_topic, partition): due[0]}

    def written(self, partition: int) -> None:
        """``partition``'s transaction committed: move its mark and count its dead letters."""
        due = self._due.pop(partition, None)
        if due is None:
            return
        self._marks[partition] = due[0]
        for cause, count in due[1].items():
            self._counter.labels(cause).inc(count)

    def forget(self, partitions: list[int]) -> None:
        """Drop what is known of ``partitions`` (released, fenced, or about to be rebuilt)."""
        for partition in partitions:
            self._marks.pop(partition, None)
            self._due.pop(partition, None)

    async def load(self, consumer: AIOKafkaConsumer, partitions: list[int]) -> None:
        """Read the committed marks of ``partitions`` not known yet (``consumer`` is in the
        marks' group)."""
        for partition in partitions:
            if partition not in self._marks:
                committed = await consumer.committed(TopicPartition(self.commands_topic, partition))
                self._marks[partition] = committed or 0
