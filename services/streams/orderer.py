"""Hold-back of a campaign's events until they are consecutive in ``seq`` (pure, no I/O).

Kafka orders records only inside one partition of one topic, and a campaign's events of
different types live on different topics, so a reader sees them interleaved: seq 5 may come
before seq 4. :class:`SeqOrderer` is the one place that puts them back in order, per
(campaign, stream): push an item with its seq, get back the run that just became consecutive
(possibly empty); anything ahead of its predecessor waits. It knows each key's last applied
seq, which a service seeds from its own state (a snapshot, a read-model row, an archive's
chain heads) so that redeliveries below it are recognised as stale.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

__all__ = ["Gap", "Pushed", "SeqOrderer", "StreamKey"]

T = TypeVar("T")

K = TypeVar("K", bound=Hashable)

#: ``(campaign_id, stream)``: one hash chain, one seq sequence (the usual key; the auditor's
#: hot loop keys chains by raw bytes instead).
StreamKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Gap(Generic[K]):
    """A key whose next expected seq never arrived while later ones did."""

    key: K
    #: The seq the key waits for (its last applied + 1).
    expected: int
    #: The lowest seq held for it.
    first_held: int
    held: int


class Pushed(Enum):
    """What :meth:`SeqOrderer.push` did with an item."""

    #: The item (and maybe held successors) became consecutive: the run is returned.
    RELEASED = "released"
    #: The item waits for its predecessor.
    HELD = "held"
    #: The item's seq is at or below the last applied one (a redelivery): dropped.
    STALE = "stale"
    #: The item's seq is already held (the same event delivered twice): dropped.
    DUPLICATE = "duplicate"


class SeqOrderer(Generic[K, T]):
    """Per (campaign, stream) hold-back: the run of items that became consecutive.

    ``limit`` bounds the items held (all keys together): :attr:`full` says when it is reached
    so that a reader stops fetching more (it never drops an item). ``on_held`` is called with
    the number of held items whenever it changes (a metric hook).
    """

    __slots__ = ("_held", "_last", "_on_held", "held", "limit")

    def __init__(
        self, *, limit: int = 100_000, on_held: Callable[[int], None] | None = None
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._last: dict[K, int] = {}
        self._held: dict[K, dict[int, T]] = {}
        #: Items waiting for a predecessor (all keys); an attribute, read on hot paths.
        self.held = 0
        self.limit = limit
        self._on_held = on_held

    # --- state ---------------------------------------------------------------------------

    def last(self, key: K) -> int:
        """The last applied seq of ``key`` (0 when nothing was)."""
        return self._last.get(key, 0)

    def expected(self, key: K) -> int:
        """The seq ``key`` needs next."""
        return self._last.get(key, 0) + 1

    def knows(self, key: K) -> bool:
        """Whether ``key`` was seeded or pushed since it was last forgotten."""
        return key in self._last or key in self._held

    def seed(self, key: K, last_seq: int) -> list[T]:
        """Set ``key``'s last applied seq (from a snapshot or stored state); returns the held
        items this makes consecutive (held items at or below it are dropped as stale)."""
        self._last[key] = last_seq
        held = self._held.get(key)
        if not held:
            return []
        before = self.held
        for seq in [s for s in held if s <= last_seq]:
            del held[seq]
            self.held -= 1
        run = self._drain(key, held, last_seq)
        self._changed(before)
        return run

    def advance(self, key: K, last_seq: int) -> None:
        """Record that ``key`` was applied up to ``last_seq`` by someone else (no release)."""
        if last_seq > self._last.get(key, 0):
            self.seed(key, last_seq)

    # --- pushing -------------------------------------------------------------------------

    def push(self, key: K, seq: int, item: T) -> tuple[Pushed, list[T]]:
        """Offer ``item`` (seq ``seq`` of ``key``); returns what happened and the run of items
        (``item`` first, then held successors) that became consecutive, in seq order."""
        last = self._last.get(key, 0)
        if seq <= last:
            return Pushed.STALE, []
        if seq > last + 1:
            return self.hold(key, seq, item), []
        held = self._held.get(key)
        if not held:
            self._last[key] = seq
            return Pushed.RELEASED, [item]
        before = self.held
        run = [item]
        run.extend(self._drain(key, held, seq))
        self._changed(before)
        return Pushed.RELEASED, run

    def hold(self, key: K, seq: int, item: T) -> Pushed:
        """Keep ``item`` for later without looking at the last applied seq (for a caller that
        tracks chain heads itself and drains with :meth:`pop`): HELD, or DUPLICATE if that
        seq is already held (the first copy is kept)."""
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = {}
        elif seq in held:
            return Pushed.DUPLICATE
        held[seq] = item
        self.held += 1
        if self._on_held is not None:
            self._on_held(self.held)
        return Pushed.HELD

    def pop(self, key: K, seq: int) -> T | None:
        """Remove and return the item held for ``key`` at ``seq`` (None if there is none)."""
        held = self._held.get(key)
        if not held or seq not in held:
            return None
        item = held.pop(seq)
        if not held:
            del self._held[key]
        self.held -= 1
        if self._on_held is not None:
            self._on_held(self.held)
        return item

    def is_holding(self, key: K) -> bool:
        """Whether anything is held for ``key``."""
        return key in self._held

    @property
    def known(self) -> int:
        """Keys whose last applied seq is remembered."""
        return len(self._last)

    def forget_idle(self) -> int:
        """Forget the last applied seq of every key with nothing held (bounding memory for a
        caller that can seed a key again); returns how many were forgotten."""
        idle = [key for key in self._last if key not in self._held]
        for key in idle:
            del self._last[key]
        return len(idle)

    def applied(self) -> dict[K, int]:
        """``key -> last applied seq`` of every key known."""
        return dict(self._last)

    def _drain(self, key: K, held: dict[int, T], seq: int) -> list[T]:
        run: list[T] = []
        while (seq + 1) in held:
            seq += 1
            run.append(held.pop(seq))
            self.held -= 1
        self._last[key] = seq
        if not held:
            del self._held[key]
        return run

    def _changed(self, before: int) -> None:
        if self._on_held is not None and self.held != before:
            self._on_held(self.held)

    # --- what waits ----------------------------------------------------------------------

    @property
    def full(self) -> bool:
        """At least ``limit`` items are held: stop fetching until some are released."""
        return self.held >= self.limit

    def held_keys(self) -> list[K]:
        """Keys with at least one item waiting."""
        return list(self._held)

    def held_items(self) -> Iterator[tuple[K, int, T]]:
        """Every waiting ``(key, seq, item)``, keys in arrival order, seqs ascending."""
        for key, held in self._held.items():
            for seq in sorted(held):
                yield key, seq, held[seq]

    def gaps(self) -> list[Gap[K]]:
        """Every key still waiting, with the seq it waits for."""
        return [
            Gap(key, self._last.get(key, 0) + 1, min(held), len(held))
            for key, held in self._held.items()
        ]

    def take_lowest(self, key: K) -> tuple[int, T] | None:
        """Give up waiting on ``key``: remove and return its lowest held item and move its
        last applied seq there (used at the end of a finite read to flush a real gap)."""
        held = self._held.get(key)
        if not held:
            return None
        seq = min(held)
        item = held.pop(seq)
        if not held:
            del self._held[key]
        self._last[key] = seq
        self.held -= 1
        if self._on_held is not None:
            self._on_held(self.held)
        return seq, item

    def forget(self, keep: Callable[[K], bool]) -> None:
        """Drop every key (applied seq and held items) for which ``keep`` is false (e.g. the
        campaigns of a revoked partition)."""
        before = self.held
        for key in [k for k in self._last if not keep(k)]:
            del self._last[key]
        for key in [k for k in self._held if not keep(k)]:
            self.held -= len(self._held.pop(key))
        self._changed(before)

    def clear(self) -> None:
        """Forget everything."""
        before = self.held
        self._last.clear()
        self._held.clear()
        self.held = 0
        self._changed(before)
