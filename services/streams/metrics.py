"""Prometheus metrics of the stream runtime (``pledgeflow_stream_*``, ``pledgeflow_consumer_*``).

Labels are group names, topic names and partition numbers from configuration and the topic
registry (bounded), and cause codes from :class:`~services.streams.dead_letters.Cause`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from services.streams.dead_letters import Cause

__all__ = ["StreamMetrics", "registered", "stream_metrics"]


@dataclass(frozen=True)
class StreamMetrics:
    """What every stream reader reports."""

    lag: Gauge
    held: Gauge
    dead_letters: Counter
    records: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> StreamMetrics:
        """Register the runtime's metrics in ``registry``."""
        return cls(
            lag=Gauge(
                "pledgeflow_consumer_lag_records",
                "Last stable offset minus the group's committed offset, per partition.",
                ["group", "topic", "partition"],
                registry=registry,
            ),
            held=Gauge(
                "pledgeflow_stream_held_events",
                "Events read but waiting for their predecessor (seq - 1), per group.",
                ["group"],
                registry=registry,
            ),
            dead_letters=Counter(
                "pledgeflow_stream_dead_letters",
                "Records routed to the group's dead-letter topic, by cause.",
                ["group", "cause"],
                registry=registry,
            ),
            records=Counter(
                "pledgeflow_stream_records_read",
                "Records read from the stream topics, per group.",
                ["group"],
                registry=registry,
            ),
        )

    def track_group(self, group: str) -> None:
        """Create ``group``'s dead-letter series at 0 for every cause, so that
        ``increase()`` (alerts, panels) counts a group's first dead letter too."""
        for cause in Cause:
            self.dead_letters.labels(group, cause.value)


M = TypeVar("M")

#: ``create function -> its metrics in the default registry`` (each registered once).
_DEFAULTS: dict[Callable[[CollectorRegistry], Any], Any] = {}


def registered(create: Callable[[CollectorRegistry], M], registry: CollectorRegistry | None) -> M:
    """``create(registry)``; for the process-wide default registry (``None`` or ``REGISTRY``)
    created once and shared, since a metric name can be registered there only once."""
    if registry is not None and registry is not REGISTRY:
        return create(registry)
    found = _DEFAULTS.get(create)
    if found is None:
        found = _DEFAULTS[create] = create(REGISTRY)
    return cast(M, found)


def stream_metrics(registry: CollectorRegistry | None = None) -> StreamMetrics:
    """The runtime's metrics in ``registry`` (default: the process-wide one, created once)."""
    return registered(StreamMetrics.create, registry)
