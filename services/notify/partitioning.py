"""Which partition a campaign's key falls in (Kafka's default partitioner), as a function."""

from __future__ import annotations

from collections.abc import Callable

from services.streams.kafka_log import key_partition

__all__ = ["partition_function"]


def partition_function(partitions: int) -> Callable[[str], int]:
    """``campaign_id -> partition`` among ``partitions`` (the same as every campaign topic)."""
    return lambda campaign_id: key_partition(campaign_id.encode(), partitions)
