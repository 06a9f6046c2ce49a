"""Prometheus metrics of the notify worker (``pledgeflow_`` prefix, base units, no ids).

One :class:`NotifyMetrics` per registry: production uses the process-wide default registry,
tests their own ``CollectorRegistry`` so that two dispatchers in one process never collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.notify.domain import Channel
from services.streams.dead_letters import Cause

__all__ = ["CHANNELS", "OUTCOMES", "SKIP_REASONS", "NotifyMetrics", "SkipReason"]

#: Why a notification is not sent by design (the ``reason`` label of ``skipped``, with the
#: stream's dead-letter causes for records the worker cannot read).
SkipReason = Literal["contact_erased", "no_contact", "endpoint_removed"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)
OUTCOMES = ("sent", "failed", "dead", "skipped")
SKIP_REASONS: tuple[str, ...] = (*get_args(SkipReason), *(cause.value for cause in Cause))

# From an event's occurred_at to delivery: sub-second when healthy, up to a day with retries.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86_400.0)


@dataclass(frozen=True)
class NotifyMetrics:
    """Every metric notify reports; labels are bounded enums (channel, outcome, reason)."""

    deliveries: Counter
    latency: Histogram
    pending: Gauge
    dead_letters: Counter
    open_circuits: Gauge
    skipped: Counter
    fenced: Counter
    assignments: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> NotifyMetrics:
        """Register notify's metrics in ``registry``, every known label value at 0: a series
        that first appears with its first failure would make ``increase()`` (alerts, panels)
        miss that failure."""
        metrics = cls(
            deliveries=Counter(
                "pledgeflow_notify_deliveries",
                "Delivery attempts by channel (webhook, email) and outcome "
                "(sent, failed = will retry, dead = dead-lettered, skipped).",
                ["channel", "outcome"],
                registry=registry,
            ),
            latency=Histogram(
                "pledgeflow_notify_delivery_latency_seconds",
                "From the causing event's occurred_at to the successful delivery.",
                ["channel"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            pending=Gauge(
                "pledgeflow_notify_pending",
                "Notifications waiting for a first attempt or a retry.",
                registry=registry,
            ),
            dead_letters=Counter(
                "pledgeflow_notify_dead_letters",
                "Notifications written to notify.dlq after their last attempt.",
                ["channel"],
                registry=registry,
            ),
            open_circuits=Gauge(
                "pledgeflow_notify_open_circuits",
                "Delivery lanes (webhook endpoints, the SMTP relay) whose circuit is open.",
                registry=registry,
            ),
            skipped=Counter(
                "pledgeflow_notify_skipped",
                "Notifications not sent by design, by reason (contact_erased, no_contact, "
                "endpoint_removed), and records not read, by dead-letter cause.",
                ["reason"],
                registry=registry,
            ),
            fenced=Counter(
                "pledgeflow_notify_fenced",
                "Times this worker's notify-stream writer of a partition was fenced by a newer "
                "owner (it was a zombie, or lost the partition mid-write) and stood down.",
                registry=registry,
            ),
            assignments=Counter(
                "pledgeflow_notify_assignments",
                "Partition assignments this worker received from its consumer group (one per "
                "rebalance it took part in; a static member's restart within the session "
                "timeout causes none in the others).",
                registry=registry,
            ),
        )
        for channel in CHANNELS:
            metrics.latency.labels(channel)
            metrics.dead_letters.labels(channel)
            for outcome in OUTCOMES:
                metrics.deliveries.labels(channel, outcome)
        for reason in SKIP_REASONS:
            metrics.skipped.labels(reason)
        return metrics
