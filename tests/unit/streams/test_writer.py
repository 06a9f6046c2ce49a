"""PartitionWriter names a fencing that aiokafka reports only as a broken transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import IllegalOperation, KafkaError, ProducerFenced

from services.streams.writer import PartitionWriter


class _Batch:
    def append(self, **_: Any) -> int:
        return 1


class _FencedMidTransaction:
    """The producer as aiokafka leaves it when a newer owner fences it while a transaction is
    open: the batch already sent fails with ``failure``, the next send finds no transaction."""

    def __init__(self, failure: BaseException) -> None:
        self.failure = failure
        self.sent = 0
        self.aborted = False

    async def begin_transaction(self) -> None:
        return None

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, _batch: _Batch, _topic: str, *, partition: int) -> Any:
        self.sent += 1
        if self.sent > 1:
            raise IllegalOperation("Can't send messages while not in transaction")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(self.failure)
        return future

    async def abort_transaction(self) -> None:
        self.aborted = True
        raise AssertionError("Invalid state transition")  # aiokafka's, from a fatal state


def _writer(producer: _FencedMidTransaction) -> PartitionWriter:
    writer = PartitionWriter("127.0.0.1:1", "g", 3)
    writer.producer = producer  # type: ignore[assignment]
    return writer


RECORDS = {"a": [(b"k", b"v", [])], "b": [(b"k", b"w", [])]}


async def test_a_fencing_seen_as_no_transaction_is_raised_as_producer_fenced() -> None:
    producer = _FencedMidTransaction(ProducerFenced())
    with pytest.raises(ProducerFenced):
        await _writer(producer).write(RECORDS)
    assert producer.aborted


async def test_another_failure_behind_no_transaction_stays_what_it_is() -> None:
    producer = _FencedMidTransaction(KafkaError("broker gone"))
    with pytest.raises(IllegalOperation):
        await _writer(producer).write(RECORDS)
