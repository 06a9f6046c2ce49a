"""The settlement worker's labelled counters exist from start for every known label value."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.settlement.metrics import settlement_metrics


def test_known_children_start_at_zero() -> None:
    registry = CollectorRegistry()
    settlement_metrics(registry)
    value = registry.get_sample_value
    for kind in ("authorize", "capture", "void", "charge", "refund"):
        for outcome in ("ok", "declined"):
            labels = {"kind": kind, "outcome": outcome}
            assert value("pledgeflow_settlement_gateway_calls_total", labels) == 0.0
    for outcome in ("funded", "failed", "cancelled"):
        labels = {"outcome": outcome}
        assert value("pledgeflow_settlement_campaigns_settled_total", labels) == 0.0
    for event_type in ("PledgeCaptured", "PledgeCaptureFailed", "CampaignSettled"):
        labels = {"event_type": event_type}
        assert value("pledgeflow_settlement_events_total", labels) == 0.0
