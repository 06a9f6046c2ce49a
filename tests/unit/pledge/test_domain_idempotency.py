"""A command or a pledge id seen before yields no new event."""

from __future__ import annotations

from datetime import timedelta

import orjson

from services.pledge.domain import DEDUP_HORIZON, CampaignState
from tests.unit.pledge.conftest import T0, Campaign, cancel, close, launch, pledge, types


def test_redelivered_pledge_command_yields_no_event(launched: Campaign) -> None:
    command = pledge("p1", 5_000)
    launched.given(command)

    assert launched.when(command) == []
    assert launched.state.pledge_count == 1


def test_same_pledge_id_under_a_new_command_yields_no_event(launched: Campaign) -> None:
    launched.given(pledge("p1", 5_000))

    assert launched.when(pledge("p1", 9_000)) == []
    assert launched.state.total_minor == 5_000


def test_refused_pledge_id_is_final(launched: Campaign) -> None:
    launched.given(pledge("p1", 10, "std"))  # below minimum

    assert launched.when(pledge("p1", 5_000, "std")) == []


def test_pledge_id_refused_for_unknown_campaign_stays_refused_after_launch(
    campaign: Campaign,
) -> None:
    campaign.given(pledge("p1", 5_000), launch())

    assert campaign.when(pledge("p1", 5_000)) == []


def test_cancelled_pledge_id_cannot_be_pledged_again(launched: Campaign) -> None:
    launched.given(pledge("p1", 5_000), cancel("p1"))

    assert launched.when(pledge("p1", 5_000)) == []


def test_redelivered_cancel_yields_no_second_event(launched: Campaign) -> None:
    command = cancel("p1")
    launched.given(pledge("p1", 5_000), command)

    assert launched.when(command) == []


def test_redelivered_refused_cancel_yields_no_second_refusal(launched: Campaign) -> None:
    command = cancel("ghost")
    launched.given(command)

    assert launched.when(command) == []


def test_redelivered_close_yields_no_event(launched: Campaign) -> None:
    command = close("creator_cancelled")
    launched.given(command)

    assert launched.when(command) == []


def test_redelivered_launch_refusal_yields_no_second_refusal(launched: Campaign) -> None:
    command = launch()
    launched.given(command)

    assert launched.when(command) == []


def test_duplicate_after_other_events_yields_nothing_and_later_commands_still_work(
    launched: Campaign,
) -> None:
    first = pledge("p1", 5_000)
    launched.given(first, pledge("p2", 5_000))

    assert launched.when(first) == []
    assert types(launched.when(pledge("p3", 5_000))) == ["PledgeMade"]


def test_a_command_id_is_forgotten_after_the_horizon_without_a_second_effect(
    launched: Campaign,
) -> None:
    command = pledge("p1", 5_000)
    launched.given(command)
    later = T0 + DEDUP_HORIZON + timedelta(minutes=1)
    launched.given(pledge("p2", 1_000), at=later)  # an event past the horizon prunes

    assert command.command_id not in launched.state.processed
    assert launched.when(command, at=later) == []  # the pledge id still guards it
    assert launched.state.pledge_count == 2


def test_a_command_id_within_the_horizon_is_remembered(launched: Campaign) -> None:
    command = cancel("ghost")
    launched.given(command)
    launched.given(pledge("p2", 1_000), at=T0 + DEDUP_HORIZON - timedelta(minutes=1))

    assert launched.when(command, at=T0 + DEDUP_HORIZON) == []


def test_the_remembered_command_ids_survive_a_snapshot_exactly(launched: Campaign) -> None:
    launched.given(pledge("p1", 5_000), at=T0 + timedelta(microseconds=7))
    state = launched.state
    restored = CampaignState.from_snapshot(orjson.loads(orjson.dumps(state.to_snapshot())))

    assert restored.processed == state.processed
    assert list(restored.processed) == list(state.processed)
