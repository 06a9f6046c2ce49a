"""Prometheus metrics of the pledge processor (``pledgeflow_`` prefix, base units, no ids).

One :class:`ProcessorMetrics` per registry: production uses the process-wide default
registry (:func:`processor_metrics`); tests pass their own ``CollectorRegistry`` so that two
processors in one process never collide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from schemas.events import RejectionReason

__all__ = [
    "DEAD_LETTER_CAUSES",
    "TRANSACTION_RESULTS",
    "ProcessorMetrics",
    "processor_metrics",
    "serve_metrics",
]

#: Every ``cause`` the processor dead-letters with and every transaction ``result``. Their
#: children are created at 0 on start, so ``increase()`` sees the first one after a restart.
DEAD_LETTER_CAUSES = (
    "undecodable",
    "evolve_failed",
    "decide_failed",
    "wrong_key",
    "wrong_partition",
)
TRANSACTION_RESULTS = ("committed", "aborted")

# Decision latency spans a poll, a transaction and a commit: milliseconds to seconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RECOVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10_000)


@dataclass(frozen=True)
class ProcessorMetrics:
    """Every metric the processor reports; labels are bounded enums (types, outcomes, codes)."""

    commands: Counter
    rejections: Counter
    decision_latency: Histogram
    campaigns_open: Gauge
    recovery: Histogram
    batch_size: Histogram
    transactions: Counter
    events: Counter
    dead_letters: Counter
    snapshots: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ProcessorMetrics:
        """Register the processor's metrics in ``registry``."""
        metrics = cls(
            commands=Counter(
                "pledgeflow_processor_commands",
                "Commands decided, by command type and outcome "
                "(accepted, rejected, ignored = already decided, dead_lettered).",
                ["command_type", "outcome"],
                registry=registry,
            ),
            rejections=Counter(
                "pledgeflow_processor_rejections",
                "Commands refused by the domain, by stable rejection reason.",
                ["reason"],
                registry=registry,
            ),
            decision_latency=Histogram(
                "pledgeflow_processor_decision_latency_seconds",
                "From a command's issued_at to the commit of the transaction holding its events.",
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            campaigns_open=Gauge(
                "pledgeflow_processor_campaigns_open",
                "Open campaigns in the partitions this worker owns.",
                registry=registry,
            ),
            recovery=Histogram(
                "pledgeflow_processor_recovery_seconds",
                "Time to rebuild one partition's campaigns from snapshot + event log.",
                buckets=_RECOVERY_BUCKETS,
                registry=registry,
            ),
            batch_size=Histogram(
                "pledgeflow_processor_batch_commands",
                "Commands written per Kafka transaction.",
                buckets=_BATCH_BUCKETS,
                registry=registry,
            ),
            transactions=Counter(
                "pledgeflow_processor_transactions",
                "Kafka transactions by result (committed, aborted).",
                ["result"],
                registry=registry,
            ),
            events=Counter(
                "pledgeflow_processor_events_written",
                "Events committed, by event type.",
                ["event_type"],
                registry=registry,
            ),
            dead_letters=Counter(
                "pledgeflow_processor_dead_letters",
                "Commands routed to the dead-letter topic, by cause.",
                ["cause"],
                registry=registry,
            ),
            snapshots=Counter(
                "pledgeflow_processor_snapshots",
                "Partition snapshots written to the snapshot topic.",
                registry=registry,
            ),
        )
        for cause in DEAD_LETTER_CAUSES:
            metrics.dead_letters.labels(cause)
        for result in TRANSACTION_RESULTS:
            metrics.transactions.labels(result)
        for reason in RejectionReason:
            metrics.rejections.labels(reason.value)
        return metrics

    def track_open_campaigns(self, count: Callable[[], int]) -> None:
        """Compute the open-campaign gauge at scrape time (no per-batch bookkeeping)."""
        self.campaigns_open.set_function(lambda: float(count()))


_DEFAULT: ProcessorMetrics | None = None


def processor_metrics() -> ProcessorMetrics:
    """The processor's metrics in the process-wide default registry (created once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ProcessorMetrics.create(REGISTRY)
    return _DEFAULT


def serve_metrics(port: int) -> None:
    """Serve ``/metrics`` of the default registry on ``port`` (no-op when 0)."""
    if port > 0:
        from prometheus_client import start_http_server

        start_http_server(port)
