"""The stream runtime's dead-letter counter exists at 0 for every cause of a tracked group."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.streams.dead_letters import Cause
from services.streams.metrics import stream_metrics


def test_a_tracked_group_has_every_dead_letter_cause_at_zero() -> None:
    registry = CollectorRegistry()
    metrics = stream_metrics(registry)
    name = "pledgeflow_stream_dead_letters_total"
    assert registry.get_sample_value(name, {"group": "g1", "cause": "malformed"}) is None
    metrics.track_group("g1")
    for cause in Cause:
        assert registry.get_sample_value(name, {"group": "g1", "cause": cause.value}) == 0
    assert registry.get_sample_value(name, {"group": "g2", "cause": "malformed"}) is None
