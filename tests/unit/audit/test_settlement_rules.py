"""Settlement and ledger rules, on the generated settlement streams (no settlement service
exists yet: these rules define what it must write)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from schemas.canonical import dumps
from services.audit.engine import PartitionAuditor
from tests.support.history import History, generate_history, restamp_chain

Raw = dict[str, Any]


@pytest.fixture(scope="module")
def history() -> History:
    return generate_history(campaigns=12, seed=9)


def settle_chain(
    history: History, outcome: str, edit: Callable[[list[Raw], History, str], None],
    mode: str | None = None,
) -> tuple[list[bytes], str]:  # fmt: skip
    """The log with the settlement chain of a campaign of ``outcome`` edited and re-stamped."""
    raws = [orjson.loads(x) for x in history.lines]
    cid = next(
        c for c, s in history.states.items()
        if s.outcome == outcome and (mode is None or (s.terms and s.terms.settlement_mode == mode))
    )  # fmt: skip
    chain = [r for r in raws if r["campaign_id"] == cid and r["stream"] == "settlement"]
    edit(chain, history, cid)
    rest = [r for r in raws if not (r["campaign_id"] == cid and r["stream"] == "settlement")]
    return [dumps(r) for r in rest + list(restamp_chain(chain))], cid


def findings(lines: list[bytes]) -> list[tuple[str, str | None, str | None]]:
    auditor = PartitionAuditor(0)
    auditor.feed(lines, 0)
    return [(f.rule, f.campaign_id, f.event_type) for f in auditor.finish().findings]


def settled(chain: list[Raw]) -> Raw:
    return next(r for r in chain if r["event_type"] == "CampaignSettled")


def test_generated_settlement_is_clean_for_every_outcome(history: History) -> None:
    assert findings(history.lines) == []
    raws = [orjson.loads(x) for x in history.lines]
    kinds = {(history.states[r["campaign_id"]].outcome, r["event_type"]) for r in raws
             if r["stream"] == "settlement"}  # fmt: skip
    assert ("funded", "PledgeCaptured") in kinds
    assert ("failed", "PledgeReleased") in kinds or ("failed", "PledgeRefunded") in kinds
    assert ("cancelled", "CampaignSettled") in kinds


def test_capture_of_a_cancelled_pledge_in_a_funded_campaign(history: History) -> None:
    def capture_cancelled(chain: list[Raw], h: History, cid: str) -> None:
        state = h.states[cid]
        pid, pledge = next((p, r) for p, r in state.pledges.items() if r.status == "cancelled")
        capture = dict(next(r for r in chain if r["event_type"] == "PledgeCaptured"))
        capture["payload"] = dict(
            capture["payload"],
            pledge_id=pid,
            amount={"amount_minor": pledge.amount_minor, "currency": "EUR"},
        )
        chain.insert(0, capture)  # fmt: skip

    lines, cid = settle_chain(history, "funded", capture_cancelled)
    assert findings(lines)[0] == ("settlement_follows_outcome", cid, "PledgeCaptured")


def test_capture_in_a_failed_authorize_then_capture_campaign(history: History) -> None:
    def capture(chain: list[Raw], h: History, cid: str) -> None:
        release = next(r for r in chain if r["event_type"] == "PledgeReleased")
        p = release["payload"]
        release["event_type"] = "PledgeCaptured"
        release["payload"] = {
            "pledge_id": p["pledge_id"], "backer_id": "b", "amount": p["amount"],
            "fee": {"amount_minor": 0, "currency": "EUR"}, "gateway_ref": "ch", "attempt": 1,
        }  # fmt: skip

    lines, cid = settle_chain(history, "failed", capture, mode="authorize_then_capture")
    assert ("settlement_follows_outcome", cid, "PledgeCaptured") in findings(lines)


def test_capture_for_the_wrong_amount(history: History) -> None:
    def shave(chain: list[Raw], h: History, cid: str) -> None:
        capture = next(r for r in chain if r["event_type"] == "PledgeCaptured")
        capture["payload"]["amount"]["amount_minor"] -= 1

    lines, cid = settle_chain(history, "funded", shave)
    assert findings(lines)[0] == ("settlement_amounts_match", cid, "PledgeCaptured")


def test_pledge_captured_twice(history: History) -> None:
    def twice(chain: list[Raw], h: History, cid: str) -> None:
        i = next(i for i, r in enumerate(chain) if r["event_type"] == "PledgeCaptured")
        chain.insert(i + 1, dict(chain[i]))

    lines, cid = settle_chain(history, "funded", twice)
    assert ("capture_once", cid, "PledgeCaptured") in findings(lines)


def test_unbalanced_ledger(history: History) -> None:
    def unbalance(chain: list[Raw], h: History, cid: str) -> None:
        settled(chain)["payload"]["ledger_credits_minor"] += 1

    lines, cid = settle_chain(history, "funded", unbalance)
    assert findings(lines) == [("ledger_balanced", cid, "CampaignSettled")]


def test_payout_not_gross_minus_commission_minus_fees(history: History) -> None:
    def overpay(chain: list[Raw], h: History, cid: str) -> None:
        p = settled(chain)["payload"]
        p["payout"]["amount_minor"] += 5
        p["ledger_credits_minor"] += 5  # still balanced, but the payout is wrong
        p["ledger_debits_minor"] += 5

    lines, cid = settle_chain(history, "funded", overpay)
    assert findings(lines) == [("ledger_balanced", cid, "CampaignSettled")]


def test_commission_not_the_campaign_rate(history: History) -> None:
    def commission(chain: list[Raw], h: History, cid: str) -> None:
        p = settled(chain)["payload"]
        p["commission"]["amount_minor"] += 1
        p["payout"]["amount_minor"] -= 1

    lines, cid = settle_chain(history, "funded", commission)
    assert findings(lines) == [("ledger_balanced", cid, "CampaignSettled")]


def test_settled_twice(history: History) -> None:
    def twice(chain: list[Raw], h: History, cid: str) -> None:
        chain.append(dict(settled(chain)))

    lines, cid = settle_chain(history, "failed", twice)
    assert ("settled_once", cid, "CampaignSettled") in findings(lines)


def test_failed_campaign_capture_never_refunded(history: History) -> None:
    def keep_money(chain: list[Raw], h: History, cid: str) -> None:
        i = next(i for i, r in enumerate(chain) if r["event_type"] == "PledgeRefunded")
        del chain[i]

    lines, cid = settle_chain(history, "failed", keep_money, mode="charge_then_refund")
    assert ("settlement_follows_outcome", cid, "PledgeCaptured") in findings(lines)
