"""The hot routes' plain-dict path agrees with the pydantic models, and the command template
with the command codec."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.canonical import format_timestamp
from schemas.commands import MakePledge, MakePledgeTemplate, decode_command, encode_command
from schemas.money import Money
from schemas.pledge_fields import plain_pledge
from services.pledge.api.batch import model_fields, pending_result
from services.pledge.api.models import BatchItem

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
ITEM = {
    "campaign_id": "c-1",
    "backer_id": "b-1",
    "amount_minor": 2500,
    "currency": "EUR",
    "tier_id": "t1",
    "payment_token": "tok_visa",
    "locale": "fr-FR",
}


FINGERPRINT = "ab" * 32


def expected_command(
    item: BatchItem,
    tenant: str,
    correlation: str,
    cid: str,
    pid: str,
    fingerprint: str | None = FINGERPRINT,
) -> bytes:
    return encode_command(
        MakePledge(
            command_id=cid,
            fingerprint=fingerprint,
            tenant_id=tenant,
            correlation_id=correlation,
            issued_at=NOW,
            campaign_id=item.campaign_id,
            pledge_id=pid,
            backer_id=item.backer_id,
            amount=Money(amount_minor=item.amount_minor, currency=item.currency),
            tier_id=item.tier_id,
            payment_token=item.payment_token,
            locale=item.locale,
        )
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"tier_id": None, "payment_token": None, "locale": None},
        {"payment_token": 'tok "quoted" \\ back\nslash é 日本 \x01'},
        {"pledge_id": "p-9", "currency": "JPY", "amount_minor": 10**15},
    ],
)
@pytest.mark.parametrize(
    ("tenant", "correlation"), [("t-a", "corr-1"), ("tenant é", 'co"rr\\ \x7f')]
)
def test_command_bytes_equal_the_encoded_make_pledge(
    overrides: dict[str, Any], tenant: str, correlation: str
) -> None:
    raw = orjson.loads(orjson.dumps({**ITEM, **overrides}))
    fields = plain_pledge(raw)
    assert fields is not None
    model = BatchItem.model_validate(raw)
    assert fields == model_fields(model)
    cid = "0f1e2d3c-4b5a-5968-8776-a5b4c3d2e1f0"
    for fingerprint in (FINGERPRINT, None):
        encoder = MakePledgeTemplate(
            tenant_id=tenant,
            correlation_id=correlation,
            issued_at=format_timestamp(NOW),
            fingerprint=fingerprint,
        )
        value = encoder.command(fields, cid, "p-x")
        assert value == expected_command(model, tenant, correlation, cid, "p-x", fingerprint)
        assert decode_command(value) == decode_command(
            expected_command(model, tenant, correlation, cid, "p-x", fingerprint)
        )


def test_pending_text_equals_the_dumped_result() -> None:
    text = pending_result(7, "c-1", "p-2")
    assert text.encode() == orjson.dumps(
        {
            "index": 7,
            "status": "pending",
            "pledge_id": "p-2",
            "campaign_id": "c-1",
            "status_url": "/v1/campaigns/c-1/pledges/p-2",
        }
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount_minor": True},
        {"amount_minor": 12.5},
        {"amount_minor": "12"},
        {"amount_minor": 0},
        {"amount_minor": 10**15 + 1},
        {"currency": "XXX"},
        {"currency": "eur"},
        {"backer_id": "-b"},
        {"backer_id": "b\n"},
        {"backer_id": "b" * 129},
        {"campaign_id": 5},
        {"pledge_id": ""},
        {"tier_id": "t 1"},
        {"payment_token": ""},
        {"payment_token": "x" * 501},
        {"locale": "f"},
        {"locale": "fr-"},
        {"extra": 1},
    ],
)
def test_what_the_plain_check_refuses_pydantic_refuses_too(overrides: dict[str, Any]) -> None:
    raw = {**ITEM, **overrides}
    assert plain_pledge(raw) is None
    with pytest.raises(ValidationError):
        BatchItem.model_validate(raw)


@pytest.mark.parametrize("missing", ["campaign_id", "backer_id", "amount_minor", "currency"])
def test_an_item_without_a_required_member_is_left_to_pydantic(missing: str) -> None:
    raw = {k: v for k, v in ITEM.items() if k != missing}
    assert plain_pledge(raw) is None
    with pytest.raises(ValidationError):
        BatchItem.model_validate(raw)


_text = st.one_of(
    st.sampled_from(["b-1", "EUR", "JPY", "fr", "fr-FR", "x" * 128, "x" * 129, "", "A.b:c_d-e"]),
    st.text(max_size=12),
)
_value = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**16), st.floats(allow_nan=False), _text
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["campaign_id", "backer_id", "amount_minor", "currency", "pledge_id", "tier_id",
             "payment_token", "locale", "other"]
        ),
        _value,
    ).map(lambda d: {**{k: v for k, v in ITEM.items() if k not in d}, **d})
)  # fmt: skip
def test_the_plain_check_accepts_only_what_pydantic_accepts_with_the_same_values(
    item: dict[str, Any],
) -> None:
    fields = plain_pledge(item)
    try:
        model = BatchItem.model_validate(item)
    except ValidationError:
        assert fields is None
    else:
        assert fields is None or fields == model_fields(model)


@pytest.mark.parametrize(
    "ns",
    [0, 1_767_225_600_000_000_000, 1_767_225_599_999_999_999, 1_767_225_600_000_001_999],
)
def test_timestamp_text_equals_the_canonical_format(ns: int) -> None:
    from datetime import timedelta

    from services.pledge.api.command_ids import timestamp_text

    second, rest = divmod(ns, 1_000_000_000)
    instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        seconds=second, microseconds=rest // 1000
    )
    assert timestamp_text(ns) == format_timestamp(instant)
    assert timestamp_text(ns) == format_timestamp(instant)  # from the cached second
