"""Commands for the settlement worker, on the ``settlement-commands`` topic keyed by campaign.

The API appends them (a refund, a payment-method fix, a revenue report); the settlement worker,
the single writer of the ``settlement`` stream, decides them. ``command_id`` is derived by the
API from tenant + idempotency key and becomes the causation id of the resulting events, so a
retried command is recognised and yields nothing new.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter

from schemas.canonical import UtcDatetime, dumps
from schemas.codec import decode_validated
from schemas.events import Code, Ident

__all__ = [
    "RefundPledge",
    "ReportRevenue",
    "SettlementCommand",
    "UpdatePaymentMethod",
    "decode_settlement_command",
    "encode_settlement_command",
]


class _SettlementCommandFields(BaseModel):
    """Fields every settlement command carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: Ident
    tenant_id: Ident
    correlation_id: Ident
    issued_at: UtcDatetime
    campaign_id: Ident


class RefundPledge(_SettlementCommandFields):
    """Pay a captured pledge back, in full (no ``amount_minor``) or in part."""

    command_type: Literal["RefundPledge"] = "RefundPledge"
    pledge_id: Ident
    amount_minor: Annotated[StrictInt, Field(ge=1)] | None = None
    reason: Code = "requested_by_platform"
    requested_by: Ident


class UpdatePaymentMethod(_SettlementCommandFields):
    """Replace the payment method of a pledge whose capture failed (before ``retry_until``).

    Carries no token: the API wrote the new one to the payment-token store (keyed by the
    pledge) before appending this command, and the worker reads it from there."""

    command_type: Literal["UpdatePaymentMethod"] = "UpdatePaymentMethod"
    pledge_id: Ident


class ReportRevenue(_SettlementCommandFields):
    """A coproduction campaign earned ``amount_minor`` in ``period`` (``2027-Q1`` or
    ``2027-03``); the backers' share is distributed."""

    command_type: Literal["ReportRevenue"] = "ReportRevenue"
    period: Annotated[str, Field(pattern=r"^[0-9]{4}-(Q[1-4]|[0-9]{2})$")]
    amount_minor: Annotated[StrictInt, Field(ge=0)]
    currency: Annotated[str, Field(min_length=3, max_length=3)]


#: Any settlement command, discriminated on ``command_type``.
SettlementCommand = Annotated[
    RefundPledge | UpdatePaymentMethod | ReportRevenue, Field(discriminator="command_type")
]
_ADAPTER: TypeAdapter[RefundPledge | UpdatePaymentMethod | ReportRevenue] = TypeAdapter(
    SettlementCommand
)


def encode_settlement_command(command: RefundPledge | UpdatePaymentMethod | ReportRevenue) -> bytes:
    """Canonical JSON bytes of a command (the topic's value; the key is the campaign id)."""
    return dumps(command.model_dump(mode="json"))


def decode_settlement_command(
    data: bytes | bytearray | memoryview | str,
) -> RefundPledge | UpdatePaymentMethod | ReportRevenue:
    """Bytes from ``settlement-commands`` -> a validated command; only DecodeError escapes."""
    return decode_validated(_ADAPTER, data)
