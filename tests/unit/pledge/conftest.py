"""Given/when/then helpers for the pledge domain: build commands, fold past events."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.commands import CancelPledge, CloseCampaign, LaunchCampaign, MakePledge
from schemas.envelope import Envelope
from schemas.events import Tier
from schemas.money import Money
from services.pledge.domain import CampaignState, Command, Policy, decide, evolve

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEADLINE = T0 + timedelta(days=30)
CAMPAIGN = "camp-1"
TENANT = "tenant-a"


def eur(minor: int) -> Money:
    return Money(amount_minor=minor, currency="EUR")


_command_numbers = itertools.count(1)


def command_fields(**over: Any) -> dict[str, Any]:
    cid = over.pop("command_id", None) or f"cmd-{next(_command_numbers)}"
    base = {
        "command_id": cid,
        "tenant_id": TENANT,
        "correlation_id": f"corr-{cid}",
        "issued_at": T0,
        "campaign_id": CAMPAIGN,
    }
    base.update(over)
    return base


def launch(**over: Any) -> LaunchCampaign:
    fields: dict[str, Any] = {
        "creator_id": "creator-1",
        "title": "A board game",
        "goal": eur(100_000),
        "deadline": DEADLINE,
        "funding_model": "all_or_nothing",
        "settlement_mode": "authorize_then_capture",
        "commission_bps": 500,
        "tiers": (
            Tier(tier_id="early", title="Early bird", min_amount_minor=2_000, quantity_limit=2),
            Tier(tier_id="std", title="Standard", min_amount_minor=3_000),
        ),
    }
    fields.update(over)
    return LaunchCampaign(**command_fields(**fields))


def pledge(pledge_id: str, minor: int, tier_id: str | None = None, **over: Any) -> MakePledge:
    fields: dict[str, Any] = {
        "pledge_id": pledge_id,
        "backer_id": f"backer-of-{pledge_id}",
        "amount": eur(minor),
        "tier_id": tier_id,
    }
    fields.update(over)
    return MakePledge(**command_fields(**fields))


def cancel(pledge_id: str, **over: Any) -> CancelPledge:
    return CancelPledge(**command_fields(pledge_id=pledge_id, **over))


def close(reason: str = "creator_cancelled", **over: Any) -> CloseCampaign:
    return CloseCampaign(**command_fields(reason=reason, **over))


@dataclass
class Campaign:
    """A campaign under test: the log so far and the state folded from it."""

    state: CampaignState = field(default_factory=lambda: CampaignState.empty(CAMPAIGN))
    log: list[Envelope] = field(default_factory=list)

    def given(self, *commands: Command, at: datetime = T0) -> Campaign:
        """Past: decide and apply each command (asserting nothing)."""
        for command in commands:
            self.apply(decide(self.state, command, at))
        return self

    def when(
        self, command: Command, at: datetime = T0, policy: Policy | None = None
    ) -> list[Envelope]:
        """Now: decide ``command`` and apply its events; returns the new events."""
        events = decide(self.state, command, at, policy or Policy())
        self.apply(events)
        return events

    def apply(self, events: Iterable[Envelope]) -> None:
        for envelope in events:
            evolve(self.state, envelope)
            self.log.append(envelope)


@pytest.fixture
def campaign() -> Campaign:
    return Campaign()


@pytest.fixture
def launched() -> Campaign:
    return Campaign().given(launch())


def types(events: Iterable[Envelope]) -> list[str]:
    return [e.event_type for e in events]
