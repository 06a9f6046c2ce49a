"""Properties of the pledge domain over random command sequences.

A random campaign (launch, then pledges, cancellations, closes, duplicates and the deadline
timer over a few small-limit tiers, with a clock that jumps forward) is run live - decide, then
evolve each new event - and the log it writes must replay to the same state and satisfy the
invariants auditors check: gapless seq, intact hash chain, totals equal to the events, no tier
over its limit, at most one GoalReached, every envelope round-trips through the codec.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas.codec import decode, encode, verify_chain
from schemas.commands import CancelPledge, CloseCampaign, LaunchCampaign, MakePledge
from schemas.envelope import Envelope, event_id_for
from schemas.events import (
    CampaignClosed,
    CampaignLaunched,
    GoalReached,
    PledgeCancelled,
    PledgeMade,
    PledgeRejected,
    Tier,
)
from schemas.money import Money
from services.pledge.domain import (
    CampaignState,
    Command,
    Policy,
    deadline_close,
    decide,
    evolve,
    replay,
)

CAMPAIGN = "prop-campaign"
TENANT = "tenant-a"
T0 = datetime(2026, 5, 1, tzinfo=UTC)
TIER_IDS = ("a", "b", "c")

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class World:
    """Builds valid commands with fresh command ids."""

    numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def fields(self, tenant: str = TENANT) -> dict[str, Any]:
        n = next(self.numbers)
        return {
            "command_id": f"cmd-{n}",
            "tenant_id": tenant,
            "correlation_id": f"corr-{n}",
            "issued_at": T0,
            "campaign_id": CAMPAIGN,
        }


launch_terms = st.fixed_dictionaries(
    {
        "goal": st.integers(min_value=1, max_value=20_000),
        # Mostly a few days ahead; sometimes already past (a refused launch).
        "deadline_hours": st.integers(-1, 96),
        "funding_model": st.sampled_from(["all_or_nothing", "keep_it_all"]),
        "limits": st.tuples(*[st.none() | st.integers(1, 3) for _ in TIER_IDS]),
        "minimums": st.tuples(*[st.integers(0, 2_500) for _ in TIER_IDS]),
    }
)

pledge_step = st.tuples(
    st.just("pledge"),
    st.integers(0, 7),  # pledge id (small pool: collisions happen)
    st.sampled_from([0, -5, *[1, 500, 1_000, 2_500, 4_000, 9_000] * 3]),
    st.sampled_from([None, *TIER_IDS, *TIER_IDS, "zzz"]),
    st.sampled_from(["ok"] * 8 + ["usd", "tenant"]),
)
cancel_step = st.tuples(
    st.just("cancel"), st.integers(0, 7), st.sampled_from(["ok"] * 5 + ["tenant"])
)
STEP_KINDS = {
    "pledge": pledge_step,
    "cancel": cancel_step,
    "close": st.tuples(
        st.just("close"), st.sampled_from(["deadline", "creator_cancelled", "platform_suspended"])
    ),
    "tick": st.tuples(st.just("tick"), st.integers(0, 3_600) | st.integers(0, 30 * 3_600)),
    "timer": st.tuples(st.just("timer")),
    "relaunch": st.tuples(st.just("relaunch")),
    "redeliver": st.tuples(st.just("redeliver"), st.integers(0, 1_000)),
}
#: Weighted mix: mostly pledges, some cancellations and clock ticks, few closes.
STEP_WEIGHTS = (
    ["pledge"] * 10 + ["cancel"] * 4 + ["tick"] * 3 + ["redeliver"] * 2 + ["close", "timer"]
    + ["relaunch"]
)  # fmt: skip
steps = st.sampled_from(STEP_WEIGHTS).flatmap(STEP_KINDS.__getitem__)
scripts = st.lists(steps, min_size=3, max_size=40)


def make_launch(world: World, terms: dict[str, Any]) -> LaunchCampaign:
    tiers = tuple(
        Tier(tier_id=tid, title=tid.upper(), min_amount_minor=minimum, quantity_limit=limit)
        for tid, minimum, limit in zip(TIER_IDS, terms["minimums"], terms["limits"], strict=True)
    )
    return LaunchCampaign(
        **world.fields(),
        creator_id="creator",
        title="Property campaign",
        goal=Money(amount_minor=terms["goal"], currency="EUR"),
        deadline=T0 + timedelta(hours=terms["deadline_hours"]),
        funding_model=terms["funding_model"],
        settlement_mode="charge_then_refund",
        commission_bps=500,
        tiers=tiers,
    )


def make_command(world: World, step: tuple[Any, ...], terms: dict[str, Any]) -> Command | None:
    kind = step[0]
    if kind == "pledge":
        _, pid, minor, tier, variant = step
        return MakePledge(
            **world.fields("tenant-b" if variant == "tenant" else TENANT),
            pledge_id=f"p{pid}",
            backer_id=f"backer-{pid}",
            amount=Money(amount_minor=minor, currency="USD" if variant == "usd" else "EUR"),
            tier_id=tier,
        )
    if kind == "cancel":
        _, pid, variant = step
        return CancelPledge(
            **world.fields("tenant-b" if variant == "tenant" else TENANT), pledge_id=f"p{pid}"
        )
    if kind == "close":
        return CloseCampaign(**world.fields(), reason=step[1])
    if kind == "relaunch":
        return make_launch(world, terms)
    return None


@dataclass
class Run:
    """The live processor's view: state folded as decisions happen, and the log written."""

    policy: Policy
    state: CampaignState = field(default_factory=lambda: CampaignState.empty(CAMPAIGN))
    log: list[Envelope] = field(default_factory=list)
    sent: list[Command] = field(default_factory=list)

    def apply(self, events: list[Envelope]) -> list[Envelope]:
        for envelope in events:
            evolve(self.state, envelope)
            self.log.append(envelope)
        return events

    def command(self, command: Command, now: datetime) -> list[Envelope]:
        before = self.state.to_snapshot()
        events = decide(self.state, command, now, self.policy)
        assert self.state.to_snapshot() == before, "decide must not change the state"
        self.sent.append(command)
        return self.apply(events)


def run_campaign(
    terms: dict[str, Any], script: list[tuple[Any, ...]], policy: Policy
) -> tuple[Run, list[tuple[int, list[Envelope]]]]:
    world = World()
    run = Run(policy)
    now = T0
    decisions: list[tuple[int, list[Envelope]]] = []
    run.command(make_launch(world, terms), now)
    for step in script:
        if step[0] == "tick":
            now += timedelta(seconds=step[1])
            continue
        if step[0] == "timer":
            run.apply(deadline_close(run.state, now))
            continue
        if step[0] == "redeliver":
            earlier = run.sent[step[1] % len(run.sent)]
            decisions.append((-1, run.command(earlier, now)))
            continue
        command = make_command(world, step, terms)
        assert command is not None
        decisions.append((len(run.log), run.command(command, now)))
    return run, decisions


@PROPERTY_SETTINGS
@given(
    terms=launch_terms,
    script=scripts,
    late_rule=st.booleans(),
)
def test_live_state_equals_replay_and_the_log_keeps_every_invariant(
    terms: dict[str, Any], script: list[tuple[Any, ...]], late_rule: bool
) -> None:
    run, decisions = run_campaign(
        terms, script, Policy(refuse_late_cancellation_below_goal=late_rule)
    )
    log = run.log
    limits = dict(zip(TIER_IDS, terms["limits"], strict=True))

    for kind in {e.event_type for e in log} | {
        e.payload.reason.value for e in log if isinstance(e.payload, PledgeRejected)
    }:
        event(kind)  # hypothesis statistics: which paths the examples reach

    # Replay of the whole log is exactly the live state (and survives a snapshot round trip).
    replayed = replay(CAMPAIGN, log)
    assert replayed.to_snapshot() == run.state.to_snapshot()
    restored = CampaignState.from_snapshot(orjson.loads(orjson.dumps(replayed.to_snapshot())))
    assert restored == replayed

    # Gapless seq and an intact hash chain.
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert verify_chain(log) is None

    # Every envelope round-trips through the codec.
    for envelope in log:
        assert decode(encode(envelope)) == envelope

    # Totals, tiers, goal and close, recomputed from the events alone.
    total = 0
    active: dict[str, tuple[int, str | None]] = {}
    per_tier: Counter[str] = Counter()
    goal_reached = 0
    highest = 0
    made_ids: set[str] = set()
    closed_at: int | None = None
    launched: CampaignLaunched | None = None
    for position, envelope in enumerate(log):
        payload = envelope.payload
        if closed_at is not None:
            assert isinstance(payload, PledgeRejected), "only refusals after the close"
        match payload:
            case CampaignLaunched():
                assert launched is None, "launched twice"
                launched = payload
            case PledgeMade():
                assert launched is not None
                assert payload.pledge_id not in made_ids, "a pledge id accepted twice"
                made_ids.add(payload.pledge_id)
                assert payload.amount.currency == launched.goal.currency
                assert payload.amount.amount_minor > 0
                assert envelope.occurred_at < launched.deadline
                total += payload.amount.amount_minor
                highest = max(highest, total)
                active[payload.pledge_id] = (payload.amount.amount_minor, payload.tier_id)
                if payload.tier_id is not None:
                    per_tier[payload.tier_id] += 1
                    limit = limits[payload.tier_id]
                    assert limit is None or per_tier[payload.tier_id] <= limit, "oversold"
            case PledgeCancelled():
                minor, tier_id = active.pop(payload.pledge_id)
                assert (payload.amount.amount_minor, payload.tier_id) == (minor, tier_id)
                total -= minor
                if tier_id is not None:
                    per_tier[tier_id] -= 1
            case GoalReached():
                goal_reached += 1
                previous = log[position - 1].payload
                assert isinstance(previous, PledgeMade)
                assert launched is not None
                assert payload.total.amount_minor == total >= launched.goal.amount_minor
                assert total - previous.amount.amount_minor < launched.goal.amount_minor
                assert payload.pledge_count == len(active)
            case CampaignClosed():
                closed_at = envelope.seq
                assert payload.last_seq == envelope.seq
                assert payload.total.amount_minor == total
                assert payload.accepted_pledges == len(active)
            case _:
                pass
    assert goal_reached <= 1
    assert run.state.total_minor == total
    assert run.state.pledge_count == len(active)
    assert all(run.state.tier_used.get(t, 0) == n for t, n in per_tier.items())
    assert (run.state.goal_reached_at is not None) == (goal_reached == 1)
    if launched is not None and goal_reached == 0:
        assert highest < launched.goal.amount_minor, "the goal was reached without GoalReached"

    # Redelivered commands never produce events; every decision is stamped in one block.
    for start, events in decisions:
        if start < 0:
            assert events == []
            continue
        assert [e.seq for e in events] == list(range(start + 1, start + 1 + len(events)))
        for index, envelope in enumerate(events):
            assert envelope.event_id == event_id_for("campaign", envelope.causation_id, index)
            assert envelope.causation_id == events[0].causation_id


@PROPERTY_SETTINGS
@given(terms=launch_terms, script=scripts, cut=st.integers(0, 200))
def test_resuming_from_a_snapshot_anywhere_gives_the_same_state(
    terms: dict[str, Any], script: list[tuple[Any, ...]], cut: int
) -> None:
    run, _ = run_campaign(terms, script, Policy())
    cut = min(cut, len(run.log))
    snapshot = orjson.loads(orjson.dumps(replay(CAMPAIGN, run.log[:cut]).to_snapshot()))

    resumed = CampaignState.from_snapshot(snapshot)
    for envelope in run.log[max(0, cut - 2) :]:  # the overlap is ignored
        evolve(resumed, envelope)

    assert resumed == run.state
