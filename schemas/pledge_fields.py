"""The fields of a pledge as a client sends them, and their rules, in one place.

The API's request models (``services.pledge.api.models``) are built from these types, and
:func:`plain_pledge` is the same rules written as plain checks for the hot routes: it accepts
a body parsed by orjson only when it certainly satisfies them (a test pins the two together),
and never decides a refusal - pydantic judges whatever it does not accept and names the
fields. ``MakePledge`` (the command on the log) takes its shared limits from here too.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictInt, StrictStr, StringConstraints

from schemas.money import CURRENCY_EXPONENTS

__all__ = [
    "ID_PATTERN",
    "LOCALE_PATTERN",
    "MAX_AMOUNT_MINOR",
    "TOKEN_MAX_LENGTH",
    "Currency",
    "Id",
    "Locale",
    "PledgeFields",
    "PositiveAmount",
    "Token",
    "plain_pledge",
]

#: Largest amount accepted (10^15 minor units): beyond any real pledge, far below 2^63.
MAX_AMOUNT_MINOR = 10**15
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
LOCALE_PATTERN = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,3}$"
TOKEN_MAX_LENGTH = 500
CURRENCIES = sorted(CURRENCY_EXPONENTS)

#: A client-chosen identifier: 1-128 characters of ``A-Z a-z 0-9 . _ : -``, not starting
#: with a punctuation mark.
Id = Annotated[StrictStr, StringConstraints(pattern=ID_PATTERN)]


def _known_currency(code: str) -> str:
    if code not in CURRENCY_EXPONENTS:
        raise ValueError(
            f"unknown currency code {code!r}: not an ISO 4217 code Pledgeflow supports"
        )
    return code


Currency = Annotated[
    StrictStr,
    Field(json_schema_extra={"enum": CURRENCIES}, description="ISO 4217 code."),
    AfterValidator(_known_currency),
]
PositiveAmount = Annotated[
    StrictInt,
    Field(gt=0, le=MAX_AMOUNT_MINOR, description="Integer minor units (cents), > 0."),
]
Token = Annotated[StrictStr, StringConstraints(min_length=1, max_length=TOKEN_MAX_LENGTH)]
Locale = Annotated[StrictStr, StringConstraints(pattern=LOCALE_PATTERN)]

#: A checked pledge's values: campaign_id, backer_id, amount_minor, currency, pledge_id,
#: tier_id, payment_token, locale.
PledgeFields = tuple[str, str, int, str, str | None, str | None, str | None, str | None]

_ID = re.compile(ID_PATTERN).fullmatch
_LOCALE = re.compile(LOCALE_PATTERN).fullmatch
_MEMBERS = frozenset(
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


def plain_pledge(doc: Any) -> PledgeFields | None:
    """The values of ``doc`` (from ``orjson.loads``, ``campaign_id`` included) when it is a
    valid pledge as it stands; None means only "ask pydantic".

    The rules of the strict models: no unknown member, the required ones present,
    ``str``/``int`` exactly (a bool is not an int), ids of the id alphabet, amount in
    1..10^15, a known currency, a 1-500 character token, a locale tag.
    """
    if type(doc) is not dict or not doc.keys() <= _MEMBERS:
        return None
    try:
        campaign_id = doc["campaign_id"]
        backer_id = doc["backer_id"]
        amount = doc["amount_minor"]
        currency = doc["currency"]
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
    get = doc.get
    pledge_id, tier_id, token, locale = (
        get("pledge_id"),
        get("tier_id"),
        get("payment_token"),
        get("locale"),
    )
    if (
        (pledge_id is not None and (type(pledge_id) is not str or _ID(pledge_id) is None))
        or (tier_id is not None and (type(tier_id) is not str or _ID(tier_id) is None))
        or (
            token is not None and (type(token) is not str or not 0 < len(token) <= TOKEN_MAX_LENGTH)
        )
        or (locale is not None and (type(locale) is not str or _LOCALE(locale) is None))
    ):
        return None
    return campaign_id, backer_id, amount, currency, pledge_id, tier_id, token, locale
