"""What must hold of the campaign log after any run of faults, whatever the workers went through.

* one decision per command (``CampaignLaunched`` / ``PledgeMade`` / ``PledgeRejected`` by
  ``causation_id``), and no decision of a command that was never sent;
* ``seq`` gapless from 1 per (campaign, stream) and the hash chains intact;
* no two writers interleaved: in every partition of every event topic, each campaign's events
  come in increasing ``seq`` (a fenced writer's late events would go backwards or repeat).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from schemas import Envelope, decode, verify_chain
from schemas.topics import Topics
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
