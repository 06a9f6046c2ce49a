"""The API's labelled counters exist from start for every write route."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.pledge.api import ingest
from services.pledge.metrics_api import WRITE_ROUTES, api_metrics


def test_every_write_route_is_known_to_the_metrics() -> None:
    routes = {
        ingest.LAUNCH_ROUTE,
        ingest.PLEDGE_ROUTE,
        ingest.BATCH_ROUTE,
        ingest.CANCEL_ROUTE,
        ingest.CLOSE_ROUTE,
    }
    assert routes == set(WRITE_ROUTES)


def test_unacknowledged_commands_start_at_zero_for_every_write_route() -> None:
    registry = CollectorRegistry()
    api_metrics(registry)
    for route in WRITE_ROUTES:
        value = registry.get_sample_value(
            "pledgeflow_api_commands_unacknowledged_total", {"route": route}
        )
        assert value == 0.0, route
