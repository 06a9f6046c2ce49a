"""Which events a per-tenant export (``pledgeflow audit export --tenant T``) keeps.

A campaign belongs to the tenant named in its ``CampaignLaunched`` payload (``tenant_id``);
every stream of the campaign (campaign, settlement, notify) goes with it. Events of one
campaign arrive on different topics, so an event read before its campaign's launch is held
until the launch is seen; whatever is still held at the end of the export belongs to a
campaign launched by no one this archive knows — another tenant's, launched before this
archive's earlier exports — and is left out. The tenant's campaigns are kept in the manifest
so that incremental exports admit their later events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ["TenantFilter"]


class TenantFilter:
    """Admits the events of one tenant's campaigns; holds those of undecided campaigns."""

    def __init__(self, tenant: str, campaigns: Iterable[str] = ()) -> None:
        self.tenant = tenant
        self._mine = set(campaigns)
        self._others: set[str] = set()
        self._held: dict[str, list[tuple[Any, ...]]] = {}

    @property
    def campaigns(self) -> list[str]:
        """The tenant's campaigns known so far (sorted, for the manifest)."""
        return sorted(self._mine)

    @property
    def left_out(self) -> int:
        """Events still held: of campaigns whose tenant this export never learned."""
        return sum(len(held) for held in self._held.values())

    def admit(self, value: bytes, item: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The items to pass on now, given the next event ``value`` (carried as ``item``):
        none, this one, or this launch and the events held for its campaign."""
        try:
            raw = orjson.loads(value)
        except orjson.JSONDecodeError:
            return []  # unattributable; a tenant's auditor must not see other tenants' bytes
        cid = raw.get("campaign_id") if isinstance(raw, dict) else None
        if not isinstance(cid, str):
            return []
        if cid in self._mine:
            return [item]
        if cid in self._others:
            return []
        if raw.get("event_type") == "CampaignLaunched":
            payload = raw.get("payload")
            tenant = payload.get("tenant_id") if isinstance(payload, dict) else None
            held = self._held.pop(cid, [])
            if tenant == self.tenant:
                self._mine.add(cid)
                return [item, *held]
            self._others.add(cid)
            return []
        self._held.setdefault(cid, []).append(item)
        return []
