"""/openapi.json names the webhook event types an endpoint may subscribe to (it said only
"strings": a client generated from it could not know them, and schemathesis' generated
registrations were all refused 422 for an unknown type)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.notify.domain import WEBHOOK_EVENT_TYPES
from services.pledge.api import create_app
from services.pledge.api.config import ApiSettings


def test_the_documented_event_types_are_the_known_ones() -> None:
    app = create_app(
        ApiSettings(api_keys="tenant-a:key-a-0123456789"), registry=CollectorRegistry()
    )
    spec = app.openapi()
    body = spec["paths"]["/v1/webhook-endpoints"]["post"]["requestBody"]["content"]
    ref = body["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    items = spec["components"]["schemas"][ref]["properties"]["event_types"]["items"]
    assert items == {"type": "string", "enum": list(WEBHOOK_EVENT_TYPES)}
