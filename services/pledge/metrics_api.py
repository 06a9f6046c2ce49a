"""Prometheus metrics of the ingest API (``pledgeflow_api_*``, base units, bounded labels).

Labels are route templates (``/v1/campaigns/{campaign_id}``), methods, status codes and
outcome enums - never ids. One :class:`ApiMetrics` per registry; production uses the
process-wide default registry, tests may pass their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

__all__ = ["WRITE_ROUTES", "ApiMetrics", "api_metrics"]

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True)
class ApiMetrics:
    """Every metric the API reports."""

    requests: Counter
    latency: Histogram
    idempotent_replays: Counter
    rate_limited: Counter
    produce_latency: Histogram
    prefer_wait: Counter
    batch_items: Counter
    redis_out_of_memory: Counter
    unsent: Counter
    token_retries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ApiMetrics:
        """Register the API's metrics in ``registry``."""
        metrics = cls(
            requests=Counter(
                "pledgeflow_api_requests",
                "HTTP requests answered, by route template, method and status code.",
                ["route", "method", "status"],
                registry=registry,
            ),
            latency=Histogram(
                "pledgeflow_api_request_duration_seconds",
                "Time from request received to response sent, by route template and method.",
                ["route", "method"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            idempotent_replays=Counter(
                "pledgeflow_api_idempotent_replays",
                "Responses served from the idempotency store (same key, same body).",
                ["route"],
                registry=registry,
            ),
            rate_limited=Counter(
                "pledgeflow_api_rate_limited",
                "Requests refused with 429 by the per-key token bucket.",
                ["route"],
                registry=registry,
            ),
            produce_latency=Histogram(
                "pledgeflow_api_kafka_produce_duration_seconds",
                "Time from handing commands to the producer to their acks=all acknowledgement.",
                ["kind"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            prefer_wait=Counter(
                "pledgeflow_api_prefer_wait",
                "Requests with Prefer: wait, by outcome (accepted, refused, timeout).",
                ["outcome"],
                registry=registry,
            ),
            batch_items=Counter(
                "pledgeflow_api_batch_items",
                "Items of POST /v1/pledges/batch, by result (pending, invalid, not_found).",
                ["result"],
                registry=registry,
            ),
            redis_out_of_memory=Counter(
                "pledgeflow_api_redis_out_of_memory",
                "Requests answered 503 because Redis refused a write at its maxmemory.",
                registry=registry,
            ),
            unsent=Counter(
                "pledgeflow_api_commands_unacknowledged",
                "Writes answered 503 because the broker did not acknowledge their command in "
                "time (or refused it); the Idempotency-Key stays reserved for a retry.",
                ["route"],
                registry=registry,
            ),
            token_retries=Counter(
                "pledgeflow_api_payment_token_retries",
                "Payment tokens appended again within their request because the produce "
                "round that acknowledged their command did not acknowledge them.",
                registry=registry,
            ),
        )
        # Known outcomes exist from start at 0, so a first one after a restart is a rise.
        for outcome in ("accepted", "refused", "timeout"):
            metrics.prefer_wait.labels(outcome)
        for result in ("pending", "invalid", "not_found"):
            metrics.batch_items.labels(result)
        for route in WRITE_ROUTES:
            metrics.unsent.labels(route)
        return metrics


#: The write routes (as their ``route`` label spells them): a broker outage's first 503 of each
#: is a rise from 0, not a new series ``increase()`` cannot see.
WRITE_ROUTES = (
    "/v1/campaigns",
    "/v1/campaigns/{campaign_id}/pledges",
    "/v1/pledges/batch",
    "/v1/campaigns/{campaign_id}/pledges/{pledge_id}/cancel",
    "/v1/campaigns/{campaign_id}/close",
)

_DEFAULT: ApiMetrics | None = None


def api_metrics(registry: CollectorRegistry | None = None) -> ApiMetrics:
    """The API's metrics in ``registry`` (default: the process-wide one, created once)."""
    global _DEFAULT
    if registry is not None and registry is not REGISTRY:
        return ApiMetrics.create(registry)
    if _DEFAULT is None:
        _DEFAULT = ApiMetrics.create(REGISTRY)
    return _DEFAULT
