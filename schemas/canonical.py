"""The one canonical JSON encoding shared by Kafka values and the hash chain.

Sorted keys, no whitespace, UTF-8, timestamps as UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always six
fractional digits) and no floats, so the same event always yields the same bytes and the same
hash on every machine and in every language that follows these rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BeforeValidator, PlainSerializer

__all__ = [
    "GENESIS_HASH",
    "UtcDatetime",
    "canonical_bytes",
    "chain_hash",
    "format_timestamp",
    "to_utc",
]

#: ``prev_hash`` of the first event of every (campaign, stream) chain.
GENESIS_HASH = "0" * 64

_SORTED = orjson.OPT_SORT_KEYS


def to_utc(value: datetime) -> datetime:
    """Normalise an aware datetime to UTC; a naive one is refused (its instant is unknown)."""
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware (UTC)")
    return value.astimezone(UTC)


@lru_cache(maxsize=4096)
def format_timestamp(value: datetime) -> str:
    """Canonical text of an aware datetime: UTC, microsecond precision, ``Z`` suffix.

    Cached: a writer stamps a whole batch with one clock reading, so the same instant recurs.
    """
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_TEXT_OR_DATETIME = (str, datetime)


def _text_or_datetime(value: Any) -> Any:
    # Lax pydantic would read a number as a Unix time; the canonical form is text only.
    if not isinstance(value, _TEXT_OR_DATETIME):
        raise ValueError("expected an ISO 8601 UTC timestamp string")
    return value


#: Aware datetime, stored in UTC and serialised in the canonical fixed-precision ``...Z`` form.
UtcDatetime = Annotated[
    datetime,
    BeforeValidator(_text_or_datetime),
    AfterValidator(to_utc),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]


def _reject_floats(value: Any, path: str = "$") -> None:
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float):
            raise ValueError(f"float at {where}: money and counters must be integers")
        if isinstance(item, Mapping):
            stack.extend((v, f"{where}.{k}") for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))


def dumps(value: Mapping[str, Any]) -> bytes:
    """Canonical bytes without the float check: for trusted dicts built from our models."""
    return orjson.dumps(value, option=_SORTED)


def canonical_bytes(value: Mapping[str, Any]) -> bytes:
    """Canonical bytes of a JSON-ready dict (str keys, str/int/bool/None/list/dict values).

    Floats are refused with a ValueError naming their path: their text form is not stable
    across encoders, and money is never a float.
    """
    _reject_floats(value)
    return orjson.dumps(value, option=_SORTED)


def chain_hash(prev_hash: str, body: bytes) -> str:
    """``sha256(prev_hash + body)`` as lowercase hex; ``body`` is the canonical envelope
    without its ``hash`` field."""
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()
