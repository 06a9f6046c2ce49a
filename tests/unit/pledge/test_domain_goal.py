"""GoalReached: exactly once, right after the pledge that first takes the total to the goal."""

from __future__ import annotations

from schemas.events import GoalReached
from tests.unit.pledge.conftest import T0, Campaign, cancel, eur, pledge, types


def goal_events(campaign: Campaign) -> list[GoalReached]:
    return [e.payload for e in campaign.log if isinstance(e.payload, GoalReached)]


def test_pledge_reaching_the_goal_exactly_is_followed_by_goal_reached(launched: Campaign) -> None:
    launched.given(pledge("p1", 40_000))

    events = launched.when(pledge("p2", 60_000))

    assert types(events) == ["PledgeMade", "GoalReached"]
    reached = events[1].payload
    assert isinstance(reached, GoalReached)
    assert (reached.total, reached.pledge_count) == (eur(100_000), 2)
    assert [e.seq for e in events] == [3, 4]
    assert events[1].prev_hash == events[0].hash
    assert [e.causation_id for e in events] == [events[0].causation_id] * 2
    assert events[0].event_id != events[1].event_id
    assert launched.state.goal_reached_at == T0


def test_pledge_crossing_the_goal_reports_the_new_total(launched: Campaign) -> None:
    events = launched.when(pledge("p1", 150_000))

    assert types(events) == ["PledgeMade", "GoalReached"]
    reached = events[1].payload
    assert isinstance(reached, GoalReached)
    assert reached.total == eur(150_000)


def test_pledge_below_the_goal_emits_no_goal_reached(launched: Campaign) -> None:
    assert types(launched.when(pledge("p1", 99_999))) == ["PledgeMade"]


def test_pledges_after_the_goal_emit_no_second_goal_reached(launched: Campaign) -> None:
    launched.given(pledge("p1", 100_000))

    assert types(launched.when(pledge("p2", 5_000))) == ["PledgeMade"]
    assert len(goal_events(launched)) == 1


def test_goal_reached_is_not_emitted_again_after_total_drops_and_rises(launched: Campaign) -> None:
    launched.given(pledge("p1", 100_000), cancel("p1"))
    assert launched.state.total_minor == 0

    events = launched.when(pledge("p2", 120_000))

    assert types(events) == ["PledgeMade"]
    assert len(goal_events(launched)) == 1


def test_refused_pledge_never_emits_goal_reached(launched: Campaign) -> None:
    events = launched.when(pledge("p1", 100_000, "unknown-tier"))

    assert types(events) == ["PledgeRejected"]
    assert goal_events(launched) == []
