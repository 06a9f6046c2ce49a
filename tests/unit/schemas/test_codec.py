"""Canonical codec: round trips, byte stability, one DecodeError, and hash-chain verification."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid5

import orjson
import pytest

from schemas import (
    EVENT_ID_NAMESPACE,
    EVENT_TYPES,
    GENESIS_HASH,
    ChainVerifier,
    DecodeError,
    Envelope,
    Money,
    PledgeMade,
    canonical_bytes,
    decode,
    decode_raw,
    encode,
    envelope_body,
    event_id_for,
    stamp,
    stamp_and_encode,
    verify_chain,
    verify_chain_raw,
    verify_hash,
)
from tests.unit.schemas.samples import T0, chain, eur, sample_events

GOLDEN = (
    b'{"campaign_id":"camp-1","causation_id":"tenant-a:key-1","correlation_id":"req-1",'
    b'"event_id":"a076c0a8-0bea-58b4-8b55-0bf7dc485944","event_type":"PledgeMade",'
    b'"hash":"e952b7ffe7ff4c89d6407db813f0023b31c4cea0d08ea914286df6663b344aca",'
    b'"occurred_at":"2025-05-01T12:00:00.123456Z","payload":{"amount":{"amount_minor":2500,'
    b'"currency":"EUR"},"backer_id":"b-1","locale":null,"payment_token":null,"pledge_id":"pl-1",'
    b'"tier_id":"early"},"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000",'
    b'"schema_version":2,"seq":1,"stream":"campaign"}'
)


def golden_envelope(occurred_at: datetime = T0) -> Envelope:
    return stamp(
        PledgeMade(pledge_id="pl-1", backer_id="b-1", amount=eur(2500), tier_id="early"),
        campaign_id="camp-1", seq=1, prev_hash=GENESIS_HASH, occurred_at=occurred_at,
        causation_id="tenant-a:key-1", correlation_id="req-1", index=0,
    )  # fmt: skip


def test_sample_events_cover_every_event_type() -> None:
    assert {type(e).event_type for e in sample_events()} == set(EVENT_TYPES)


@pytest.mark.parametrize("envelope", chain(sample_events()), ids=lambda e: e.event_type)
def test_every_event_round_trips_through_bytes(envelope: Envelope) -> None:
    data = encode(envelope)
    assert decode(data) == envelope
    assert encode(decode(data)) == data


def test_canonical_encoding_is_byte_stable() -> None:
    # Pinned bytes: changing the encoding would break every stored hash chain.
    assert encode(golden_envelope()) == GOLDEN


def test_same_instant_in_another_timezone_encodes_identically() -> None:
    paris = timezone(timedelta(hours=2))
    assert encode(golden_envelope(T0.astimezone(paris))) == GOLDEN


def test_hash_is_sha256_of_prev_hash_and_canonical_body_without_hash() -> None:
    envelope = golden_envelope()
    body = canonical_bytes(envelope_body(envelope, with_hash=False))
    assert b'"hash"' not in body
    assert envelope.hash == hashlib.sha256(GENESIS_HASH.encode() + body).hexdigest()


def test_stamp_and_encode_matches_stamp_then_encode() -> None:
    envelope, data = stamp_and_encode(
        PledgeMade(pledge_id="pl-1", backer_id="b-1", amount=eur(2500), tier_id="early"),
        campaign_id="camp-1", occurred_at=T0, seq=1, causation_id="tenant-a:key-1",
        correlation_id="req-1", index=0,
    )  # fmt: skip
    assert data == GOLDEN
    assert envelope == golden_envelope()


def test_event_id_is_deterministic_uuid5_of_stream_causation_and_index() -> None:
    envelope = golden_envelope()
    assert envelope.event_id == uuid5(EVENT_ID_NAMESPACE, "campaign:tenant-a:key-1:0")
    assert envelope.event_id == event_id_for("campaign", "tenant-a:key-1", 0)
    assert event_id_for("campaign", "tenant-a:key-1", 1) != envelope.event_id
    assert event_id_for("notify", "tenant-a:key-1", 0) != envelope.event_id


def test_stamp_refuses_a_naive_timestamp() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        golden_envelope(datetime(2025, 1, 1))


def test_stamp_refuses_an_event_of_another_stream() -> None:
    with pytest.raises(ValueError, match="belongs to 'campaign'"):
        stamp(
            PledgeMade(pledge_id="p", backer_id="b", amount=eur(1)), campaign_id="c", seq=1,
            occurred_at=T0, causation_id="x", correlation_id="y", index=0, stream="settlement",
        )  # fmt: skip


def test_canonical_bytes_refuses_floats_and_names_the_path() -> None:
    with pytest.raises(ValueError, match=r"\$\.payload\.amount"):
        canonical_bytes({"payload": {"amount": 12.5}})


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda raw: b"{not json", "<root>"),
        (lambda raw: b"[1, 2]", "<root>"),
        (lambda raw: raw.replace(b'"PledgeMade"', b'"PledgeTeleported"'), "event_type"),
        (lambda raw: raw.replace(b'"schema_version":2', b'"schema_version":9'), "schema_version"),
        (lambda raw: raw.replace(b'"schema_version":2', b'"schema_version":"2"'), "schema_version"),
        (lambda raw: raw.replace(b'"amount_minor":2500', b'"amount_minor":25.0'), "payload.amount"),
        (lambda raw: raw.replace(b'"EUR"', b'"EURO"'), "payload.amount.currency"),
        (lambda raw: raw.replace(b'"seq":1', b'"seq":0'), "seq"),
        (lambda raw: raw.replace(b'"pledge_id":"pl-1",', b""), "payload.pledge_id"),
        (lambda raw: raw.replace(b'"stream":"campaign"', b'"stream":"notify"'), "stream"),
        (lambda raw: raw.replace(b"12:00:00.123456Z", b"12:00:00.123456"), "occurred_at"),
        (lambda raw: raw.replace(b'"2025-05-01T12:00:00.123456Z"', b"1746100800"), "occurred_at"),
        (lambda raw: raw.replace(b'"seq":1', b'"seq":1,"extra":true'), "extra"),
    ],
)  # fmt: skip
def test_bad_messages_raise_one_decode_error_naming_the_field(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DecodeError) as caught:
        decode(mutate(GOLDEN))
    message = str(caught.value)
    assert message.startswith(field), message
    assert "\n" not in message


def test_decode_error_is_a_value_error_for_generic_handlers() -> None:
    assert issubclass(DecodeError, ValueError)


def test_decode_raw_returns_the_stored_dict() -> None:
    assert decode_raw(GOLDEN) == orjson.loads(GOLDEN)


# --- hash chains ----------------------------------------------------------------------------


def long_chain(n: int = 6) -> list[Envelope]:
    return chain(
        [PledgeMade(pledge_id=f"p{i}", backer_id="b", amount=eur(100 + i)) for i in range(n)]
    )


def test_intact_chain_verifies_in_every_form() -> None:
    envelopes = chain(sample_events())
    assert verify_chain(envelopes) is None
    assert verify_chain_raw([encode(e) for e in envelopes]) is None
    assert verify_chain_raw([encode(e) + b"\n" for e in envelopes]) is None
    assert verify_chain_raw([decode_raw(encode(e)) for e in envelopes]) is None


def test_changed_byte_is_detected_at_that_event() -> None:
    lines = [encode(e) for e in long_chain()]
    lines[3] = lines[3].replace(b'"amount_minor":103', b'"amount_minor":104')
    broken = verify_chain_raw(lines)
    assert broken is not None
    assert (broken.index, broken.reason) == (3, "hash_mismatch")


def test_changed_hash_field_is_detected() -> None:
    lines = [encode(e) for e in long_chain()]
    digest = orjson.loads(lines[2])["hash"]
    lines[2] = lines[2].replace(digest.encode(), ("f" * 64).encode())
    broken = verify_chain_raw(lines)
    assert broken is not None
    assert (broken.index, broken.reason) == (2, "hash_mismatch")


def test_rehashed_tampered_event_breaks_the_link_to_its_successor() -> None:
    envelopes = long_chain()
    forged = stamp(
        PledgeMade(pledge_id="p2", backer_id="b", amount=eur(999_999)), campaign_id="camp-1",
        seq=3, prev_hash=envelopes[1].hash, occurred_at=T0, causation_id="forged",
        correlation_id="x", index=0,
    )  # fmt: skip
    envelopes[2] = forged
    broken = verify_chain(envelopes)
    assert broken is not None
    assert (broken.index, broken.reason) == (3, "prev_hash_mismatch")


def test_removed_event_is_detected() -> None:
    envelopes = long_chain()
    del envelopes[2]
    broken = verify_chain(envelopes)
    assert broken is not None
    assert (broken.index, broken.reason) == (2, "seq_gap")
    assert broken.event_id == str(envelopes[2].event_id)
    broken_raw = verify_chain_raw([encode(e) for e in envelopes])
    assert broken_raw == broken


def test_reordering_is_detected() -> None:
    envelopes = long_chain()
    envelopes[1], envelopes[2] = envelopes[2], envelopes[1]
    broken = verify_chain_raw([encode(e) for e in envelopes])
    assert broken is not None
    assert (broken.index, broken.reason) == (1, "seq_gap")


def test_first_event_must_link_to_genesis() -> None:
    envelopes = long_chain()[1:]
    assert verify_chain(envelopes) is not None
    assert verify_chain(envelopes, from_genesis=False) is None


def test_chains_of_different_campaigns_and_streams_interleave() -> None:
    a, b = long_chain(3), chain(sample_events(), campaign_id="camp-2")
    interleaved = [e for pair in zip(a, b, strict=False) for e in pair] + b[3:]
    assert verify_chain_raw([encode(e) for e in interleaved]) is None


def test_non_canonical_but_intact_line_still_verifies() -> None:
    envelope = long_chain(1)[0]
    pretty = orjson.dumps(orjson.loads(encode(envelope)), option=orjson.OPT_INDENT_2)
    assert verify_chain_raw([pretty]) is None


def test_malformed_line_is_reported_not_raised() -> None:
    broken = verify_chain_raw([b"{garbage"])
    assert broken is not None
    assert broken.reason == "malformed"


def test_verifier_reports_chain_heads() -> None:
    envelopes = long_chain(4)
    verifier = ChainVerifier()
    assert verifier.check_lines([encode(e) for e in envelopes]) is None
    assert verifier.heads == {("camp-1", "campaign"): (4, envelopes[-1].hash)}
    assert verifier.count == 4


def test_verify_hash_checks_content_and_link() -> None:
    raw = decode_raw(GOLDEN)
    assert verify_hash(raw, GENESIS_HASH)
    assert not verify_hash(raw, "1" * 64)
    assert not verify_hash({**raw, "seq": 2})


def test_decoded_timestamps_are_utc() -> None:
    assert decode(GOLDEN).occurred_at.utcoffset() == timedelta(0)
    assert decode(GOLDEN).occurred_at == datetime(2025, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_money_fields_decode_to_money() -> None:
    payload = decode(GOLDEN).payload
    assert isinstance(payload, PledgeMade)
    assert payload.amount == Money(amount_minor=2500, currency="EUR")
