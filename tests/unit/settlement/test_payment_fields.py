"""A listing page reads each pledge's payment hash as ``HMGET`` values: the record built from
them is the one its own GET builds from the whole hash (same members, same order), so a listed
pledge is byte for byte its own body."""

from __future__ import annotations

import pytest

from services.settlement.adapters.redis_readmodel import (
    PAYMENT_FIELDS,
    payment_from_fields,
    payment_record,
)

CASES = [
    {},
    {"status": b"captured", "attempts": b"1", "captured_minor": b"2500"},
    {
        "status": b"capture_failed",
        "attempts": b"2",
        "retry_until": b"2027-01-08T00:00:00Z",
        "method_updated": b"true",
        "reason": b"card_declined",
    },
    {"status": b"refunded", "captured_minor": b"900", "refunded_minor": b"900"},
]


@pytest.mark.parametrize("stored", CASES)
def test_the_fields_make_the_record_the_whole_hash_makes(stored: dict[str, bytes]) -> None:
    values = [stored.get(name) for name in PAYMENT_FIELDS]
    from_fields = payment_from_fields(values)
    whole = payment_record({name.encode(): value for name, value in stored.items()})
    assert from_fields == whole
    assert list(from_fields or {}) == list(whole or {})
