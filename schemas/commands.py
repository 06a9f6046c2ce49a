"""Commands: what the API asks the pledge processor to decide, on the ``pledge-commands`` topic.

Commands are imperatives and carry no decision: the processor may refuse them (as a
``PledgeRejected`` event). ``command_id`` is derived by the API from tenant + idempotency key
and becomes the causation id of the resulting events, so a retried command is recognised.
``issued_at`` is for latency metrics only; the processor decides with its own clock.
``fingerprint`` (optional, absent from commands written before it existed) is the SHA-256 of
the HTTP request (method, path, body) the command came from: two requests that share an
Idempotency-Key - hence a command id - but not a body are told apart by it, even when the
API's idempotency record was lost.

Command bytes have one writer: :func:`encode_command`, and beside it
:class:`MakePledgeTemplate`, the same bytes of a ``MakePledge`` written from a text template
for the API's hot routes (a test pins the two together).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from schemas.canonical import UtcDatetime, dumps
from schemas.codec import decode_validated
from schemas.events import CampaignTerms, CloseReason, Code, Ident
from schemas.money import Money
from schemas.pledge_fields import TOKEN_MAX_LENGTH, PledgeFields

__all__ = [
    "CancelPledge",
    "CloseCampaign",
    "Command",
    "LaunchCampaign",
    "MakePledge",
    "MakePledgeTemplate",
    "decode_command",
    "encode_command",
]


class _CommandFields(BaseModel):
    """Fields every command carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: Ident
    tenant_id: Ident
    correlation_id: Ident
    issued_at: UtcDatetime
    campaign_id: Ident
    #: SHA-256 (hex) of the request the command came from; None in commands from before it.
    fingerprint: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class LaunchCampaign(CampaignTerms, _CommandFields):
    """Open a campaign with these terms (becomes ``CampaignLaunched``)."""

    command_type: Literal["LaunchCampaign"] = "LaunchCampaign"


class MakePledge(_CommandFields):
    """Back a campaign, optionally choosing a reward tier."""

    command_type: Literal["MakePledge"] = "MakePledge"
    pledge_id: Ident
    backer_id: Ident
    amount: Money
    tier_id: Ident | None = None
    payment_token: Annotated[str, Field(max_length=TOKEN_MAX_LENGTH)] | None = None
    locale: Annotated[str, Field(max_length=35)] | None = None


class CancelPledge(_CommandFields):
    """Withdraw an accepted pledge; ``reason`` is a snake_case code (e.g. ``backer_request``)."""

    command_type: Literal["CancelPledge"] = "CancelPledge"
    pledge_id: Ident
    reason: Code = "backer_request"


class CloseCampaign(_CommandFields):
    """Stop a campaign: at its deadline (processor timer), by its creator, or by the platform."""

    command_type: Literal["CloseCampaign"] = "CloseCampaign"
    reason: CloseReason


#: Any command; discriminated on ``command_type`` so a ``match`` on the class is exhaustive.
Command = Annotated[
    LaunchCampaign | MakePledge | CancelPledge | CloseCampaign,
    Field(discriminator="command_type"),
]

_COMMAND: TypeAdapter[LaunchCampaign | MakePledge | CancelPledge | CloseCampaign] = TypeAdapter(
    Command
)
#: Its validator's ``validate_json``, called without ``TypeAdapter``'s wrapper (hot path).
_validate_command_json: Callable[
    [bytes], LaunchCampaign | MakePledge | CancelPledge | CloseCampaign
] = _COMMAND.validator.validate_json


def encode_command(command: LaunchCampaign | MakePledge | CancelPledge | CloseCampaign) -> bytes:
    """Canonical JSON bytes of a command (the ``pledge-commands`` value; key = campaign_id).
    A command without a fingerprint is written without the member, as before it existed."""
    data = command.model_dump(mode="json")
    if data["fingerprint"] is None:
        del data["fingerprint"]
    return dumps(data)


class MakePledgeTemplate:
    """``encode_command(MakePledge(...))`` of checked pledges from a text template holding one
    request's constants (tenant, correlation id, issue time), for the API's hot routes.

    Validating into a model and dumping a dict per command cost about as much as the rest of
    a batch item's work. Every value a pledge contributes has been checked by
    :func:`schemas.pledge_fields.plain_pledge` (or the models built from the same rules)
    against a pattern that leaves nothing to escape in JSON (ids, currency, locale), except
    the payment token, which orjson encodes. Members are in sorted order, as the canonical
    encoding writes them.
    """

    __slots__ = ("_middle", "_tail")

    def __init__(
        self,
        *,
        tenant_id: str,
        correlation_id: str,
        issued_at: str,
        fingerprint: str | None = None,
    ) -> None:
        self._middle = (
            ',"command_type":"MakePledge","correlation_id":'
            + orjson.dumps(correlation_id).decode()
            + (
                ""
                if fingerprint is None
                else ',"fingerprint":' + orjson.dumps(fingerprint).decode()
            )
            + ',"issued_at":'
            + orjson.dumps(issued_at).decode()
            + ',"locale":'
        )
        self._tail = ',"tenant_id":' + orjson.dumps(tenant_id).decode() + ',"tier_id":'

    def command(self, fields: PledgeFields, command_id: str, pledge_id: str) -> bytes:
        """The ``MakePledge`` bytes of a checked pledge."""
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


#: The integers orjson reads as ints (i64 min .. u64 max); it reads others as floats.
_ORJSON_INT_MIN = -(2**63)
_ORJSON_INT_MAX = 2**64 - 1


def decode_command(
    data: bytes | bytearray | memoryview | str,
) -> LaunchCampaign | MakePledge | CancelPledge | CloseCampaign:
    """Bytes from ``pledge-commands`` -> a validated command; only :class:`DecodeError` escapes."""
    if type(data) is bytes:
        # Fast path: pydantic parses and validates in one pass. It accepts exactly what the
        # orjson path below accepts except integers beyond 64 bits (orjson reads them as
        # floats, which StrictInt refuses): a MakePledge amount out of that range and every
        # LaunchCampaign (several unbounded ints, and rare) take the path below. So does any
        # error, so that it is explained exactly as before.
        try:
            command = _validate_command_json(data)
        except ValidationError:
            pass
        else:
            command_type = type(command)
            if command_type is MakePledge:
                if _ORJSON_INT_MIN <= command.__dict__["amount"].amount_minor <= _ORJSON_INT_MAX:
                    return command
            elif command_type is not LaunchCampaign:
                return command
    return decode_validated(_COMMAND, data)
