"""State mechanics: stamping, purity of decide, evolve's guards, replay and snapshots."""

from __future__ import annotations

import copy
from datetime import timedelta

import orjson
import pytest

from schemas.canonical import dumps
from schemas.codec import decode, encode, verify_chain
from schemas.envelope import event_id_for
from services.pledge.domain import (
    CampaignState,
    OutOfOrderEvent,
    decide,
    decide_with_bodies,
    evolve,
    replay,
)
from tests.unit.pledge.conftest import (
    CAMPAIGN,
    T0,
    Campaign,
    cancel,
    close,
    launch,
    pledge,
)


@pytest.fixture
def busy() -> Campaign:
    """A campaign with every kind of campaign event in its log."""
    return Campaign().given(
        pledge("before-launch", 1_000),
        launch(),
        pledge("p1", 2_000, "early"),
        pledge("p2", 2_000, "early"),
        pledge("p3", 2_000, "early"),  # sold out
        pledge("p4", 99_000, "std"),  # goal
        cancel("p1"),
        pledge("p5", 2_000, "early", tenant_id="tenant-b"),
        pledge("p6", 2_000, "early"),
        close("creator_cancelled"),
    )


def test_event_ids_are_uuid5_of_stream_command_and_index(launched: Campaign) -> None:
    command = pledge("p1", 100_000)

    events = decide(launched.state, command, T0)

    assert [e.event_id for e in events] == [
        event_id_for("campaign", command.command_id, 0),
        event_id_for("campaign", command.command_id, 1),
    ]


def test_decide_is_deterministic(launched: Campaign) -> None:
    command = pledge("p1", 100_000)

    assert decide(launched.state, command, T0) == decide(launched.state, command, T0)


def test_decide_does_not_change_the_state(busy: Campaign) -> None:
    before = copy.deepcopy(busy.state.to_snapshot())

    for command in (launch(), pledge("new", 5_000), cancel("p2"), close("platform_suspended")):
        decide(busy.state, command, T0)

    assert busy.state.to_snapshot() == before


def test_decide_refuses_a_command_for_another_campaign(launched: Campaign) -> None:
    with pytest.raises(ValueError, match="campaign"):
        decide(launched.state, pledge("p1", 5_000, campaign_id="other"), T0)


def test_decide_with_bodies_returns_the_canonical_bytes_of_each_envelope(
    launched: Campaign,
) -> None:
    pairs = decide_with_bodies(launched.state, pledge("p1", 100_000), T0)

    assert len(pairs) == 2
    for envelope, body in pairs:
        assert dumps(body) == encode(envelope)


def test_every_logged_event_round_trips_through_the_codec(busy: Campaign) -> None:
    for envelope in busy.log:
        assert decode(encode(envelope)) == envelope


def test_log_is_gapless_and_its_hash_chain_verifies(busy: Campaign) -> None:
    assert [e.seq for e in busy.log] == list(range(1, len(busy.log) + 1))
    assert verify_chain(busy.log) is None
    assert busy.state.seq == len(busy.log)
    assert busy.state.last_hash == busy.log[-1].hash


def test_replay_of_the_log_equals_the_live_state(busy: Campaign) -> None:
    assert replay(CAMPAIGN, busy.log) == busy.state


def test_snapshot_round_trips_through_json(busy: Campaign) -> None:
    data = orjson.loads(orjson.dumps(busy.state.to_snapshot()))

    restored = CampaignState.from_snapshot(data)

    assert restored == busy.state
    assert restored.to_snapshot() == busy.state.to_snapshot()


def test_snapshot_of_an_open_campaign_decides_like_the_original(launched: Campaign) -> None:
    launched.given(pledge("p1", 2_000, "early"), pledge("p2", 99_000))
    restored = CampaignState.from_snapshot(orjson.loads(orjson.dumps(launched.state.to_snapshot())))
    command = pledge("p3", 2_000, "early")

    assert decide(restored, command, T0) == decide(launched.state, command, T0)


def test_empty_state_snapshot_round_trips() -> None:
    state = CampaignState.empty(CAMPAIGN)

    assert CampaignState.from_snapshot(orjson.loads(orjson.dumps(state.to_snapshot()))) == state


def test_snapshot_holds_only_json_scalars_and_no_floats(busy: Campaign) -> None:
    def leaves(value: object) -> list[object]:
        if isinstance(value, dict):
            assert all(isinstance(k, str) for k in value)
            return [leaf for v in value.values() for leaf in leaves(v)]
        if isinstance(value, list):
            return [leaf for v in value for leaf in leaves(v)]
        return [value]

    found = {type(leaf) for leaf in leaves(busy.state.to_snapshot())}

    assert found <= {str, int, bool, type(None)}


def test_evolve_ignores_an_event_already_applied(busy: Campaign) -> None:
    before = busy.state.to_snapshot()

    evolve(busy.state, busy.log[3])

    assert busy.state.to_snapshot() == before


def test_evolve_refuses_a_gap(launched: Campaign) -> None:
    events = decide(launched.state, pledge("p1", 100_000), T0)  # seq 2 and 3

    with pytest.raises(OutOfOrderEvent):
        evolve(launched.state, events[1])


def test_evolve_refuses_an_event_that_does_not_chain(launched: Campaign) -> None:
    other = Campaign().given(launch(title="Other"), at=T0 + timedelta(seconds=1))
    (foreign,) = decide(other.state, pledge("p1", 5_000), T0)

    with pytest.raises(OutOfOrderEvent):
        evolve(launched.state, foreign)


def test_evolve_refuses_an_event_of_another_campaign() -> None:
    source = Campaign().given(launch())

    with pytest.raises(OutOfOrderEvent):
        evolve(CampaignState.empty("someone-else"), source.log[0])


def test_replay_resumes_from_a_snapshot_with_overlapping_events(busy: Campaign) -> None:
    middle = replay(CAMPAIGN, busy.log[:5])
    resumed = CampaignState.from_snapshot(orjson.loads(orjson.dumps(middle.to_snapshot())))

    for envelope in busy.log[2:]:  # overlaps the snapshot by three events
        evolve(resumed, envelope)

    assert resumed == busy.state
