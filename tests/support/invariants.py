"""What must hold of the campaign log after any run of faults, whatever the workers went through.

* one decision per command (``CampaignLaunched`` / ``PledgeMade`` / ``PledgeRejected`` by
  ``causation_id``), and no decision of a command that was never sent;
* ``seq`` gapless from 1 per (campaign, stream) and the hash chains intact;
* no two writers interleaved: in every partition of every event topic, each campaign's events
  come in increasing ``seq`` (a fenced writer's late events would go backwards or repeat).

The read model's side (it equals a replay of the log) is ``pledgeflow audit verify
--against-readmodel`` once :func:`wait_readmodel` saw it catch up.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from schemas import Envelope, decode, verify_chain
from schemas.topics import Topics
from services.pledge.adapters.redis_readmodel import Keys
from tests.support.processor import read_topics

DECISIONS = frozenset({"CampaignLaunched", "PledgeMade", "PledgeRejected"})


async def checked_log(bootstrap: str, topics: Topics, command_ids: Iterable[str]) -> list[Envelope]:
    """Read the committed campaign log, assert every invariant above, return its events."""
    records = await read_topics(bootstrap, topics.for_stream("campaign"), topics.partitions)
    records.sort(key=lambda r: (r[0], r[1], r[2]))
    events: list[Envelope] = []
    last: dict[tuple[str, int, str], int] = {}
    for topic, partition, offset, _key, value, _headers in records:
        event = decode(value)
        events.append(event)
        where = (topic, partition, event.campaign_id)
        before = last.get(where, 0)
        assert event.seq > before, (
            f"{topic}[{partition}]@{offset}: {event.campaign_id} seq {event.seq} after seq "
            f"{before}: two writers interleaved"
        )
        last[where] = event.seq

    streams: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event in events:
        streams[(event.campaign_id, event.stream)].append(event.seq)
    for key, seqs in streams.items():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), f"{key}: seq not gapless/unique"
    events.sort(key=lambda e: (e.campaign_id, e.seq))
    assert verify_chain(events) is None

    decided = Counter(e.causation_id for e in events if e.event_type in DECISIONS)
    expected = set(command_ids)
    assert [c for c, n in decided.items() if n > 1] == [], "a command decided twice"
    missing = expected - set(decided)
    assert not missing, f"{len(missing)} commands never decided, e.g. {sorted(missing)[:3]}"
    assert set(decided) == expected, "decisions of commands never sent"
    return events


async def wait_readmodel(
    redis_url: str, prefix: str, events: list[Envelope], within: float, alive: Any = None
) -> None:
    """Wait until the read model of ``prefix`` applied every campaign's last ``seq`` in
    ``events`` (or more: the log may have grown since)."""
    last: dict[str, int] = {}
    for event in events:
        last[event.campaign_id] = max(last.get(event.campaign_id, 0), event.seq)
    keys = Keys(prefix)
    client = aioredis.Redis.from_url(redis_url)
    deadline = time.monotonic() + within
    try:
        while True:
            pipe = client.pipeline(transaction=False)
            for campaign_id in last:
                pipe.hget(keys.campaign(campaign_id), "seq")
            stored = [int(v or 0) for v in await pipe.execute()]
            behind = {c: (s, last[c]) for c, s in zip(last, stored, strict=True) if s < last[c]}
            if not behind:
                return
            if alive is not None:
                alive()
            sample = dict(list(behind.items())[:5])
            assert time.monotonic() < deadline, f"read model behind (stored, log): {sample}"
            await asyncio.sleep(0.3)
    finally:
        await client.aclose()


async def wipe_namespace(redis_url: str, prefix: str) -> None:
    """Delete every Redis key of ``prefix`` (read model, markers, idempotency keys)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
    finally:
        await client.aclose()
