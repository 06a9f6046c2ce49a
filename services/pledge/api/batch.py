"""The batch endpoint's per-item work on plain dicts: check, command bytes, result bytes.

A batch carries up to 1,000 pledges, so per-item costs decide its throughput. Validating each
item into a pydantic model, dumping a dict per command and one per result cost about as much
as the rest of the request together. Here:

- :func:`plain_item` accepts an item parsed by orjson when it certainly satisfies
  :class:`~services.pledge.api.models.BatchItem` (exact types, the same patterns and bounds).
  It never decides a refusal: anything it does not accept is validated by pydantic, which
  names the offending fields as before (and accepts what it accepts).
- :class:`ItemEncoder` writes the ``MakePledge`` bytes and the ``pending`` result of an item
  from text templates holding the request's constants. Every value an item contributes has
  been checked against a pattern that leaves nothing to escape in JSON (ids, currency,
  locale), except the payment token, which orjson encodes. The bytes equal
  ``encode_command(MakePledge(...))`` and ``orjson.dumps`` of the result dict (tests pin
  both).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from schemas.money import CURRENCY_EXPONENTS
from services.pledge.api.models import ID_PATTERN, MAX_AMOUNT_MINOR, BatchItem

__all__ = ["Fields", "ItemEncoder", "model_fields", "plain_item"]

_ID = re.compile(ID_PATTERN).fullmatch
_LOCALE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,3}$").fullmatch
_FIELDS = frozenset(
    (
        "pledge_id",
        "backer_id",
        "amount_minor",
        "currency",
        "tier_id",
        "payment_token",
        "locale",
        "campaign_id",
    )
)


#: A checked item's values: campaign_id, backer_id, amount_minor, currency, pledge_id, tier_id,
#: payment_token, locale.
Fields = tuple[str, str, int, str, str | None, str | None, str | None, str | None]


def plain_item(item: Any) -> Fields | None:
    """The values of ``item`` (from ``orjson.loads``) when it is a valid batch item as it
    stands; None means only "ask pydantic".

    Mirrors the strict :class:`BatchItem` model: no unknown member, the required ones
    present, ``str``/``int`` exactly (a bool is not an int), ids of the id alphabet, amount
    in 1..10^15, a known currency, a 1-500 character token, a locale tag.
    """
    if type(item) is not dict or not item.keys() <= _FIELDS:
        return None
    try:
        campaign_id = item["campaign_id"]
        backer_id = item["backer_id"]
        amount = item["amount_minor"]
        currency = item["currency"]
    except KeyError:
        return None
    if (
        type(amount) is not int
        or not 0 < amount <= MAX_AMOUNT_MINOR
        or type(currency) is not str
        or currency not in CURRENCY_EXPONENTS
        or type(backer_id) is not str
        or _ID(backer_id) is None
        or type(campaign_id) is not str
        or _ID(campaign_id) is None
    ):
        return None
    get = item.get
    pledge_id, tier_id, token, locale = (
        get("pledge_id"),
        get("tier_id"),
        get("payment_token"),
        get("locale"),
    )
    if (
        (pledge_id is not None and (type(pledge_id) is not str or _ID(pledge_id) is None))
        or (tier_id is not None and (type(tier_id) is not str or _ID(tier_id) is None))
        or (token is not None and (type(token) is not str or not 0 < len(token) <= 500))
        or (locale is not None and (type(locale) is not str or _LOCALE(locale) is None))
    ):
        return None
    return campaign_id, backer_id, amount, currency, pledge_id, tier_id, token, locale


def model_fields(item: BatchItem) -> Fields:
    """:data:`Fields` of an item pydantic validated."""
    return (
        item.campaign_id,
        item.backer_id,
        item.amount_minor,
        item.currency,
        item.pledge_id,
        item.tier_id,
        item.payment_token,
        item.locale,
    )


class ItemEncoder:
    """Command and result bytes of one request's items (the request's constants held once)."""

    __slots__ = ("_middle", "_tail")

    def __init__(self, *, tenant_id: str, correlation_id: str, issued_at: str) -> None:
        # Sorted member order, as the canonical encoding writes it.
        self._middle = (
            ',"command_type":"MakePledge","correlation_id":'
            + orjson.dumps(correlation_id).decode()
            + ',"issued_at":'
            + orjson.dumps(issued_at).decode()
            + ',"locale":'
        )
        self._tail = ',"tenant_id":' + orjson.dumps(tenant_id).decode() + ',"tier_id":'

    def command(self, fields: Fields, command_id: str, pledge_id: str) -> bytes:
        """``encode_command(MakePledge(...))`` of a checked item."""
        campaign_id, backer_id, amount, currency, _, tier_id, token, locale = fields
        # Pattern-checked strings: nothing to escape.
        locale_json = "null" if locale is None else '"' + locale + '"'
        tier_json = "null" if tier_id is None else '"' + tier_id + '"'
        return (
            f'{{"amount":{{"amount_minor":{amount},"currency":"{currency}"}}'
            f',"backer_id":"{backer_id}","campaign_id":"{campaign_id}"'
            f',"command_id":"{command_id}"{self._middle}'
            f"{locale_json}"
            f',"payment_token":{"null" if token is None else orjson.dumps(token).decode()}'
            f',"pledge_id":"{pledge_id}"{self._tail}'
            f"{tier_json}}}"
        ).encode()

    @staticmethod
    def pending(index: int, campaign_id: str, pledge_id: str) -> str:
        """The ``pending`` result of item ``index`` (JSON text)."""
        return (
            f'{{"index":{index},"status":"pending","pledge_id":"{pledge_id}"'
            f',"campaign_id":"{campaign_id}"'
            f',"status_url":"/v1/campaigns/{campaign_id}/pledges/{pledge_id}"}}'
        )
