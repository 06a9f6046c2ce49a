"""Every check the auditor makes, each a small named rule.

Three kinds, by when they can be decided:

* **chain rules** (``hash_intact``, ``seq_gapless``, ``prev_hash_links``, ``well_formed``) are
  checked by :mod:`services.audit.engine` on each stored line before it is folded;
* **event rules** are checked by the fold (:mod:`services.audit.fold`) on the event that breaks
  them;
* **campaign rules** below run once a campaign's streams are complete, because a settlement
  event can only be judged against the campaign's final state (its outcome, which pledges were
  still active), and settlement and campaign events travel on different chains.

Each campaign rule returns ``(rule, detail, ordinal)`` findings, ``ordinal`` naming the event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from schemas.money import bps_of
from services.audit.fold import AMOUNT, STATUS, CampaignFold, SettlementEntry

__all__ = [
    "CAMPAIGN_RULES",
    "CAMPAIGN_RULE_NAMES",
    "CHAIN_RULES",
    "RULES",
    "CampaignRule",
    "RuleHit",
    "check_campaign",
]

#: ``(rule, detail, ordinal of the event it names)``.
RuleHit = tuple[str, str, int]
CampaignRule = Callable[[CampaignFold], Iterator[RuleHit]]

#: Every rule name and what it asserts (``pledgeflow audit verify --json`` reports by name).
RULES: dict[str, str] = {
    "well_formed": "every stored line is a JSON envelope with the chain fields",
    "hash_intact": "hash == sha256(prev_hash + canonical(envelope without hash))",
    "seq_gapless": "seq is 1, 2, 3 ... per (campaign, stream): no gap, duplicate or reordering",
    "prev_hash_links": "prev_hash is the previous event's hash (genesis for seq 1)",
    "launched_once": "CampaignLaunched at most once per campaign",
    "pledge_on_open_campaign": "PledgeMade only while the campaign is open",
    "pledge_id_unique": "a pledge id is used by at most one accepted or finally refused pledge",
    "pledge_currency": "a pledge is in the campaign's currency",
    "cancel_active_pledge": "PledgeCancelled only for an active pledge, for its amount",
    "goal_reached_once": "GoalReached at most once",
    "goal_reached_consistent": "GoalReached right after the total first crosses the goal, "
    "carrying the running total and pledge count",
    "closed_once": "CampaignClosed at most once, on an open campaign",
    "closed_is_final": "no pledge, cancellation or GoalReached after CampaignClosed",
    "close_consistent": "CampaignClosed carries the folded total, pledge count and its own seq",
    "close_outcome": "the outcome follows from reason, goal, total and funding model",
    "settlement_after_close": "settlement happens only for a closed campaign",
    "settlement_follows_outcome": "funded: captures/failures/drops only for pledges active at "
    "close; failed or cancelled: releases/refunds, every capture refunded",
    "settlement_amounts_match": "a capture or release is for the pledge's amount; its refunds "
    "(possibly partial) sum to at most that amount",
    "capture_once": "a pledge is captured at most once (net of full refunds)",
    "settled_once": "CampaignSettled at most once",
    "ledger_balanced": "CampaignSettled: debits == credits, payout == gross - commission - "
    "fees, gross/fees/commission/counts equal the settlement events",
    "readmodel_equal": "the live read model's campaign totals equal the replayed ones",
}


#: Rules about the log's integrity, checked before an event is folded.
CHAIN_RULES = frozenset({"well_formed", "hash_intact", "seq_gapless", "prev_hash_links"})
#: Rules judged once a campaign's streams are complete (see ``CAMPAIGN_RULES``).
CAMPAIGN_RULE_NAMES = frozenset(
    {"settlement_after_close", "settlement_follows_outcome", "settlement_amounts_match",
     "capture_once", "ledger_balanced", "readmodel_equal"}
)  # fmt: skip


def _pledge_status(fold: CampaignFold, entry: SettlementEntry) -> str:
    record = fold.pledges.get(entry.pledge_id)
    return "unknown" if record is None else str(record[STATUS])


def settlement_after_close(fold: CampaignFold) -> Iterator[RuleHit]:
    """Settlement events exist only for a campaign that has closed - except what a live
    campaign legitimately settles: charges (and their failures and refunds) in
    ``charge_then_refund``, and the release of a cancelled pledge's authorization."""
    if fold.first_settlement_ordinal is None or fold.status == "closed":
        return
    charges = fold.settlement_mode == "charge_then_refund"
    for entry in fold.settlement:
        live = (charges and entry.event_type != "PledgeReleased") or (
            entry.event_type == "PledgeReleased" and _pledge_status(fold, entry) == "cancelled"
        )
        if not live:
            yield (
                "settlement_after_close",
                f"settlement of a campaign that is {fold.status}",
                entry.ordinal,
            )
            return
    if fold.settled is not None:
        yield (
            "settlement_after_close",
            f"settlement of a campaign that is {fold.status}",
            fold.settled_ordinal,
        )


def settlement_follows_outcome(fold: CampaignFold) -> Iterator[RuleHit]:
    """Funded: captures/failures/drops of active pledges; failed: releases and refunds."""
    if fold.status != "closed":
        return
    funded = fold.outcome == "funded"
    captured: set[str] = set()
    cancelled_charges: set[str] = set()
    refunded: dict[str, int] = {}
    for entry in fold.settlement:
        status = _pledge_status(fold, entry)
        kind = entry.event_type
        if kind == "PledgeCaptured":
            captured.add(entry.pledge_id)
            if status == "cancelled" and fold.settlement_mode == "charge_then_refund":
                cancelled_charges.add(entry.pledge_id)  # charged at pledge time: refund due
            elif status != "active":
                yield (
                    "settlement_follows_outcome",
                    f"captures pledge {entry.pledge_id!r} that is {status} at close",
                    entry.ordinal,
                )
            elif not funded and fold.settlement_mode != "charge_then_refund":
                yield (
                    "settlement_follows_outcome",
                    f"captures pledge {entry.pledge_id!r} of a {fold.outcome} campaign",
                    entry.ordinal,
                )
        elif kind in ("PledgeCaptureFailed", "PledgeReleased"):
            # Releasing a cancelled pledge's authorization is legitimate in any outcome, and
            # so is a failed charge at pledge time (charge_then_refund) of a later cancelled one.
            charged_live = fold.settlement_mode == "charge_then_refund" and status == "cancelled"
            if status == "unknown" or status == "rejected" or (
                funded and kind == "PledgeCaptureFailed" and status != "active"
                and not charged_live
            ):  # fmt: skip
                yield (
                    "settlement_follows_outcome",
                    f"{kind} of pledge {entry.pledge_id!r} that is {status}",
                    entry.ordinal,
                )
        elif kind == "PledgeRefunded":
            if entry.pledge_id not in captured:
                yield (
                    "settlement_follows_outcome",
                    f"refunds pledge {entry.pledge_id!r} that was not captured",
                    entry.ordinal,
                )
            if _fully_refunded(fold, entry, refunded):
                captured.discard(entry.pledge_id)
    kept = captured & cancelled_charges
    if funded and kept:
        first = next(e for e in fold.settlement if e.pledge_id in kept)
        yield (
            "settlement_follows_outcome",
            f"{len(kept)} charge(s) of cancelled pledges never refunded, first pledge "
            f"{first.pledge_id!r}",
            first.ordinal,
        )
    if not funded and captured:
        first = next(e for e in fold.settlement if e.pledge_id in captured)
        yield (
            "settlement_follows_outcome",
            f"{len(captured)} capture(s) of a {fold.outcome} campaign never refunded, "
            f"first pledge {first.pledge_id!r}",
            first.ordinal,
        )


def _fully_refunded(fold: CampaignFold, entry: SettlementEntry, refunded: dict[str, int]) -> bool:
    """Add a refund to ``refunded``; True (and the count reset) once the pledge's whole amount
    has been paid back - refunds may be partial."""
    record = fold.pledges.get(entry.pledge_id)
    total = refunded.get(entry.pledge_id, 0) + entry.amount_minor
    if record is None or total >= record[AMOUNT]:
        refunded.pop(entry.pledge_id, None)
        return True
    refunded[entry.pledge_id] = total
    return False


def settlement_amounts_match(fold: CampaignFold) -> Iterator[RuleHit]:
    """A capture or release moves exactly the pledge's amount, in its currency; refunds of a
    capture (possibly partial) sum to at most the pledge's amount."""
    refunded: dict[str, int] = {}
    for entry in fold.settlement:
        record = fold.pledges.get(entry.pledge_id)
        if record is None:
            continue
        if entry.event_type == "PledgeRefunded" and entry.currency == fold.currency:
            total = refunded.get(entry.pledge_id, 0) + entry.amount_minor
            if entry.amount_minor > 0 and total <= record[AMOUNT]:
                refunded[entry.pledge_id] = 0 if total == record[AMOUNT] else total
                continue
        elif entry.event_type == "PledgeCaptured":
            refunded.pop(entry.pledge_id, None)
        if entry.amount_minor != record[AMOUNT] or entry.currency != fold.currency:
            yield (
                "settlement_amounts_match",
                f"{entry.event_type} of {entry.amount_minor} {entry.currency} for pledge "
                f"{entry.pledge_id!r} of {record[AMOUNT]} {fold.currency}",
                entry.ordinal,
            )


def capture_once(fold: CampaignFold) -> Iterator[RuleHit]:
    """No second capture of a pledge unless the first was refunded in full."""
    held: set[str] = set()
    refunded: dict[str, int] = {}
    for entry in fold.settlement:
        if entry.event_type == "PledgeCaptured":
            if entry.pledge_id in held:
                yield ("capture_once", f"pledge {entry.pledge_id!r} captured twice", entry.ordinal)
            held.add(entry.pledge_id)
        elif entry.event_type == "PledgeRefunded" and _fully_refunded(fold, entry, refunded):
            held.discard(entry.pledge_id)


def _amount(money: Any) -> int:
    return int(money["amount_minor"])


def ledger_balanced(fold: CampaignFold) -> Iterator[RuleHit]:
    """CampaignSettled balances and equals the sum of the settlement events before it."""
    settled = fold.settled
    if settled is None:
        return
    ordinal = fold.settled_ordinal
    gross, commission = _amount(settled["gross"]), _amount(settled["commission"])
    fees, payout = _amount(settled["fees"]), _amount(settled["payout"])
    debits, credits = settled.get("ledger_debits_minor"), settled.get("ledger_credits_minor")

    def hit(detail: str) -> RuleHit:
        return ("ledger_balanced", detail, ordinal)

    if debits != credits:
        yield hit(f"ledger debits {debits} != credits {credits}")
        return
    if payout != gross - commission - fees:
        yield hit(f"payout {payout} != gross {gross} - commission {commission} - fees {fees}")
        return
    before = [e for e in fold.settlement if e.seq < fold.settled_seq]
    captures = [e for e in before if e.event_type == "PledgeCaptured"]
    refunds = [e for e in before if e.event_type == "PledgeRefunded"]
    failures = {e.pledge_id for e in before if e.event_type == "PledgeCaptureFailed"}
    net = sum(e.amount_minor for e in captures) - sum(e.amount_minor for e in refunds)
    net_fees = sum(e.fee_minor for e in captures) - sum(e.fee_minor for e in refunds)
    if gross != net:
        yield hit(f"gross {gross} but captures net of refunds are {net}")
    elif fees != net_fees:
        yield hit(f"fees {fees} but the capture fees net of refunded fees are {net_fees}")
    elif commission != bps_of(gross, fold.commission_bps):
        yield hit(
            f"commission {commission} != {fold.commission_bps} bps of {gross} "
            f"({bps_of(gross, fold.commission_bps)})"
        )
    elif settled.get("outcome") != fold.outcome:
        yield hit(f"settled as {settled.get('outcome')!r}, closed as {fold.outcome!r}")
    elif (
        settled.get("captured_count") != len(captures)
        or settled.get("refunded_count") != len(refunds)
        or settled.get("failed_count") != len(failures)
    ):
        yield hit(
            f"counts captured/failed/refunded {settled.get('captured_count')}/"
            f"{settled.get('failed_count')}/{settled.get('refunded_count')} but the events give "
            f"{len(captures)}/{len(failures)}/{len(refunds)}"
        )
    elif gross != debits:
        yield hit(f"ledger moves {debits} for a gross of {gross}")


#: The campaign rules, in the order their findings are reported.
CAMPAIGN_RULES: tuple[CampaignRule, ...] = (
    settlement_after_close,
    settlement_follows_outcome,
    settlement_amounts_match,
    capture_once,
    ledger_balanced,
)


def check_campaign(fold: CampaignFold) -> list[RuleHit]:
    """Every campaign-rule finding of one fully folded campaign."""
    return [hit for rule in CAMPAIGN_RULES for hit in rule(fold)]
