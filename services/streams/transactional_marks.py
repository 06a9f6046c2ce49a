"""Marks records of non-transactional batches, which aiokafka's consumer does not expose.

Every event topic is written only by transactional writers; a record that arrives in a
non-transactional batch was appended by something else (a misconfigured tool, a forger) and
must not be applied. aiokafka (pinned at 0.14) knows ``batch.is_transactional`` while it
unpacks a fetch but drops it from :class:`~aiokafka.ConsumerRecord`. :func:`install` swaps
the fetcher's ``PartitionRecords`` for a subclass that watches each batch and puts
``outside_transaction = True`` in the ``__dict__`` of the records of non-transactional
batches (transactional ones are left untouched, so the cost is one attribute read per batch).
It changes nothing else, so other consumers of the process are unaffected; only
:func:`services.streams.dead_letters.outside_transaction` reads the mark.
"""

from __future__ import annotations

from typing import Any

from aiokafka.consumer import fetcher as _fetcher

__all__ = ["install"]

_Base: Any = _fetcher.PartitionRecords


class _BatchWatcher:
    """The fetch's record batches, remembering whether the current one is transactional."""

    __slots__ = ("_records", "transactional")

    def __init__(self, records: Any) -> None:
        self._records = records
        self.transactional = True

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is not None:
            self.transactional = bool(batch.is_transactional) or bool(batch.is_control_batch)
        return batch


class _MarkingPartitionRecords(_Base):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The unpacking generator has not started yet: it reads self._records on first use.
        self._watcher = _BatchWatcher(self.__dict__["_records"])
        self.__dict__["_records"] = self._watcher

    def _consumer_record(self, tp: Any, record: Any) -> Any:
        consumer_record = super()._consumer_record(tp, record)
        if not self._watcher.transactional:
            consumer_record.__dict__["outside_transaction"] = True
        return consumer_record


def install() -> None:
    """Make every consumer of this process mark non-transactional records (idempotent)."""
    if _fetcher.PartitionRecords is not _MarkingPartitionRecords:
        _fetcher.PartitionRecords = _MarkingPartitionRecords
