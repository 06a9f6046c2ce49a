"""Commands on pledge-commands: discriminated by command_type, canonical, DecodeError on junk."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from schemas import (
    CancelPledge,
    CloseCampaign,
    DecodeError,
    LaunchCampaign,
    MakePledge,
    RevenueShare,
    Tier,
    decode_command,
    encode_command,
)
from tests.unit.schemas.samples import T0, eur

COMMON = {"command_id": "tenant-a:key-1", "tenant_id": "tenant-a", "correlation_id": "req-1",
          "issued_at": T0, "campaign_id": "camp-1"}  # fmt: skip


def launch(**overrides: object) -> LaunchCampaign:
    fields: dict[str, object] = {
        **COMMON, "creator_id": "creator-1", "title": "Film", "goal": eur(100_000),
        "deadline": T0 + timedelta(days=30), "funding_model": "keep_it_all",
        "settlement_mode": "charge_then_refund", "commission_bps": 800,
        "tiers": [Tier(tier_id="t1", title="Poster", min_amount_minor=1500, quantity_limit=50)],
    }  # fmt: skip
    fields.update(overrides)
    return LaunchCampaign.model_validate(fields)


COMMANDS = [
    launch(),
    MakePledge(**COMMON, pledge_id="pl-1", backer_id="b-1", amount=eur(2500), tier_id="t1"),
    CancelPledge(**COMMON, pledge_id="pl-1", reason="backer_request"),
    CloseCampaign(**COMMON, reason="creator_cancelled"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.command_type)
def test_every_command_round_trips(command: object) -> None:
    data = encode_command(command)  # type: ignore[arg-type]
    decoded = decode_command(data)
    assert decoded == command
    assert type(decoded) is type(command)
    assert encode_command(decoded) == data


def test_command_encoding_has_sorted_keys_and_utc_z_timestamps() -> None:
    data = encode_command(COMMANDS[3])
    assert data == (
        b'{"campaign_id":"camp-1","command_id":"tenant-a:key-1","command_type":"CloseCampaign",'
        b'"correlation_id":"req-1","issued_at":"2025-05-01T12:00:00.123456Z",'
        b'"reason":"creator_cancelled","tenant_id":"tenant-a"}'
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"", "<root>"),
        (b'"x"', "<root>"),
        (b'{"command_type":"RefundEverything"}', "command_type"),
        (b'{"pledge_id":"p"}', "command_type"),
        (b'{"command_type":"CloseCampaign","command_id":"k","tenant_id":"t",'
         b'"correlation_id":"c","issued_at":"2025-01-01T00:00:00Z","campaign_id":"c",'
         b'"reason":"bored"}', "CloseCampaign.reason"),
    ],
)  # fmt: skip
def test_bad_commands_raise_decode_error(data: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_command(data)
    assert str(caught.value).startswith(field), str(caught.value)


def test_coproduction_requires_revenue_share_terms() -> None:
    with pytest.raises(ValidationError, match="revenue_share is required"):
        launch(kind="coproduction")
    ok = launch(kind="coproduction", revenue_share=RevenueShare(share_bps=500, duration_months=24))
    assert ok.revenue_share is not None


def test_tier_ids_must_be_unique() -> None:
    tier = Tier(tier_id="t1", title="A", min_amount_minor=1)
    with pytest.raises(ValidationError, match="unique"):
        launch(tiers=[tier, tier])


def test_commission_cannot_exceed_100_percent() -> None:
    with pytest.raises(ValidationError, match="commission_bps"):
        launch(commission_bps=10_001)


def test_issued_at_must_be_aware() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        MakePledge(**{**COMMON, "issued_at": T0.replace(tzinfo=None)}, pledge_id="p",
                   backer_id="b", amount=eur(1))  # fmt: skip


def test_a_command_from_before_fingerprints_decodes_without_one() -> None:
    old = (
        b'{"campaign_id":"camp-1","command_id":"tenant-a:key-1","command_type":"CloseCampaign",'
        b'"correlation_id":"req-1","issued_at":"2025-05-01T12:00:00.123456Z",'
        b'"reason":"creator_cancelled","tenant_id":"tenant-a"}'
    )
    assert decode_command(old).fingerprint is None


def test_the_request_fingerprint_travels_in_the_command() -> None:
    command = CloseCampaign(**COMMON, reason="creator_cancelled", fingerprint="0a" * 32)
    data = encode_command(command)
    assert b'"fingerprint":"' + b"0a" * 32 + b'"' in data
    assert decode_command(data).fingerprint == "0a" * 32


def test_a_fingerprint_is_a_sha256_hex_digest() -> None:
    with pytest.raises(ValidationError):
        CloseCampaign(**COMMON, reason="creator_cancelled", fingerprint="not-a-digest")
