"""The seq orderer: items come out per (campaign, stream) in seq order, whatever the arrival."""

from __future__ import annotations

import random

import pytest

from services.streams import Pushed, SeqOrderer

A = ("c-1", "campaign")
B = ("c-2", "campaign")


def test_an_item_in_order_is_released_at_once() -> None:
    orderer: SeqOrderer[tuple[str, str], str] = SeqOrderer()
    assert orderer.push(A, 1, "a1") == (Pushed.RELEASED, ["a1"])
    assert orderer.push(A, 2, "a2") == (Pushed.RELEASED, ["a2"])
    assert orderer.last(A) == 2
    assert orderer.expected(A) == 3


def test_an_item_ahead_waits_until_its_predecessor_arrives() -> None:
    orderer: SeqOrderer[tuple[str, str], str] = SeqOrderer()
    assert orderer.push(A, 3, "a3") == (Pushed.HELD, [])
    assert orderer.push(A, 2, "a2") == (Pushed.HELD, [])
    assert orderer.held == 2
    assert orderer.push(A, 1, "a1") == (Pushed.RELEASED, ["a1", "a2", "a3"])
    assert orderer.held == 0
    assert orderer.held_keys() == []


def test_keys_are_independent() -> None:
    orderer: SeqOrderer[tuple[str, str], str] = SeqOrderer()
    orderer.push(A, 2, "a2")
    assert orderer.push(B, 1, "b1") == (Pushed.RELEASED, ["b1"])
    assert orderer.held_keys() == [A]
    same_campaign_other_stream = ("c-1", "settlement")
    assert orderer.push(same_campaign_other_stream, 1, "s1") == (Pushed.RELEASED, ["s1"])


def test_a_redelivery_at_or_below_the_last_applied_seq_is_stale() -> None:
    orderer: SeqOrderer[tuple[str, str], str] = SeqOrderer()
    orderer.push(A, 1, "a1")
    assert orderer.push(A, 1, "a1 again") == (Pushed.STALE, [])


def test_the_same_seq_held_twice_is_a_duplicate() -> None:
    orderer: SeqOrderer[tuple[str, str], str] = SeqOrderer()
    orderer.push(A, 3, "a3")
    assert orderer.push(A, 3, "a3 again") == (Pushed.DUPLICATE, [])
    assert orderer.held == 1


def test_seeding_skips_what_a_snapshot_covers_and_releases_what_follows() -> None:
    orderer: SeqOrderer[tuple[str, str], str] = SeqOrderer()
    orderer.push(A, 5, "a5")
    orderer.push(A, 3, "a3")
    assert orderer.seed(A, 4) == ["a5"]
    assert orderer.held == 0
    assert orderer.push(A, 4, "a4") == (Pushed.STALE, [])
    assert orderer.knows(A)
    assert not orderer.knows(B)


def test_gaps_name_the_missing_seq() -> None:
    orderer: SeqOrderer[tuple[str, str], str] = SeqOrderer()
    orderer.push(A, 1, "a1")
    orderer.push(A, 4, "a4")
    orderer.push(A, 3, "a3")
    [gap] = orderer.gaps()
    assert (gap.key, gap.expected, gap.first_held, gap.held) == (A, 2, 3, 2)


def test_take_lowest_gives_up_on_a_gap() -> None:
    orderer: SeqOrderer[tuple[str, str], str] = SeqOrderer()
    orderer.push(A, 3, "a3")
    orderer.push(A, 4, "a4")
    assert orderer.take_lowest(A) == (3, "a3")
    assert orderer.last(A) == 3
    assert orderer.push(A, 5, "a5") == (Pushed.HELD, [])
    assert orderer.take_lowest(B) is None


def test_the_bound_says_full_and_the_hook_sees_every_change() -> None:
    seen: list[int] = []
    orderer: SeqOrderer[tuple[str, str], str] = SeqOrderer(limit=2, on_held=seen.append)
    orderer.push(A, 2, "a2")
    assert not orderer.full
    orderer.push(A, 3, "a3")
    assert orderer.full
    orderer.push(A, 1, "a1")
    assert not orderer.full
    assert seen == [1, 2, 0]


def test_forget_drops_the_keys_of_a_revoked_partition() -> None:
    orderer: SeqOrderer[tuple[str, str], str] = SeqOrderer()
    orderer.push(A, 1, "a1")
    orderer.push(B, 2, "b2")
    orderer.forget(lambda key: key != B)
    assert orderer.held == 0
    assert orderer.knows(A) and not orderer.knows(B)


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        SeqOrderer(limit=0)


@pytest.mark.parametrize("seed", range(20))
def test_any_arrival_order_comes_out_in_seq_order_per_key(seed: int) -> None:
    rng = random.Random(seed)
    items = [(key, seq) for key in (A, B) for seq in range(1, 30)]
    # a redelivery of a few items
    items += rng.sample(items, 5)
    rng.shuffle(items)
    orderer: SeqOrderer[tuple[str, str], tuple[tuple[str, str], int]] = SeqOrderer()
    out: list[tuple[tuple[str, str], int]] = []
    for key, seq in items:
        out.extend(orderer.push(key, seq, (key, seq))[1])
    for key in (A, B):
        assert [seq for k, seq in out if k == key] == list(range(1, 30))
    assert orderer.held == 0


def test_hold_and_pop_serve_a_caller_that_tracks_heads_itself() -> None:
    orderer: SeqOrderer[tuple[str, str], str] = SeqOrderer()
    assert orderer.hold(A, 5, "a5") is Pushed.HELD
    assert orderer.hold(A, 5, "a5 again") is Pushed.DUPLICATE
    assert orderer.is_holding(A)
    assert orderer.pop(A, 4) is None
    assert orderer.pop(A, 5) == "a5"
    assert not orderer.is_holding(A)
    assert orderer.held == 0


def test_forget_idle_keeps_keys_with_held_items() -> None:
    orderer: SeqOrderer[tuple[str, str], str] = SeqOrderer()
    orderer.push(A, 1, "a1")
    orderer.push(B, 3, "b3")
    assert orderer.known == 1
    assert orderer.forget_idle() == 1
    assert not orderer.knows(A)
    assert orderer.knows(B) and orderer.held == 1
