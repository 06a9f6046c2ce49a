"""The Redis adapter of the delivery queue: one due-time sorted set per lane and partition,
an index of the lanes by their earliest due time, and one hash per notification.

Keys (under the deployment's prefix), per partition *p* of the campaign's key (only the worker
owning *p* delivers, and records on, the campaign's notify stream):

* ``notify:due:<p>:<lane>`` (ZSET id -> due ms): the lane's notifications (a lane is a webhook
  endpoint, ``webhook:<id>``, or the SMTP relay, ``email``);
* ``notify:lanes:<p>`` (ZSET lane -> the earliest due time in that lane): kept exact by every
  script that touches a lane, so the lanes with something due are one range read;
* ``notify:n:<id>`` (HASH: ``data`` = the stored notification, ``lane`` (for e-mail the
  person's ``email|<tenant>/<kind>/<person>``), ``part``, ``attempts``, ``first_ms``,
  ``state`` pending|sent|dead|skipped).

:meth:`RedisDeliveryQueue.take` is the dispatcher's one call per pump: told how many slots each
lane has free, it reads only that many due items of each lane with room (a full lane's backlog
is never read, nor moved), and claims them in the same script. A webhook lane's free slots go
to its oldest due item across the partitions, then to the next ones of that item's partition,
then to the oldest of the others: nothing starves, and what one pump starts in a lane is mostly
one partition's, recorded by one Kafka transaction rather than one each (e-mail: strictly
oldest first, one per person). A claim moves the due
time forward by the lease instead of removing the item, so a worker killed mid-send leaves it
due again when the lease ends (the source of the "at most one repeat per crash" in
docs/notify.md). Finished items keep their hash for ``keep_seconds`` so a redelivered event
does not enqueue them again.

**Fencing** (``fenced=True``, the worker): ``notify:owner:<p>`` holds partition *p*'s owner
token. A worker takes a new token (INCR) when the group assigns it *p* (:meth:`acquire`), and
its claims on *p* are refused once another worker took a newer one: a zombie (a worker frozen
until the group gave its partitions away, then resumed) claims nothing, so it sends nothing new.

**Migration**: the queue used to be one ``notify:due:<p>`` set per partition, every lane mixed.
:meth:`acquire` moves what such a set still holds into the lanes' sets (keeping due times).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis

from services.notify.adapters import queue_scripts as scripts
from services.notify.domain import Notification
from services.notify.ports import Final, Queued, Room
from services.notify.records import decode_notification, encode_notification, lane_of

__all__ = ["RedisDeliveryQueue"]

#: How many due lanes of a partition one pump looks at (those with room are served).
_LANE_SCAN = 1024
_MIGRATE_CHUNK = 1000


def slot_lane(lane: str) -> str:
    """The lane a notification's slots are counted in: ``email|<person>`` -> ``email``."""
    return lane.partition("|")[0]


class RedisDeliveryQueue:
    """See the module docstring; ``prefix`` namespaces the keys (one per test or deployment)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "",
        partition_of: Callable[[str], int] = lambda _campaign: 0,
        keep_seconds: int = 30 * 86400,
        fenced: bool = False,
    ) -> None:
        self._r = client
        self._due_prefix = f"{prefix}notify:due:"
        self._lanes_prefix = f"{prefix}notify:lanes:"
        self._item = f"{prefix}notify:n:"
        self._owner_prefix = f"{prefix}notify:owner:"
        self.partition_of = partition_of
        self._keep = keep_seconds
        self._enqueue = client.register_script(scripts.ENQUEUE)
        self._take = client.register_script(scripts.TAKE)
        self._finish = client.register_script(scripts.FINISH)
        self._retry = client.register_script(scripts.RETRY)
        self._redrive = client.register_script(scripts.REDRIVE)
        self._pending = client.register_script(scripts.PENDING)
        self._migrate = client.register_script(scripts.MIGRATE)
        self._finishing: list[tuple[Queued, Final, asyncio.Future[None]]] = []
        self._finisher: asyncio.Task[None] | None = None
        #: fenced: partition -> this worker's owner token (claims need one); else unfenced
        self._tokens: dict[int, str] | None = {} if fenced else None

    def lane_key(self, partition: int, lane: str) -> str:
        """The Redis key of ``lane``'s due set in ``partition`` (``email|...`` -> ``email``)."""
        return f"{self._due_prefix}{partition}:{slot_lane(lane)}"

    def lanes_key(self, partition: int) -> str:
        """The Redis key of ``partition``'s index of lanes by earliest due time."""
        return f"{self._lanes_prefix}{partition}"

    def due_prefix(self, partition: int) -> str:
        """What a lane's name is appended to for its due set in ``partition`` (for atomic
        writers beside the queue, such as the views' apply script)."""
        return f"{self._due_prefix}{partition}:"

    def sequence_key(self, partition: int) -> str:
        """The last due time given in ``partition`` (enqueues keep them strictly increasing)."""
        return f"{self._due_prefix}{partition}:last"

    @property
    def item_prefix(self) -> str:
        """The Redis key prefix of the notifications' hashes."""
        return self._item

    async def enqueue(self, notification: Notification, now_ms: int) -> bool:
        nid = notification.notification_id
        part = self.partition_of(notification.campaign_id)
        lane = lane_of(notification)
        added = await self._enqueue(
            keys=[self.lane_key(part, lane), self._item + nid, self.lanes_key(part)],
            args=[encode_notification(notification), lane, now_ms, nid, part, slot_lane(lane)],
        )
        return bool(added)

    async def take(
        self, now_ms: int, lease_ms: int, partitions: Iterable[int], room: Room
    ) -> list[Queued]:
        keys: list[str] = []
        parts: list[str | int] = []
        for part in partitions:
            token = self._token(part)
            if token is not None:
                keys += [self.lanes_key(part), self._owner_prefix + str(part)]
                parts += [part, token]
        if not keys:
            return []
        args: list[str | int] = [
            now_ms,
            lease_ms,
            room.default,
            self._due_prefix,
            self._item,
            _LANE_SCAN,
            len(room.lanes),
        ]
        for lane, free in room.lanes.items():
            args += [lane, free]
        args.append(len(room.busy_persons))
        args += room.busy_persons
        args += parts
        flat = await self._take(keys=keys, args=args)
        return [
            Queued(
                decode_notification(flat[i + 2]),
                _text(flat[i + 3]),
                int(flat[i + 1]),
                int(flat[i + 4]),
                int(flat[i + 5]) if flat[i + 5] else None,
            )
            for i in range(0, len(flat), 6)
        ]

    async def acquire(self, partitions: Iterable[int]) -> None:
        """Take a new owner token for each partition (the group assigned them to this worker):
        from now on an older owner's claims on them are refused. Then move anything left in
        the old single due set of each into its lanes' sets (see the module docstring)."""
        for part in partitions:
            if self._tokens is not None:
                token = await self._r.incr(self._owner_prefix + str(part))
                self._tokens[part] = str(token)
            old = f"{self._due_prefix}{part}"
            while await self._migrate(
                keys=[old, self.lanes_key(part)],
                args=[self.due_prefix(part), self._item, _MIGRATE_CHUNK],
            ):
                pass

    def release(self, partitions: Iterable[int]) -> None:
        """Forget the tokens of partitions the group took away (no more claims on them)."""
        if self._tokens is not None:
            for part in partitions:
                self._tokens.pop(part, None)

    async def owns(self, partition: int) -> bool:
        """Whether this worker's token on ``partition`` is still the newest (always, unfenced)."""
        if self._tokens is None:
            return True
        mine = self._tokens.get(partition)
        current = await self._r.get(self._owner_prefix + str(partition))
        return mine is not None and current is not None and _text(current) == mine

    def _token(self, partition: int) -> str | None:
        """The token claims on ``partition`` carry ('' unfenced); None: not ours, no claim."""
        if self._tokens is None:
            return ""
        return self._tokens.get(partition)

    def _item_keys(self, item: Queued) -> list[str]:
        nid = item.notification.notification_id
        return [
            self.lane_key(item.partition, item.lane),
            self._item + nid,
            self.lanes_key(item.partition),
        ]

    async def retry_at(self, item: Queued, due_ms: int, attempts: int, now_ms: int) -> None:
        nid = item.notification.notification_id
        await self._retry(
            keys=self._item_keys(item),
            args=[nid, due_ms, attempts, now_ms, slot_lane(item.lane)],
        )

    async def finish(self, item: Queued, state: Final) -> None:
        """Group commit: finishes that arrive while one script call is under way go together
        in the next (deliveries recorded by one Kafka transaction end together)."""
        done = asyncio.get_running_loop().create_future()
        self._finishing.append((item, state, done))
        if self._finisher is None:
            self._finisher = asyncio.create_task(self._flush_finishes())
        await done

    async def _flush_finishes(self) -> None:
        batch: list[tuple[Queued, Final, asyncio.Future[None]]] = []
        try:
            while self._finishing:
                batch, self._finishing = self._finishing, []
                args: list[str | int] = [
                    self._due_prefix,
                    self._lanes_prefix,
                    self._item,
                    self._keep,
                ]
                for item, state, _ in batch:
                    args += [
                        item.notification.notification_id,
                        item.partition,
                        slot_lane(item.lane),
                        state,
                    ]
                try:
                    await self._finish(args=args)
                except Exception as exc:
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
                batch = []
        finally:
            # cancelled (the worker stops): no caller may wait for good
            _settle(batch + self._finishing, ConnectionError("notify queue: finish cancelled"))
            self._finishing = []
            self._finisher = None

    async def redrive(self, notification: Notification, now_ms: int) -> None:
        nid = notification.notification_id
        part = self.partition_of(notification.campaign_id)
        lane = lane_of(notification)
        await self._redrive(
            keys=[self.lane_key(part, lane), self._item + nid, self.lanes_key(part)],
            args=[nid, encode_notification(notification), lane, part, now_ms, slot_lane(lane)],
        )

    async def pending(self, partitions: Iterable[int]) -> int:
        parts = list(partitions)
        if not parts:
            return 0
        return int(
            await self._pending(
                keys=[self.lanes_key(p) for p in parts], args=[self.due_prefix(p) for p in parts]
            )
        )

    async def state(self, notification_id: str) -> str | None:
        """The item's state (pending, sent, dead, skipped) or None if unknown."""
        value = await self._r.hget(self._item + notification_id, "state")
        return _text(value) if value is not None else None


def _settle(
    batch: list[tuple[Queued, Final, asyncio.Future[None]]], error: Exception | None
) -> None:
    for *_, done in batch:
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
