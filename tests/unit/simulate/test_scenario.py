"""The simulation's crowd: deterministic from its seed, and holding what a launch day holds."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from schemas.money import currency_exponent
from services.pledge.api.models import LaunchRequest, PledgeRequest
from services.simulate.scenario import (
    CancelAction,
    CloseAction,
    InvalidAction,
    PledgeAction,
    generate,
)


def crowd(seed: int = 3, run_id: str = "r1", **kw: float) -> object:
    args = {"campaigns": 10, "duration": 120.0, "rate": 20.0, **kw}
    return generate(seed, run_id, **args)  # type: ignore[arg-type]


def test_the_same_seed_gives_the_same_crowd_and_another_seed_another() -> None:
    assert generate(5, "r", campaigns=6, duration=60, rate=10) == generate(
        5, "r", campaigns=6, duration=60, rate=10
    )
    assert generate(5, "r", campaigns=6, duration=60, rate=10) != generate(
        6, "r", campaigns=6, duration=60, rate=10
    )


def test_the_run_id_only_renames() -> None:
    a = generate(5, "ra", campaigns=4, duration=30, rate=10)
    b = generate(5, "rb", campaigns=4, duration=30, rate=10)
    assert [p.amount_minor for p in a.pledges] == [p.amount_minor for p in b.pledges]
    assert [x.at for x in a.actions] == [x.at for x in b.actions]
    assert {c.campaign_id for c in a.campaigns}.isdisjoint(c.campaign_id for c in b.campaigns)


def test_campaigns_cover_every_kind_model_mode_and_exponent() -> None:
    s = generate(1, "r", campaigns=6, duration=60, rate=10)
    assert {c.kind for c in s.campaigns} == {"reward", "donation", "coproduction"}
    assert {c.funding_model for c in s.campaigns} == {"all_or_nothing", "keep_it_all"}
    assert {c.settlement_mode for c in s.campaigns} == {
        "authorize_then_capture",
        "charge_then_refund",
    }
    assert {currency_exponent(c.currency) for c in s.campaigns} == {0, 2, 3}
    assert any(t.quantity_limit and t.quantity_limit <= 6 for c in s.campaigns for t in c.tiers)


def test_launch_and_pledge_bodies_are_what_the_api_accepts() -> None:
    s = generate(2, "r", campaigns=5, duration=60, rate=10)
    for plan in s.campaigns:
        LaunchRequest.model_validate_json(orjson.dumps(plan.launch_body("2099-01-01T00:00:00Z")))
    for pledge in s.pledges:
        PledgeRequest.model_validate_json(orjson.dumps(pledge.body()))


def test_invalid_requests_are_invalid_in_the_way_they_say() -> None:
    s = generate(4, "r", campaigns=5, duration=300, rate=20)
    invalid = [a for a in s.actions if isinstance(a, InvalidAction)]
    assert 0.02 < len(invalid) / len(s.actions) < 0.07
    assert {a.expect for a in invalid} == {"invalid", "not_found", "refused"}
    for action in invalid:
        if action.expect == "invalid":
            with pytest.raises(ValueError):
                PledgeRequest.model_validate_json(orjson.dumps(action.body))
        else:
            PledgeRequest.model_validate_json(orjson.dumps(action.body))


def test_arrivals_surge_at_launch_and_near_the_deadline() -> None:
    s = generate(7, "r", campaigns=1, duration=100, rate=50)
    deadline = s.campaigns[0].deadline_after
    fifths = Counter(min(4, int(a.at / deadline * 5)) for a in s.actions)
    assert fifths[0] > 1.5 * fifths[2] and fifths[4] > 1.5 * fifths[2], fifths
    assert all(a.at < deadline for a in s.actions)


def test_failing_cards_retries_and_cancellations_are_a_share_of_pledges() -> None:
    s = generate(8, "r", campaigns=8, duration=300, rate=20)
    pledges = s.pledges
    tokens = Counter(p.payment_token for p in pledges)
    assert 0.01 < tokens["tok_declined"] / len(pledges) < 0.06
    assert 0.01 < tokens["tok_fail_once"] / len(pledges) < 0.06
    assert sum(p.retries for p in pledges) == pytest.approx(len(pledges) / 20, abs=1)
    cancels = [a for a in s.actions if isinstance(a, CancelAction)]
    by_id = {p.pledge_id: p for p in pledges}
    assert cancels and all(by_id[c.pledge_id].at < c.at for c in cancels)


def test_goals_put_all_or_nothing_campaigns_on_both_sides_of_what_they_receive() -> None:
    s = generate(9, "r", campaigns=5, duration=60, rate=20)
    received = Counter[str]()
    for p in s.pledges:
        received[p.campaign_id] += p.amount_minor
    aon = [c for c in s.campaigns if c.funding_model == "all_or_nothing"]
    assert any(c.goal_minor < received[c.campaign_id] for c in aon)
    assert any(c.goal_minor > received[c.campaign_id] for c in aon)


def test_keys_and_ids_are_unique() -> None:
    s = generate(10, "r", campaigns=5, duration=120, rate=20)
    keys = [a.idempotency_key for a in s.actions]
    assert len(keys) == len(set(keys))
    ids = [a.pledge_id for a in s.actions if isinstance(a, PledgeAction)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("bad", [{"campaigns": 0}, {"duration": 0}, {"rate": -1}])
def test_nonsense_sizes_are_refused(bad: dict[str, float]) -> None:
    args: dict[str, float] = {"campaigns": 2, "duration": 10, "rate": 1, **bad}
    with pytest.raises(ValueError):
        generate(1, "r", **args)  # type: ignore[arg-type]


def test_every_sixth_campaign_is_called_off_before_its_deadline() -> None:
    s = generate(11, "r", campaigns=12, duration=60, rate=10)
    closes = [a for a in s.actions if isinstance(a, CloseAction)]
    deadlines = {c.campaign_id: c.deadline_after for c in s.campaigns}
    assert [c.campaign_id for c in closes] == ["r-c5", "r-c11"]
    assert all(0 < c.at < deadlines[c.campaign_id] for c in closes)
    assert {c.reason for c in closes} == {"creator_cancelled"}
