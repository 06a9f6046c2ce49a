"""How ``audit --from-kafka`` shares partitions between worker processes."""

from __future__ import annotations

from services.audit.sources import balance


def test_balance_spreads_heavy_partitions_over_workers() -> None:
    # Partitions 0 and 2 hold the events: a round-robin split ([0, 2, 4], [1, 3, 5]) would
    # give both to one worker.
    groups = balance({0: 175, 1: 0, 2: 126, 3: 0, 4: 0, 5: 0}, 2)
    assert sorted(p for g in groups for p in g) == [0, 1, 2, 3, 4, 5]
    assert len(groups) == 2
    assert not any({0, 2} <= set(g) for g in groups)


def test_balance_never_makes_more_groups_than_partitions_or_workers() -> None:
    assert balance({3: 10}, 4) == [[3]]
    assert balance({}, 2) == []
    groups = balance({p: 10 for p in range(6)}, 4)
    assert len(groups) == 4 and sorted(len(g) for g in groups) == [1, 1, 2, 2]
