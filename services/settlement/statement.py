"""A campaign's ledger statement, folded from its settlement stream (what ``pledgeflow ledger``
prints): balances per account, and the settlement's figures once it is settled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.codec import message_key
from schemas.envelope import Envelope
from schemas.events import CampaignSettled
from schemas.ledger import LedgerAccount, LedgerLine, balances
from schemas.money import Money, format_money

__all__ = ["Statement", "read_statement"]


@dataclass
class Statement:
    """Ledger lines of one campaign's settlement stream."""

    campaign_id: str
    currency: str = "EUR"
    seq: int = 0
    lines: list[LedgerLine] = field(default_factory=list)
    settled: CampaignSettled | None = None

    def apply(self, envelope: Envelope) -> None:
        """Fold one settlement event (in seq order)."""
        self.seq = envelope.seq
        payload = envelope.payload
        amount = getattr(payload, "amount", None) or getattr(payload, "gross", None)
        if isinstance(amount, Money):
            self.currency = amount.currency
        self.lines.extend(getattr(payload, "ledger", ()))
        if isinstance(payload, CampaignSettled):
            self.settled = payload

    def balances(self) -> dict[LedgerAccount, tuple[int, int]]:
        """``account -> (debits, credits)``."""
        return balances(self.lines)

    def _money(self, minor: int) -> str:
        return format_money(Money(amount_minor=minor, currency=self.currency))

    def rows(self) -> list[tuple[str, str, str, str]]:
        """Table rows: account, debits, credits, balance (credits - debits, or the reverse
        for ``backer_funds``)."""
        out: list[tuple[str, str, str, str]] = []
        for account, (debits, credits) in self.balances().items():
            balance = debits - credits if account == "backer_funds" else credits - debits
            out.append((account, self._money(debits), self._money(credits), self._money(balance)))
        return out

    def summary(self) -> list[str]:
        """The settlement's figures, or that it is not settled yet."""
        s = self.settled
        if s is None:
            return ["not settled yet"]
        return [
            f"settled {s.outcome}: gross {s.gross}, commission {s.commission}, fees {s.fees}, "
            f"payout {s.payout}",
            f"captured {s.captured_count}, failed {s.failed_count}, refunded {s.refunded_count}",
        ]

    def as_json(self) -> dict[str, Any]:
        """``{"campaign_id", "currency", "seq", "ledger": [...], "settled"}``."""
        return {
            "campaign_id": self.campaign_id,
            "currency": self.currency,
            "seq": self.seq,
            "ledger": [
                {"account": a, "debit_minor": d, "credit_minor": c}
                for a, (d, c) in self.balances().items()
            ],
            "settled": None if self.settled is None else self.settled.model_dump(mode="json"),
        }


async def read_statement(settings: Any, campaign_id: str) -> Statement | None:
    """The statement of ``campaign_id`` from the broker, or None if it has no settlement
    events. ``settings`` is a :class:`~services.settlement.config.SettlementSettings`.

    The topics are described first: a missing one (or Kafka out of reach) is a
    :class:`~services.streams.SourceError` at once (a consumer assigned to it would wait for
    its metadata forever), and the campaign's partition is computed from the topics' real
    partition count, not the configured one."""
    from services.streams import key_partition, replay_partition, topic_partitions

    names = settings.topics().for_stream("settlement")
    partitions = await topic_partitions(settings.kafka_bootstrap, names, settings.topic_prefix)
    statement = Statement(campaign_id)
    partition = key_partition(message_key(campaign_id), partitions)

    def keep(envelope: Envelope) -> None:
        if envelope.campaign_id == campaign_id:
            statement.apply(envelope)

    await replay_partition(settings.kafka_bootstrap, names, partition, keep)
    return statement if statement.seq else None
