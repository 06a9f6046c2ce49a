"""Old schema versions keep decoding: the stored v1 fixtures must decode forever."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from schemas import (
    UPCASTERS,
    DecodeError,
    PledgeMade,
    current_version,
    decode,
    upcast,
    upcast_pledge_made_v1_v2,
    verify_chain_raw,
)

FIXTURE = Path(__file__).parents[2] / "fixtures" / "pledge_made_v1.jsonl"


def fixture_lines() -> list[bytes]:
    return FIXTURE.read_bytes().splitlines()


def test_fixture_holds_v1_pledges() -> None:
    raws = [orjson.loads(line) for line in fixture_lines()]
    pledges = [r for r in raws if r["event_type"] == "PledgeMade"]
    assert len(pledges) == 3
    assert all(r["schema_version"] == 1 and "tier_id" not in r["payload"] for r in pledges)


def test_v1_fixtures_decode_as_current_pledge_made_without_tier() -> None:
    decoded = [decode(line) for line in fixture_lines()]
    pledges = [e for e in decoded if e.event_type == "PledgeMade"]
    assert [e.schema_version for e in pledges] == [2, 2, 2]
    assert all(isinstance(e.payload, PledgeMade) and e.payload.tier_id is None for e in pledges)
    first = pledges[0].payload
    assert isinstance(first, PledgeMade)
    assert (first.pledge_id, first.amount.amount_minor, first.locale) == ("pl-1", 2500, "fr-FR")


def test_v1_fixture_chain_verifies_on_the_stored_bytes() -> None:
    assert verify_chain_raw(fixture_lines()) is None


def test_upcast_pledge_made_v1_v2_adds_an_empty_tier() -> None:
    v1 = {"pledge_id": "p", "backer_id": "b", "amount": {"amount_minor": 1, "currency": "EUR"}}
    assert upcast_pledge_made_v1_v2(v1) == {**v1, "tier_id": None}
    assert "tier_id" not in v1  # the stored payload is not mutated


def test_upcast_chain_reaches_the_current_version() -> None:
    version, payload = upcast("PledgeMade", 1, {"pledge_id": "p"})
    assert version == current_version("PledgeMade") == 2
    assert payload["tier_id"] is None


def test_current_version_passes_through_unchanged() -> None:
    assert upcast("PledgeMade", 2, {"tier_id": "t"}) == (2, {"tier_id": "t"})


def test_every_upcaster_step_targets_a_known_older_version() -> None:
    for event_type, version in UPCASTERS:
        assert 1 <= version < current_version(event_type)


@pytest.mark.parametrize("version", [0, 3])
def test_unreadable_versions_raise_decode_error(version: int) -> None:
    with pytest.raises(DecodeError, match="schema_version"):
        upcast("PledgeMade", version, {})
