"""Registrations by platforms: webhook endpoints and contact details, recorded on Kafka.

The record is the compacted topic (``notify-endpoints``, ``notify-contacts``): it survives a
Redis flush and is replayed by the notify worker like everything else. Endpoints are also
kept in a small read view (Redis) so the API can list them without reading the topic. A
DELETE writes a tombstone: compaction then drops the value, so an e-mail address is erasable.
Contact details never go into events. Used by the API's router (``api_routes.py``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from typing import Protocol

from babel import Locale, UnknownLocaleError

from schemas.topics import Topics
from services.notify.directory import contact_key, contact_value, endpoint_key, endpoint_value
from services.notify.domain import WEBHOOK_EVENT_TYPES, RecipientKind, WebhookEndpoint
from services.notify.mail import Contact
from services.notify.ssrf import check_url
from services.notify.webhooks import new_secret

__all__ = [
    "EndpointLimitReached",
    "EndpointView",
    "InvalidRegistration",
    "RegistrationLog",
    "Registrations",
]

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_PERSON_ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


class InvalidRegistration(ValueError):
    """A registration refused; ``field`` names what to fix (the message says how)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class EndpointLimitReached(Exception):
    """The tenant already holds as many webhook endpoints as it may."""


class RegistrationLog(Protocol):
    """Appends to a compacted topic (``value=None`` is a tombstone), durably (acks=all)."""

    async def put(self, topic: str, key: str, value: bytes | None) -> None: ...


class EndpointView(Protocol):
    """The endpoints as the API lists them (a cache of the topic, rebuilt from it)."""

    async def save(self, endpoint: WebhookEndpoint) -> None: ...

    async def remove(self, tenant_id: str, endpoint_id: str) -> None: ...

    async def all(self, tenant_id: str) -> list[WebhookEndpoint]: ...

    async def get(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None: ...


class Registrations:
    """The registration commands of one deployment."""

    def __init__(
        self,
        log: RegistrationLog,
        view: EndpointView,
        topics: Topics,
        *,
        allow_private: bool,
        max_endpoints: int = 50,
    ) -> None:
        self.log = log
        self.view = view
        self.topics = topics
        self.allow_private = allow_private
        self.max_endpoints = max_endpoints

    async def create_endpoint(
        self,
        tenant_id: str,
        url: str,
        event_types: Sequence[str],
        idempotency_key: str | None = None,
    ) -> WebhookEndpoint:
        """Register an endpoint; the returned one carries the secret (shown this once). With an
        ``idempotency_key`` the id derives from (tenant, key), so a retried request gets the
        endpoint it already created (the same one, same secret) instead of a second one; the
        same key with another URL or event types is refused."""
        types = _event_types(event_types)
        endpoint_id = f"ep_{secrets.token_hex(12)}"
        if idempotency_key is not None:
            digest = hashlib.sha256(f"{tenant_id}\x00{idempotency_key}".encode()).hexdigest()
            endpoint_id = f"ep_{digest[:24]}"
            existing = await self.view.get(tenant_id, endpoint_id)
            if existing is not None:
                if existing.url != url or existing.event_types != types:
                    raise InvalidRegistration(
                        "Idempotency-Key", "already used for a different endpoint"
                    )
                return existing
        # Checked before the write: two creations racing at the limit may both pass (the
        # limit bounds cost; it is not an exact quota).
        if len(await self.view.all(tenant_id)) >= self.max_endpoints:
            raise EndpointLimitReached(
                f"this tenant already has {self.max_endpoints} webhook endpoints (the most "
                "allowed): delete one first"
            )
        await self._check_url(url)
        endpoint = WebhookEndpoint(
            endpoint_id=endpoint_id,
            tenant_id=tenant_id,
            url=url,
            event_types=types,
            secret=new_secret(),
        )
        await self._save(endpoint)
        return endpoint

    async def list_endpoints(self, tenant_id: str) -> list[WebhookEndpoint]:
        return await self.view.all(tenant_id)

    async def get_endpoint(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        return await self.view.get(tenant_id, endpoint_id)

    async def delete_endpoint(self, tenant_id: str, endpoint_id: str) -> bool:
        """Unregister; False if the tenant has no such endpoint."""
        if await self.view.get(tenant_id, endpoint_id) is None:
            return False
        await self.log.put(self.topics.notify_endpoints, endpoint_key(tenant_id, endpoint_id), None)
        await self.view.remove(tenant_id, endpoint_id)
        return True

    async def rotate_secret(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        """A new secret; the current one keeps signing beside it until the next rotation, so
        receivers switch without losing a delivery. None if there is no such endpoint."""
        current = await self.view.get(tenant_id, endpoint_id)
        if current is None:
            return None
        rotated = WebhookEndpoint(
            endpoint_id=current.endpoint_id,
            tenant_id=tenant_id,
            url=current.url,
            event_types=current.event_types,
            secret=new_secret(),
            previous_secret=current.secret,
        )
        await self._save(rotated)
        return rotated

    async def put_contact(
        self, tenant_id: str, kind: RecipientKind, person_id: str, email: str, locale: str | None
    ) -> Contact:
        """Record (or replace) where a backer or creator is reached."""
        _person(person_id)
        if not _EMAIL.match(email) or len(email) > 254:
            raise InvalidRegistration("email", "not an e-mail address")
        if locale is not None:
            try:
                Locale.parse(locale.replace("-", "_"))
            except (ValueError, UnknownLocaleError):
                raise InvalidRegistration("locale", f"unknown locale {locale!r}") from None
        contact = Contact(email=email, locale=locale)
        key = contact_key(tenant_id, kind, person_id)
        await self.log.put(self.topics.notify_contacts, key, contact_value(contact))
        return contact

    async def erase_contact(self, tenant_id: str, kind: RecipientKind, person_id: str) -> None:
        """Erase a contact (tombstone): later messages to that person are skipped."""
        _person(person_id)
        await self.log.put(
            self.topics.notify_contacts, contact_key(tenant_id, kind, person_id), None
        )

    async def _check_url(self, url: str) -> None:
        try:
            await check_url(url, allow_private=self.allow_private)
        except ValueError as exc:
            raise InvalidRegistration("url", str(exc).removeprefix("url: ")) from None

    async def _save(self, endpoint: WebhookEndpoint) -> None:
        key = endpoint_key(endpoint.tenant_id, endpoint.endpoint_id)
        await self.log.put(self.topics.notify_endpoints, key, endpoint_value(endpoint))
        await self.view.save(endpoint)


def _event_types(event_types: Sequence[str]) -> frozenset[str]:
    if not event_types:
        raise InvalidRegistration("event_types", "at least one event type is required")
    unknown = sorted(set(event_types) - set(WEBHOOK_EVENT_TYPES))
    if unknown:
        raise InvalidRegistration(
            "event_types",
            f"unknown event type(s) {', '.join(unknown)} (known: {', '.join(WEBHOOK_EVENT_TYPES)})",
        )
    return frozenset(event_types)


def _person(person_id: str) -> None:
    if not _PERSON_ID.match(person_id):
        raise InvalidRegistration("id", "1-200 characters of letters, digits, . _ : -")
