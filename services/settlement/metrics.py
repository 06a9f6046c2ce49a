"""Prometheus metrics of the settlement worker (``pledgeflow_settlement_*``; no ids in labels).

Captures, voids, charges and refunds by outcome; gateway latency; retries pending; amounts
settled per currency (counters in minor units); time from close to settled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from schemas.events import EVENT_TYPES, CloseOutcome
from services.settlement.domain import CallKind

#: Why a settlement command is dead-lettered (the ``dlq.cause`` header and metric label).
DEAD_LETTER_CAUSES = ("undecodable", "wrong_key", "wrong_partition")

__all__ = ["SettlementMetrics", "settlement_metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SETTLE_BUCKETS = (1, 5, 30, 60, 300, 3600, 86_400, 3 * 86_400, 7 * 86_400, 14 * 86_400)


@dataclass(frozen=True)
class SettlementMetrics:
    """The worker's instruments."""

    gateway_calls: Counter
    gateway_latency: Histogram
    gateway_unavailable: Counter
    retries_pending: Gauge
    in_flight: Gauge
    settled_minor: Counter
    campaigns_settled: Counter
    close_to_settled: Histogram
    oldest_unsettled: Gauge
    events: Counter
    dead_letters: Counter


def settlement_metrics(registry: CollectorRegistry = REGISTRY) -> SettlementMetrics:
    """Register the instruments on ``registry`` (tests pass their own); every child with a
    known label value starts at 0, so a first capture or settlement after a restart is a rise
    ``increase()`` sees, and the dashboard has a series before it."""
    metrics = SettlementMetrics(
        gateway_calls=Counter(
            "pledgeflow_settlement_gateway_calls_total",
            "Gateway calls answered, by kind (authorize/capture/void/charge/refund) and outcome",
            ["kind", "outcome"],
            registry=registry,
        ),
        gateway_latency=Histogram(
            "pledgeflow_settlement_gateway_latency_seconds",
            "Time from a gateway call to its answer",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        gateway_unavailable=Counter(
            "pledgeflow_settlement_gateway_unavailable_total",
            "Gateway calls that found the gateway unreachable (made again after a back-off)",
            registry=registry,
        ),
        retries_pending=Gauge(
            "pledgeflow_settlement_retries_pending",
            "Pledges whose capture failed and will be retried",
            registry=registry,
        ),
        in_flight=Gauge(
            "pledgeflow_settlement_gateway_in_flight",
            "Gateway calls running now",
            registry=registry,
        ),
        settled_minor=Counter(
            "pledgeflow_settlement_amount_minor_total",
            "Money settled, in minor units, by currency and kind (gross/commission/fees/payout)",
            ["currency", "kind"],
            registry=registry,
        ),
        campaigns_settled=Counter(
            "pledgeflow_settlement_campaigns_settled_total",
            "Campaigns settled, by outcome",
            ["outcome"],
            registry=registry,
        ),
        close_to_settled=Histogram(
            "pledgeflow_settlement_close_to_settled_seconds",
            "Time from CampaignClosed to CampaignSettled",
            buckets=_SETTLE_BUCKETS,
            registry=registry,
        ),
        oldest_unsettled=Gauge(
            "pledgeflow_settlement_oldest_unsettled_close_age_seconds",
            "Age of the oldest CampaignClosed not settled yet (0 when none is waiting)",
            registry=registry,
        ),
        events=Counter(
            "pledgeflow_settlement_events_total",
            "Settlement events written, by type",
            ["event_type"],
            registry=registry,
        ),
        dead_letters=Counter(
            "pledgeflow_settlement_dead_letters_total",
            "Settlement commands routed to settlement.dlq, by cause",
            ["cause"],
            registry=registry,
        ),
    )
    for kind in get_args(CallKind):
        metrics.gateway_latency.labels(kind)
        for outcome in ("ok", "declined"):
            metrics.gateway_calls.labels(kind, outcome)
    for close_outcome in get_args(CloseOutcome):
        metrics.campaigns_settled.labels(close_outcome)
    for event_type, model in EVENT_TYPES.items():
        if model.stream == "settlement":
            metrics.events.labels(event_type)
    for cause in DEAD_LETTER_CAUSES:
        metrics.dead_letters.labels(cause)
    return metrics
