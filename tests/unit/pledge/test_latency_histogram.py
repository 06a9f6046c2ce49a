"""The processor's batched latency observation counts exactly what one observe per command
would (bucket counts and sum), including clock skew."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry, Histogram

from services.pledge.processor.metrics import observe_latencies

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _samples(histogram: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{s.labels.get('le', '')}": s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def _histogram() -> Histogram:
    return Histogram("latency_seconds", "test", buckets=BUCKETS, registry=CollectorRegistry())


@pytest.mark.parametrize("offset_s", [0.0, 0.004, 1.5, -0.02, 3600.0])
def test_batched_latencies_count_as_one_observe_each(offset_s: float) -> None:
    micros = [-30_000, -1, 0, 1, 4_000, 5_000, 9_999, 10_000, 250_000, 2_500_000, 61_000_000]
    deltas = [timedelta(microseconds=m) for m in micros]
    offset = timedelta(seconds=offset_s)
    batched, one_by_one = _histogram(), _histogram()
    observe_latencies(batched, list(deltas), offset)
    for delta in deltas:
        one_by_one.observe(max(0.0, (offset + delta).total_seconds()))
    got, expected = _samples(batched), _samples(one_by_one)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name
