"""Prometheus metrics of the read-model projector (``pledgeflow_readmodel_*``).

What ops need to trust the GET endpoints: how far the projection is behind the log (lag),
whether events are stuck waiting for a predecessor (held campaigns), and whether anything was
dead-lettered. Labels are topic names and event types from the registry - never ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.streams.metrics import registered

__all__ = ["ReadModelMetrics", "readmodel_metrics"]


@dataclass(frozen=True)
class ReadModelMetrics:
    """Every metric the projector reports."""

    applied: Counter
    lag: Gauge
    held_campaigns: Gauge
    dead_letters: Counter
    rebuilds: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ReadModelMetrics:
        """Register the projector's metrics in ``registry``."""
        metrics = cls(
            applied=Counter(
                "pledgeflow_readmodel_events_applied",
                "Events applied to the read model, by event type (redeliveries not counted).",
                ["event_type"],
                registry=registry,
            ),
            lag=Gauge(
                "pledgeflow_readmodel_lag_events",
                "Committed events on a topic not read yet by this projector (sum of partitions).",
                ["topic"],
                registry=registry,
            ),
            held_campaigns=Gauge(
                "pledgeflow_readmodel_held_campaigns",
                "Campaigns with events read but waiting for their predecessor (seq - 1).",
                registry=registry,
            ),
            dead_letters=Counter(
                "pledgeflow_readmodel_dead_letters",
                "Undecodable events routed to readmodel.dlq.",
                registry=registry,
            ),
            rebuilds=Counter(
                "pledgeflow_readmodel_rebuilds",
                "Rebuilds of the read model from the log by a running projector, by cause: "
                "redis_empty (Redis lost the read model: restarted without its data, flushed) "
                "or redis_replaced (another Redis, or another epoch of it, answers now).",
                ["cause"],
                registry=registry,
            ),
        )
        for cause in REBUILD_CAUSES:
            metrics.rebuilds.labels(cause)
        return metrics


#: The causes of a rebuild (pre-created at 0, so a first rebuild is a rise).
REBUILD_CAUSES = ("redis_empty", "redis_replaced")


def readmodel_metrics(registry: CollectorRegistry | None = None) -> ReadModelMetrics:
    """The projector's metrics in ``registry`` (default: the process-wide one, created once)."""
    return registered(ReadModelMetrics.create, registry)
