"""The campaign processor: the single writer of campaign events (one deployable).

``worker`` (the consumer loop, rebalancing, transactions), ``decide`` (the hot loop of one
partition's poll), ``recovery`` (rebuilding a partition from snapshot + log), ``partition``
(per-partition state and outbox), ``metrics``, ``config``, and ``app`` (composition root and
``pledgeflow processor run``).
"""

from services.pledge.processor.config import ProcessorSettings
from services.pledge.processor.recovery import RecoveredPartition, RecoveryError, recover_partition
from services.pledge.processor.worker import BeforeCommit, Clock, Processor, utc_now

__all__ = [
    "BeforeCommit",
    "Clock",
    "Processor",
    "ProcessorSettings",
    "RecoveredPartition",
    "RecoveryError",
    "recover_partition",
    "utc_now",
]
