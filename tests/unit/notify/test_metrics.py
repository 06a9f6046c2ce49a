"""Notify's metrics exist at 0 for every known label value before the first event."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.notify.metrics import NotifyMetrics


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_failure_series_exist_at_zero_before_any_delivery() -> None:
    registry = CollectorRegistry()
    NotifyMetrics.create(registry)
    for channel in ("webhook", "email"):
        assert sample(registry, "pledgeflow_notify_dead_letters_total", channel=channel) == 0
        assert (
            sample(registry, "pledgeflow_notify_delivery_latency_seconds_count", channel=channel)
            == 0
        )
        for outcome in ("sent", "failed", "dead", "skipped"):
            assert (
                sample(
                    registry,
                    "pledgeflow_notify_deliveries_total",
                    channel=channel,
                    outcome=outcome,
                )
                == 0
            )
    for reason in ("contact_erased", "no_contact", "endpoint_removed", "malformed"):
        assert sample(registry, "pledgeflow_notify_skipped_total", reason=reason) == 0
    assert sample(registry, "pledgeflow_notify_pending") == 0
    assert sample(registry, "pledgeflow_notify_open_circuits") == 0
