"""A circuit breaker per delivery lane, so a dead endpoint stops costing attempts and slots.

Closed: attempts flow. After ``threshold`` consecutive failures it opens for ``cooldown``
seconds (nothing is attempted; the lane's notifications wait without spending attempts).
Then half-open: one probe; a success closes it, a failure opens it again. Pure: the caller
passes the time in.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CircuitBreaker"]


@dataclass(slots=True)
class _Lane:
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False


class CircuitBreaker:
    """Breaker state of every lane (in memory: a restarted worker starts closed)."""

    def __init__(self, *, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._lanes: dict[str, _Lane] = {}

    def allows(self, lane: str, now: float) -> bool:
        """Whether an attempt may start on ``lane`` now (takes the half-open probe slot)."""
        state = self._lanes.get(lane)
        if state is None or state.failures < self.threshold:
            return True
        if now < state.open_until or state.probing:
            return False
        state.probing = True
        return True

    def reopens_at(self, lane: str) -> float:
        """When an open lane may be probed again (0 if not open)."""
        state = self._lanes.get(lane)
        return state.open_until if state and state.failures >= self.threshold else 0.0

    def cancel_probe(self, lane: str) -> None:
        """Give back a probe slot :meth:`allows` granted but that was not used."""
        state = self._lanes.get(lane)
        if state is not None:
            state.probing = False

    def success(self, lane: str) -> None:
        self._lanes.pop(lane, None)

    def failure(self, lane: str, now: float) -> None:
        state = self._lanes.setdefault(lane, _Lane())
        state.failures += 1
        state.probing = False
        if state.failures >= self.threshold:
            state.open_until = now + self.cooldown

    def limits(self, now: float) -> dict[str, int]:
        """The lanes whose circuit is not closed, with how many attempts may start there now:
        0 while open or while the half-open probe is out, 1 when the probe may start."""
        return {
            lane: 0 if (now < s.open_until or s.probing) else 1
            for lane, s in self._lanes.items()
            if s.failures >= self.threshold
        }

    def open_count(self, now: float) -> int:
        """Lanes open right now (a metric)."""
        return sum(
            1 for s in self._lanes.values() if s.failures >= self.threshold and now < s.open_until
        )
