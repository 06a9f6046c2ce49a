"""PaymentMethodUpdated v1 (which carried the new token) keeps decoding as v2 without it: a
token read back from the log is never handed on."""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas import decode, upcast, verify_chain_raw
from schemas.events import PaymentMethodUpdated

FIXTURE = Path(__file__).parents[2] / "fixtures" / "payment_method_updated_v1.jsonl"


def fixture_lines() -> list[bytes]:
    return FIXTURE.read_bytes().splitlines()


def test_fixture_holds_a_v1_fix_with_its_token() -> None:
    raw = orjson.loads(fixture_lines()[1])
    assert (raw["event_type"], raw["schema_version"]) == ("PaymentMethodUpdated", 1)
    assert raw["payload"]["payment_token"] == "tok_ok"


def test_v1_fixture_chain_verifies_on_the_stored_bytes() -> None:
    assert verify_chain_raw(fixture_lines()) is None


def test_a_v1_fix_decodes_as_v2_without_the_token() -> None:
    envelope = decode(fixture_lines()[1])
    assert envelope.schema_version == 2
    assert envelope.payload == PaymentMethodUpdated(pledge_id="pl-fx-pm-1")
    assert b"tok_ok" not in orjson.dumps(envelope.payload.model_dump(mode="json"))


def test_the_upcaster_drops_only_the_token_and_leaves_the_stored_payload_alone() -> None:
    raw = orjson.loads(fixture_lines()[1])
    version, payload = upcast("PaymentMethodUpdated", 1, raw["payload"])
    assert (version, payload) == (2, {"pledge_id": "pl-fx-pm-1"})
    assert raw["payload"]["payment_token"] == "tok_ok"
