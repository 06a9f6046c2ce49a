"""Prometheus metrics of the audit checkpointer (``pledgeflow_audit_*``, bounded labels).

Alert on ``pledgeflow_audit_checkpoint_last_timestamp_seconds`` growing old: without fresh
checkpoints a rewrite of recent history would go undetected.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from services.audit.checkpoints import REASONS

__all__ = ["CheckpointerMetrics", "checkpointer_metrics"]


@dataclass(frozen=True)
class CheckpointerMetrics:
    """What the checkpointer reports."""

    published: Counter
    last_published: Gauge
    chains: Gauge
    events: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> CheckpointerMetrics:
        """Register the checkpointer's metrics in ``registry``."""
        metrics = cls(
            published=Counter(
                "pledgeflow_audit_checkpoints_published_total",
                "Signed checkpoints published, by why they were made.",
                ["reason"],
                registry=registry,
            ),
            last_published=Gauge(
                "pledgeflow_audit_checkpoint_last_timestamp_seconds",
                "Unix time of the last published checkpoint.",
                registry=registry,
            ),
            chains=Gauge(
                "pledgeflow_audit_checkpointer_chains",
                "Chains whose head the checkpointer tracks.",
                registry=registry,
            ),
            events=Counter(
                "pledgeflow_audit_checkpointer_events_total",
                "Events read by the checkpointer.",
                registry=registry,
            ),
        )
        for reason in REASONS:
            metrics.published.labels(reason=reason)
        return metrics


_DEFAULT: CheckpointerMetrics | None = None


def checkpointer_metrics() -> CheckpointerMetrics:
    """The checkpointer's metrics in the process-wide default registry (created once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = CheckpointerMetrics.create(REGISTRY)
    return _DEFAULT
