"""The processor's hot-path shortcuts give exactly what the general code gives."""

from __future__ import annotations

from datetime import timedelta, timezone
from uuid import uuid5

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import (
    DecodeError,
    Event,
    MakePledge,
    PledgeMade,
    decode,
    decode_command,
    encode,
    encode_command,
)
from schemas.canonical import dumps
from schemas.commands import _COMMAND
from schemas.construct import trusted_model
from schemas.envelope import EVENT_ID_NAMESPACE, stamp_chain, stamp_encoded
from services.pledge.domain import _pledge_made
from tests.unit.schemas.samples import T0, eur, sample_events

PLEDGE = MakePledge(
    command_id="tenant-a:key-1",
    tenant_id="tenant-a",
    correlation_id="req-1",
    issued_at=T0,
    campaign_id="camp-1",
    pledge_id="pl-1",
    backer_id="b-1",
    amount=eur(2500),
)
DATA = encode_command(PLEDGE)


@given(st.sampled_from(sample_events()), st.text(), st.integers(0, 10**6))
def test_stamped_event_ids_are_uuid5(event: Event, causation_id: str, index: int) -> None:
    ((envelope, body, _),) = stamp_chain(
        [event],
        campaign_id="camp-1",
        seq=1,
        prev_hash="0" * 64,
        occurred_at=T0,
        causation_id=causation_id,
        correlation_id="corr-1",
        index=index,
    )
    expected = uuid5(EVENT_ID_NAMESPACE, f"{type(event).stream}:{causation_id}:{index}")
    assert envelope.event_id == expected
    assert body["event_id"] == str(envelope.event_id) == str(expected)
    assert envelope.event_id.version == 5
    assert hash(envelope.event_id) == hash(expected)


@pytest.mark.parametrize(
    "optional",
    [{}, {"tier_id": "t1", "payment_token": "tok_123", "locale": "de-CH"}],
)
def test_stamped_pledge_made_payload_is_model_dump(optional: dict[str, str]) -> None:
    event = PledgeMade(pledge_id="p", backer_id="b", amount=eur(1), **optional)
    ((_, body, data),) = stamp_chain(
        [event],
        campaign_id="camp-1",
        seq=1,
        prev_hash="0" * 64,
        occurred_at=T0,
        causation_id="cmd-1",
        correlation_id="corr-1",
    )
    assert body["payload"] == event.model_dump(mode="json")
    assert orjson.loads(data)["payload"] == event.model_dump(mode="json")


@pytest.mark.parametrize(
    "optional",
    [{}, {"tier_id": "t1", "payment_token": "tok_123", "locale": "de-CH"}],
)
def test_pledge_made_of_a_command_equals_the_validated_event(optional: dict[str, str]) -> None:
    command = PLEDGE.model_copy(update=optional)
    fast = _pledge_made(command)
    slow = PledgeMade(
        pledge_id=command.pledge_id,
        backer_id=command.backer_id,
        amount=command.amount,
        tier_id=command.tier_id,
        payment_token=command.payment_token,
        locale=command.locale,
    )
    assert type(fast) is PledgeMade
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert list(fast.__dict__) == list(slow.__dict__)
    assert hash(fast) == hash(slow)


def _slow_decode(data: bytes) -> object:
    """The orjson + validate_python path, as decode_command always did it."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        return DecodeError
    if not isinstance(raw, dict):
        return DecodeError
    try:
        return _COMMAND.validate_python(raw)
    except ValidationError:
        return DecodeError


EDGES = {
    "canonical": DATA,
    "duplicate key": DATA[:-1] + b',"backer_id":"other"}',
    "lone surrogate": DATA.replace(b'"b-1"', b'"\\ud800"'),
    "surrogate pair": DATA.replace(b'"b-1"', b'"\\ud83d\\ude00"'),
    "invalid utf-8": DATA.replace(b"b-1", b"b-\xff"),
    "byte order mark": b"\xef\xbb\xbf" + DATA,
    "whitespace": b"  " + DATA + b" \n",
    "trailing garbage": DATA + b"x",
    "int beyond 64 bits": DATA.replace(b"2500", b"99999999999999999999"),
    "u64 max": DATA.replace(b"2500", b"18446744073709551615"),
    "i64 min": DATA.replace(b"2500", b"-9223372036854775808"),
    "below i64 min": DATA.replace(b"2500", b"-9223372036854775809"),
    "float": DATA.replace(b"2500", b"2500.0"),
    "exponent": DATA.replace(b"2500", b"25e2"),
    "NaN": DATA.replace(b"2500", b"NaN"),
    "control character": DATA.replace(b"b-1", b"b\x01"),
    "numeric timestamp": DATA.replace(b'"2025-05-01T12:00:00.123456Z"', b"1746100800"),
    "offset timestamp": DATA.replace(b"12:00:00.123456Z", b"14:00:00.123456+02:00"),
    "naive timestamp": DATA.replace(b"12:00:00.123456Z", b"12:00:00.123456"),
    "unknown currency": DATA.replace(b'"EUR"', b'"XXX"'),
    "not an object": b'"x"',
    "empty": b"",
}


@pytest.mark.parametrize("data", EDGES.values(), ids=EDGES.keys())
def test_decode_command_accepts_and_refuses_what_the_orjson_path_does(data: bytes) -> None:
    expected = _slow_decode(data)
    if expected is DecodeError:
        with pytest.raises(DecodeError):
            decode_command(data)
    else:
        decoded = decode_command(data)
        assert decoded == expected
        assert type(decoded) is type(expected)
        assert decoded.model_fields_set == expected.model_fields_set  # type: ignore[attr-defined]
        assert encode_command(decoded) == encode_command(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "campaign_id",
    ["camp-1", 'c,"occurred_at":"x', 'c\\",\\"occurred_at\\":', "ünïcødé-€-😀", "c\n\t\u2028"],
)
@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).__name__)
def test_stamp_encoded_bytes_are_the_canonical_encoding(campaign_id: str, event: Event) -> None:
    envelope, body, data = stamp_encoded(
        event,
        campaign_id=campaign_id,
        seq=3,
        prev_hash="ab" * 32,
        occurred_at=T0,
        causation_id='cause,"occurred_at":',
        correlation_id="corr-1",
        index=1,
    )
    assert data == dumps(body) == encode(envelope)
    assert decode(data) == envelope


def _campaign_events() -> list[Event]:
    return [e for e in sample_events() if type(e).stream == "campaign"]


def test_stamp_chain_gives_what_stamping_one_event_at_a_time_gives() -> None:
    events = _campaign_events()
    chained = stamp_chain(
        events,
        campaign_id="camp-1",
        seq=5,
        prev_hash="cd" * 32,
        occurred_at=T0,
        causation_id="cmd-1",
        correlation_id="corr-1",
    )
    prev = "cd" * 32
    for index, (event, (envelope, body, data)) in enumerate(zip(events, chained, strict=True)):
        one = stamp_encoded(
            event,
            campaign_id="camp-1",
            seq=5 + index,
            prev_hash=prev,
            occurred_at=T0,
            causation_id="cmd-1",
            correlation_id="corr-1",
            index=index,
        )
        assert (envelope, body, data) == one
        assert data == encode(envelope) == dumps(body)
        assert envelope.prev_hash == prev
        prev = envelope.hash


def test_stamp_chain_normalises_the_clock_to_utc_whatever_was_stamped_before() -> None:
    event = _campaign_events()[1]
    stamped = [
        stamp_chain(
            [event],
            campaign_id="camp-1",
            seq=1,
            prev_hash="0" * 64,
            occurred_at=when,
            causation_id="cmd-1",
            correlation_id="corr-1",
        )[0][2]
        for when in (T0, T0.astimezone(timezone(timedelta(hours=2))), T0, T0.replace())
    ]
    assert len(set(stamped)) == 1
    with pytest.raises(ValueError, match="timezone-aware"):
        stamp_chain(
            [event],
            campaign_id="camp-1",
            seq=1,
            prev_hash="0" * 64,
            occurred_at=T0.replace(tzinfo=None),
            causation_id="cmd-1",
            correlation_id="corr-1",
        )


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).__name__)
def test_a_trusted_model_equals_the_validated_one(event: Event) -> None:
    trusted = trusted_model(type(event), dict(event.__dict__), frozenset(event.model_fields_set))
    assert type(trusted) is type(event)
    assert trusted == event
    assert trusted.model_fields_set == event.model_fields_set
    assert (
        trusted.model_fields_set
        is not trusted_model(
            type(event), dict(event.__dict__), frozenset(event.model_fields_set)
        ).model_fields_set
    )
    assert trusted.model_dump(mode="json") == event.model_dump(mode="json")
    copied = trusted.model_copy(update={})
    assert copied == event
