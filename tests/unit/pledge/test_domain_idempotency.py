"""A command or a pledge id seen before yields no new event."""

from __future__ import annotations

from datetime import timedelta

import orjson

from schemas.events import PledgeRejected, RejectionReason
from services.pledge.domain import DEDUP_HORIZON, CampaignState, decide
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


# --- a command id reused for another request (the API's idempotency record was lost) ------------

FP_1, FP_2 = "a1" * 32, "b2" * 32


def test_a_command_id_reused_for_another_pledge_is_refused_as_idempotency_key_reused(
    launched: Campaign,
) -> None:
    launched.given(pledge("p1", 5_000, command_id="k-1", fingerprint=FP_1))

    events = launched.when(pledge("p2", 7_000, command_id="k-1", fingerprint=FP_2))

    assert types(events) == ["PledgeRejected"]
    refused = events[0].payload
    assert isinstance(refused, PledgeRejected)
    assert (refused.pledge_id, refused.reason) == ("p2", RejectionReason.IDEMPOTENCY_KEY_REUSED)
    assert "k-1" in refused.detail
    # Its own causation id: event ids stay unique, and a redelivery is recognised.
    assert events[0].causation_id != "k-1"
    assert events[0].event_id != launched.log[1].event_id
    assert launched.state.pledge_count == 1


def test_a_redelivered_reused_command_is_refused_once(launched: Campaign) -> None:
    launched.given(pledge("p1", 5_000, command_id="k-1", fingerprint=FP_1))
    reused = pledge("p2", 7_000, command_id="k-1", fingerprint=FP_2)
    launched.given(reused)

    assert launched.when(reused) == []


def test_the_refused_reuse_does_not_burn_its_pledge_id(launched: Campaign) -> None:
    launched.given(
        pledge("p1", 5_000, command_id="k-1", fingerprint=FP_1),
        pledge("p2", 7_000, command_id="k-1", fingerprint=FP_2),
    )

    assert types(launched.when(pledge("p2", 7_000, command_id="k-2"))) == ["PledgeMade"]


def test_a_command_id_of_a_launch_reused_for_a_pledge_is_refused(campaign: Campaign) -> None:
    campaign.given(launch(command_id="k-1"))

    events = campaign.when(pledge("p1", 5_000, command_id="k-1", fingerprint=FP_2))

    assert types(events) == ["PledgeRejected"]
    assert events[0].payload.reason == RejectionReason.IDEMPOTENCY_KEY_REUSED  # type: ignore[union-attr]


def test_a_retry_of_the_same_pledge_is_still_a_silent_duplicate(launched: Campaign) -> None:
    launched.given(pledge("p1", 5_000, command_id="k-1", fingerprint=FP_1))

    assert launched.when(pledge("p1", 5_000, command_id="k-1", fingerprint=FP_1)) == []


def test_a_retry_of_a_pledge_refused_for_another_tenant_stays_a_duplicate(
    launched: Campaign,
) -> None:
    launched.given(pledge("p1", 5_000, command_id="k-1", tenant_id="tenant-b"))

    assert launched.when(pledge("p1", 5_000, command_id="k-1", tenant_id="tenant-b")) == []


def test_the_reuse_check_survives_a_snapshot(launched: Campaign) -> None:
    launched.given(pledge("p1", 5_000, command_id="k-1", fingerprint=FP_1))
    restored = CampaignState.from_snapshot(orjson.loads(orjson.dumps(launched.state.to_snapshot())))

    events = decide(restored, pledge("p2", 7_000, command_id="k-1", fingerprint=FP_2), T0)

    assert types(events) == ["PledgeRejected"]


def test_a_reused_command_id_is_forgotten_with_the_command_id(launched: Campaign) -> None:
    launched.given(pledge("p1", 5_000, command_id="k-1", fingerprint=FP_1))
    later = T0 + DEDUP_HORIZON + timedelta(minutes=1)
    launched.given(pledge("p2", 1_000), at=later)  # an event past the horizon prunes

    assert "k-1" not in launched.state.pledge_commands
    restored = CampaignState.from_snapshot(orjson.loads(orjson.dumps(launched.state.to_snapshot())))
    assert restored.pledge_commands == launched.state.pledge_commands
