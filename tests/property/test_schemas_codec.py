"""Any sequence of envelopes survives encode -> decode unchanged and its chains verify."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    GENESIS_HASH,
    CampaignClosed,
    CampaignLaunched,
    Envelope,
    Event,
    GoalReached,
    Money,
    NotificationSent,
    PledgeCancelled,
    PledgeCaptureFailed,
    PledgeMade,
    PledgeRejected,
    RejectionReason,
    Tier,
    decode,
    decode_raw,
    encode,
    stamp,
    verify_chain,
    verify_chain_raw,
)

ids = st.text(min_size=1, max_size=24)  # any unicode, incl. quotes and backslashes
codes = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
currencies = st.sampled_from(["EUR", "JPY", "KWD", "GBP", "SEK"])
money = st.builds(Money, amount_minor=st.integers(-(10**12), 10**12), currency=currencies)
positive_money = st.builds(Money, amount_minor=st.integers(1, 10**12), currency=currencies)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=offsets
)

events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        PledgeMade, pledge_id=ids, backer_id=ids, amount=money,
        tier_id=st.none() | ids, payment_token=st.none() | ids, locale=st.none() | ids,
    ),
    st.builds(
        PledgeRejected, pledge_id=ids, backer_id=ids, amount=money,
        reason=st.sampled_from(RejectionReason), detail=st.text(max_size=50),
    ),
    st.builds(PledgeCancelled, pledge_id=ids, amount=money, tier_id=st.none() | ids, reason=codes),
    st.builds(GoalReached, total=money, pledge_count=st.integers(0, 10**6)),
    st.builds(
        CampaignClosed, outcome=st.sampled_from(["funded", "failed", "cancelled"]),
        reason=st.sampled_from(["deadline", "creator_cancelled", "platform_suspended"]),
        total=money, accepted_pledges=st.integers(0, 10**6), last_seq=st.integers(1, 10**9),
    ),
    st.builds(
        CampaignLaunched, tenant_id=ids, creator_id=ids, title=ids, goal=positive_money,
        deadline=instants, funding_model=st.sampled_from(["all_or_nothing", "keep_it_all"]),
        settlement_mode=st.sampled_from(["authorize_then_capture", "charge_then_refund"]),
        commission_bps=st.integers(0, 10_000),
        tiers=st.lists(
            st.builds(Tier, tier_id=ids, title=ids, min_amount_minor=st.integers(0, 10**9),
                      quantity_limit=st.none() | st.integers(1, 10**6)),
            max_size=3, unique_by=lambda t: t.tier_id,
        ),
    ),
    st.builds(
        PledgeCaptureFailed, pledge_id=ids, backer_id=ids, amount=money, reason=codes,
        attempt=st.integers(1, 10), retry_until=st.none() | instants,
    ),
    st.builds(
        NotificationSent, notification_id=ids, cause_event_id=st.uuids(),
        channel=st.sampled_from(["webhook", "email"]),
        recipient_kind=st.sampled_from(["backer", "creator", "platform"]), recipient=ids,
        template=codes,
    ),
)  # fmt: skip


@st.composite
def envelope_logs(draw: st.DrawFn) -> list[Envelope]:
    """A log of several campaigns' chains, interleaved, each correctly linked."""
    campaigns = draw(st.lists(ids, min_size=1, max_size=3, unique=True))
    heads: dict[tuple[str, str], tuple[int, str]] = {}
    log = []
    for event in draw(st.lists(events, max_size=12)):
        campaign_id = draw(st.sampled_from(campaigns))
        seq, prev = heads.get((campaign_id, event.stream), (0, GENESIS_HASH))
        envelope = stamp(
            event, campaign_id=campaign_id, seq=seq + 1, prev_hash=prev,
            occurred_at=draw(instants), causation_id=draw(ids), correlation_id=draw(ids),
            index=draw(st.integers(0, 20)),
        )  # fmt: skip
        heads[(campaign_id, event.stream)] = (seq + 1, envelope.hash)
        log.append(envelope)
    return log


@settings(max_examples=200, deadline=None)
@given(envelope_logs())
def test_any_log_survives_encode_decode_unchanged(log: list[Envelope]) -> None:
    lines = [encode(envelope) for envelope in log]
    decoded = [decode(line) for line in lines]
    assert decoded == log
    assert [encode(envelope) for envelope in decoded] == lines


@settings(max_examples=200, deadline=None)
@given(envelope_logs())
def test_any_stamped_log_verifies_in_every_form(log: list[Envelope]) -> None:
    assert verify_chain(log) is None
    assert verify_chain_raw([encode(envelope) for envelope in log]) is None


@settings(max_examples=100, deadline=None)
@given(envelope_logs().filter(bool), st.data())
def test_any_single_flipped_byte_after_the_hash_is_detected(
    log: list[Envelope], data: st.DataObject
) -> None:
    lines = [encode(envelope) for envelope in log]
    index = data.draw(st.integers(0, len(lines) - 1))
    line = lines[index]
    start = line.index(b'"payload":')
    position = data.draw(st.integers(start, len(line) - 1))
    replacement = data.draw(st.integers(0x20, 0x7E).filter(lambda b: b != line[position]))
    lines[index] = line[:position] + bytes([replacement]) + line[position + 1 :]
    broken = verify_chain_raw(lines)
    if broken is None:
        # Only a spelling of the same JSON can pass (e.g. "\u001f" -> "\u001F"): same content.
        assert decode_raw(lines[index]) == decode_raw(line)
    else:
        assert broken.index == index


@given(instants)
def test_timestamps_are_utc_z_with_microseconds(instant: datetime) -> None:
    envelope = stamp(
        GoalReached(total=Money(amount_minor=1, currency="EUR"), pledge_count=1),
        campaign_id="c", seq=1, occurred_at=instant, causation_id="x", correlation_id="y",
        index=0,
    )  # fmt: skip
    text = encode(envelope).split(b'"occurred_at":"')[1].split(b'"')[0].decode()
    assert len(text) == 27 and text.endswith("Z")
    assert datetime.fromisoformat(text) == instant.astimezone(UTC)
