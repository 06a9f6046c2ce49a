"""Notify's view of the platforms' registrations: webhook endpoints and contacts, by tenant.

Fed from the two compacted topics (``notify-endpoints``, ``notify-contacts``) in order; a
record with no value (a tombstone) deletes. A deleted contact is remembered as
:data:`~services.notify.ports.ERASED` (its address is gone; messages to that person are
skipped and counted), not confused with a person never registered. Pure state, no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from services.notify.domain import RecipientKind, WebhookEndpoint
from services.notify.mail import Contact
from services.notify.ports import ERASED, Erased

__all__ = [
    "Directory",
    "contact_key",
    "contact_value",
    "endpoint_key",
    "endpoint_value",
    "parse_contact",
    "parse_endpoint",
]


def endpoint_key(tenant_id: str, endpoint_id: str) -> str:
    return f"{tenant_id}/{endpoint_id}"


def contact_key(tenant_id: str, kind: RecipientKind, person_id: str) -> str:
    return f"{tenant_id}/{kind}/{person_id}"


def parse_endpoint(value: bytes | str) -> WebhookEndpoint:
    """An endpoint record's value (see :func:`endpoint_value`); ValueError if malformed."""
    try:
        raw: dict[str, Any] = orjson.loads(value)
        return WebhookEndpoint(
            endpoint_id=str(raw["endpoint_id"]),
            tenant_id=str(raw["tenant_id"]),
            url=str(raw["url"]),
            event_types=frozenset(str(t) for t in raw["event_types"]),
            secret=str(raw["secret"]),
            previous_secret=raw.get("previous_secret"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not an endpoint record: {exc!r}") from None


def endpoint_value(endpoint: WebhookEndpoint) -> bytes:
    """The record value of ``endpoint`` on the endpoints topic."""
    return orjson.dumps(
        {
            "endpoint_id": endpoint.endpoint_id,
            "tenant_id": endpoint.tenant_id,
            "url": endpoint.url,
            "event_types": sorted(endpoint.event_types),
            "secret": endpoint.secret,
            "previous_secret": endpoint.previous_secret,
        }
    )


def parse_contact(value: bytes | str) -> Contact:
    """A contact record's value ``{"email", "locale"}``; ValueError if malformed."""
    try:
        raw: dict[str, Any] = orjson.loads(value)
        return Contact(email=str(raw["email"]), locale=raw.get("locale"))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a contact record: {exc!r}") from None


def contact_value(contact: Contact) -> bytes:
    return orjson.dumps({"email": contact.email, "locale": contact.locale})


class Directory:
    """The registrations as last recorded (implements the dispatcher's ``Directory`` port)."""

    def __init__(self) -> None:
        self._endpoints: dict[str, dict[str, WebhookEndpoint]] = {}
        self._contacts: dict[str, Contact | Erased] = {}

    def apply_endpoint(self, key: str, value: bytes | None) -> None:
        """Apply one record of the endpoints topic (None = deleted)."""
        tenant_id, _, endpoint_id = key.partition("/")
        if value is None:
            self._endpoints.get(tenant_id, {}).pop(endpoint_id, None)
            return
        endpoint = parse_endpoint(value)
        self._endpoints.setdefault(endpoint.tenant_id, {})[endpoint.endpoint_id] = endpoint

    def apply_contact(self, key: str, value: bytes | None) -> None:
        """Apply one record of the contacts topic (None = erased)."""
        self._contacts[key] = ERASED if value is None else parse_contact(value)

    def endpoints(self, tenant_id: str) -> list[WebhookEndpoint]:
        return sorted(self._endpoints.get(tenant_id, {}).values(), key=lambda e: e.endpoint_id)

    def endpoint(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        return self._endpoints.get(tenant_id, {}).get(endpoint_id)

    def contact(
        self, tenant_id: str, kind: RecipientKind, person_id: str
    ) -> Contact | Erased | None:
        return self._contacts.get(contact_key(tenant_id, kind, person_id))
