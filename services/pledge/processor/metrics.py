"""Prometheus metrics of the pledge processor (``pledgeflow_`` prefix, base units, no ids).

One :class:`ProcessorMetrics` per registry: production uses the process-wide default
registry (:func:`processor_metrics`); tests pass their own ``CollectorRegistry`` so that two
processors in one process never collide.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.events import RejectionReason
from services.streams.metrics import registered

if TYPE_CHECKING:
    from services.pledge.processor.partition import Outbox

__all__ = [
    "DEAD_LETTER_CAUSES",
    "TRANSACTION_RESULTS",
    "ProcessorMetrics",
    "observe_latencies",
    "processor_metrics",
    "record_commit",
]

#: Every ``cause`` the processor dead-letters with and every transaction ``result``. Their
#: children are created at 0 on start, so ``increase()`` sees the first one after a restart.
DEAD_LETTER_CAUSES = (
    "undecodable",
    "oversized",
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


def processor_metrics() -> ProcessorMetrics:
    """The processor's metrics in the process-wide default registry (created once)."""
    return registered(ProcessorMetrics.create, None)


def observe_latencies(histogram: Histogram, deltas: list[timedelta], offset: timedelta) -> None:
    """``histogram.observe(max(0.0, (offset + d).total_seconds()))`` for every ``d`` (sorts
    ``deltas``), in one pass: counts per bucket by bisection instead of a Python-level observe
    per command."""
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or bounds is None or total is None or len(buckets) != len(bounds):
        for delta in deltas:  # another prometheus_client layout: the public way
            histogram.observe(max(0.0, (offset + delta).total_seconds()))
        return
    deltas.sort()
    # Negative latencies (clock skew) count as 0.0, as the per-value observe did.
    positive = deltas[bisect_left(deltas, -offset) :]
    if positive:
        total.inc((sum(positive, timedelta()) + offset * len(positive)).total_seconds())
    done = 0
    count = len(deltas)
    for bucket, bound in zip(buckets, bounds, strict=True):
        if bound == math.inf:
            end = count
        else:
            end = bisect_right(deltas, timedelta(seconds=bound) - offset)
        if end > done:
            bucket.inc(end - done)
            done = end


def record_commit(m: ProcessorMetrics, out: Outbox) -> None:
    """Count what a committed transaction wrote (nothing is counted for an aborted one)."""
    m.transactions.labels("committed").inc()
    decided = sum(out.commands.values())
    if decided:
        m.batch_size.observe(decided)
    for (command_type, outcome), n in out.commands.items():
        m.commands.labels(command_type, outcome).inc(n)
    for reason, n in out.rejections.items():
        m.rejections.labels(reason).inc(n)
    for cause, n in out.dead_letters.items():
        m.dead_letters.labels(cause).inc(n)
    for event_type, n in out.events.items():
        m.events.labels(event_type).inc(n)
    if out.snapshot:
        m.snapshots.inc()
    if out.issued and out.now is not None:
        # latency = wall - issued_at = (wall - now) + (now - issued_at)
        offset = timedelta(seconds=time.time() - out.now.timestamp())
        observe_latencies(m.decision_latency, out.issued, offset)
